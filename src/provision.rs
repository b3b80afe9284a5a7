//! Getting a model ready, one way for the commands and the browser: resolve the weights file,
//! fetch genuine weights when the default file is missing (first run), then load it. Callers
//! choose how progress shows: a bar on stderr, or the browser's predictions pane.

use std::path::PathBuf;

use crate::model::classifier::{DeviceChoice, Precision};
use crate::model::fetch::{self, Progress, Source};
use crate::model::{Arch, Classifier, ResizeMode};

/// Which model, from which file, fed how: what the command line decided.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub weights: PathBuf,
    /// True for the default path, which may be fetched when missing; a file the user named
    /// must exist.
    pub fetch_if_missing: bool,
    /// The stride layout of a file that does not record it.
    pub arch: Option<Arch>,
    pub resize: ResizeMode,
    /// Where the forward pass runs.
    pub device: DeviceChoice,
    /// In what arithmetic, on the CPU.
    pub precision: Precision,
}

/// A step of [`provision`] worth telling the user about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The default file is missing: genuine weights are being fetched.
    Fetching,
    /// They were written, from this source.
    Fetched(Source),
    /// The file is being read.
    Loading,
    /// The precision asked for cannot run here; this says what runs instead.
    Precision(String),
}

/// Why no model could be had; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("weights file {path} does not exist (get one with `camview weights fetch -o {path}`)", path = .0.display())]
    Missing(PathBuf),
    #[error("could not download weights: {0:#} (retry with `camview weights fetch`)")]
    Fetch(anyhow::Error),
    #[error("{0:#}")]
    Device(anyhow::Error),
    #[error("cannot load {}: {source:#} (get genuine weights with `camview weights fetch`)", .path.display())]
    Load {
        path: PathBuf,
        source: anyhow::Error,
    },
}

/// Resolves, fetches if need be, and loads the model of `config`.
pub fn provision(
    config: &ModelConfig,
    progress: &dyn Progress,
    on_step: &mut dyn FnMut(Step),
) -> Result<Classifier, ProvisionError> {
    if !config.weights.exists() {
        if !config.fetch_if_missing {
            return Err(ProvisionError::Missing(config.weights.clone()));
        }
        on_step(Step::Fetching);
        let source = fetch::fetch(&config.weights, &Source::DEFAULT_ORDER, progress)
            .map_err(ProvisionError::Fetch)?;
        on_step(Step::Fetched(source));
    }
    on_step(Step::Loading);
    let device = config.device.open().map_err(ProvisionError::Device)?;
    let (format, note) = config.precision.format(&device);
    if let Some(note) = note {
        on_step(Step::Precision(note));
    }
    Classifier::load_as(&config.weights, config.arch, device, format).map_err(|source| {
        ProvisionError::Load {
            path: config.weights.clone(),
            source,
        }
    })
}
