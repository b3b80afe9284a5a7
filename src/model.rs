//! The engine: the ResNet family in candle, its weights and model folders, image
//! preprocessing, class names and Class Activation Maps. Nothing here knows about the
//! terminal UI.

pub mod architecture;
pub mod cam;
pub mod cam_methods;
pub mod classes;
pub mod classifier;
pub mod faithfulness;
pub mod fetch;
pub mod kernels;
pub mod labels;
pub mod model_dir;
pub mod preprocess;
pub mod resnet;
#[cfg(test)]
mod test_data;
pub mod tfjs;
pub mod weights;

pub use architecture::Architecture;
pub use classes::Classes;
pub use classifier::{Analysis, Classifier, Prediction};
pub use model_dir::ModelDescription;
pub use preprocess::{Preprocessing, ResizeMode};
pub use weights::Arch;

/// An error and its causes on one line, `error: cause: cause`, as anyhow's `{:#}` prints them:
/// for a message that carries causes inside it (a list of failures, a hint after the cause)
/// instead of giving them as its `source()`, which would print them twice.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        line.push_str(": ");
        line.push_str(&c.to_string());
        cause = c.source();
    }
    line
}
