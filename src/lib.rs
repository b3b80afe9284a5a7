//! camview: a terminal app that shows what an ImageNet ResNet-50 looks at.
//!
//! - [`model`]: the engine — ResNet-50 in candle with layer-4 features and logits, weight
//!   loading / import / fetch, preprocessing, labels, Class Activation Maps. Knows nothing of
//!   the UI.
//! - [`cli`]: command-line arguments and the non-interactive commands (`classify`, `cam`,
//!   `bench`, `weights`).
//! - [`overlay`]: turning an [`model::Analysis`] into pictures (heat map over the photo, box).

pub mod analysis;
pub mod background;
pub mod box_v2;
pub mod cli;
pub mod dataset;
pub mod faithfulness_run;
pub(crate) mod jobs;
pub(crate) mod log;
pub mod model;
pub mod overlay;
pub mod pipeline;
pub mod provision;
pub mod results;
pub mod scoring;
pub mod store;
pub(crate) mod term;
pub(crate) mod text;
pub mod ui;
pub(crate) mod walk;
