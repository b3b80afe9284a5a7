//! The engine: ResNet-50 in candle, its weights, image preprocessing, ImageNet labels and
//! Class Activation Maps. Nothing here knows about the terminal UI.

pub mod cam;
pub mod classifier;
pub mod fetch;
pub mod kernels;
pub mod labels;
pub mod preprocess;
pub mod resnet;
#[cfg(test)]
mod test_data;
pub mod tfjs;
pub mod weights;

pub use classifier::{Analysis, Classifier, Prediction};
pub use preprocess::ResizeMode;
pub use weights::Arch;
