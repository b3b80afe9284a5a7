//! Getting a model ready, one way for the commands and the browser: resolve the weights file,
//! fetch genuine weights when the default file is missing (first run), then load it. Callers
//! choose how progress shows: a bar on stderr, or the browser's predictions pane.

use std::path::PathBuf;

use crate::model::classes::{Classes, ClassesError};
use crate::model::classifier::{DeviceChoice, DeviceError, LoadError, Precision};
use crate::model::fetch::{self, FetchError, Progress, Source};
use crate::model::{Arch, Classifier, ResizeMode, chain};

/// Which model, from which file, fed how: what the command line decided.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub weights: PathBuf,
    /// True for the default path, which may be fetched when missing; a file the user named
    /// must exist.
    pub fetch_if_missing: bool,
    /// The stride layout of a file that does not record it.
    pub arch: Option<Arch>,
    /// A class file naming the model's classes (`--classes`), over the folder's names.
    pub classes: Option<PathBuf>,
    /// The input normalisation's means and standard deviations, over the model's own.
    pub mean: Option<[f64; 3]>,
    pub std: Option<[f64; 3]>,
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

/// Why no model could be had; each message says what to do. What to do comes after the
/// cause, so `Fetch` and `Load` carry their cause in their message and give no `source()`
/// (which `{:#}` would print a second time, after the hint).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("weights file {path} does not exist (get one with `camview weights fetch -o {path}`)", path = .0.display())]
    Missing(PathBuf),
    #[error("{} (retry with `camview weights fetch`)", chain(.0))]
    // Boxed, as both are large and rare: `provision`'s `Result` stays small.
    Fetch(Box<FetchError>),
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The cause names the file.
    #[error("{} (get genuine weights with `camview weights fetch`)", chain(.0))]
    Load(Box<LoadError>),
    /// A class file that cannot name the model's classes; the error names the file.
    #[error(transparent)]
    Classes(#[from] ClassesError),
    #[error("--std {0:?}: a standard deviation must be above 0")]
    BadStd([f64; 3]),
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
            .map_err(|e| ProvisionError::Fetch(Box::new(e)))?;
        on_step(Step::Fetched(source));
    }
    on_step(Step::Loading);
    let device = config.device.open()?;
    let (format, note) = config.precision.format(&device);
    if let Some(note) = note {
        on_step(Step::Precision(note));
    }
    let mut classifier = Classifier::load_as(&config.weights, config.arch, device, format)
        .map_err(|e| ProvisionError::Load(Box::new(e)))?;
    if let Some(path) = &config.classes {
        let classes = Classes::from_file(path, classifier.model().classes())?;
        classifier.set_classes(classes)?;
    }
    if config.mean.is_some() || config.std.is_some() {
        let mut pre = classifier.description().preprocessing.clone();
        if let Some(std) = config.std {
            if std.iter().any(|&s| s <= 0.0) {
                return Err(ProvisionError::BadStd(std));
            }
            pre.std = std;
        }
        pre.mean = config.mean.unwrap_or(pre.mean);
        classifier.set_preprocessing(pre);
    }
    Ok(classifier)
}
