//! Data: the IDX reader, the datasets (MNIST, Fashion-MNIST), the readers of image
//! datasets from disk (CIFAR-10, GTSRB, image folders), the trigger and the attacks.
pub mod attack;
pub mod checksum;
pub mod cifar;
pub mod dataset;
pub mod folder;
pub mod gtsrb;
pub mod idx;
pub mod image_file;
pub mod images;
pub mod loaded;
pub mod mnist;
pub mod pickle;
pub mod trigger;
