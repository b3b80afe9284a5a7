//! The engine: ResNet-50 in candle, its weights, image preprocessing, ImageNet labels and
//! Class Activation Maps. Nothing here knows about the terminal UI.

pub(crate) mod cam;
pub mod classifier;
pub(crate) mod fastconv;
pub mod fetch;
pub(crate) mod labels;
pub(crate) mod matrix;
pub(crate) mod nhwc;
pub mod packed_gemm;
pub mod preprocess;
pub mod resnet;
mod scratch;
#[cfg(test)]
mod test_data;
pub mod tfjs;
pub mod weights;
pub(crate) mod winograd;

pub use classifier::{Analysis, Classifier, Prediction};
pub use preprocess::ResizeMode;
pub use weights::Arch;
