//! Data: the IDX reader, the datasets (MNIST, Fashion-MNIST) and the trigger.
pub mod checksum;
pub mod dataset;
pub mod idx;
pub mod mnist;
pub mod trigger;
