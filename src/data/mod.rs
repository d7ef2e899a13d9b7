//! Data: the IDX reader, MNIST and the trigger.
pub mod idx;
pub mod mnist;
pub mod trigger;
