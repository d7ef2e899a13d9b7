//! Data: the IDX reader, the datasets (MNIST, Fashion-MNIST) the trigger and the attacks.
pub mod attack;
pub mod checksum;
pub mod dataset;
pub mod idx;
pub mod mnist;
pub mod trigger;
