//! Background inference for the browser: one thread owns the model, loads (or fetches) its
//! weights, and answers analysis requests by message; the newest request always wins.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::jobs::{Mailbox, Worker, contain_panic};
use crate::log;
use crate::model::classifier::device_name;
use crate::model::fetch::Progress;
use crate::model::preprocess::load_rgb;
use crate::model::{Analysis, Classifier};
use crate::provision::{ModelConfig, Step, provision};

/// Number of classes (and CAMs) the browser asks for.
pub const TOP_K: usize = 5;

/// Identifies one version of one image file: a result is reused only while the file's
/// modification time is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub path: PathBuf,
    pub modified: Option<SystemTime>,
}

impl ImageKey {
    /// The key of `path` as it is on disk now.
    pub fn of(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            modified: std::fs::metadata(path).and_then(|m| m.modified()).ok(),
        }
    }
}

/// Where the model stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelStatus {
    /// Reading the weights file.
    Loading,
    /// Downloading weights (first run); `done` of `total` bytes in the current phase.
    Fetching {
        phase: String,
        done: u64,
        total: Option<u64>,
    },
    /// Ready to classify, on `device`.
    Ready { device: String },
    /// No model: browsing works, predictions do not. The message says why and what to do.
    Unavailable(String),
}

/// What the worker reports.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    Model(ModelStatus),
    /// The result for one image; errors are already formatted with their cause chain.
    Analysis {
        key: ImageKey,
        result: Result<Arc<Analysis>, String>,
    },
}

/// What the worker is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Analyse the image the user is looking at.
    Analyze(ImageKey),
    /// Analyse these (the neighbours) while nothing else is asked.
    Prefetch(Vec<ImageKey>),
}

/// The UI's handle on the inference thread. Dropping it stops the thread after its
/// current job.
pub type InferenceWorker = Worker<Request>;

/// Starts the inference thread: it loads (or, for the default path, fetches) the weights,
/// then serves requests. Every event goes to `notify`, which returns false once nobody
/// listens.
pub fn spawn(
    model: ModelConfig,
    notify: impl Fn(WorkerEvent) -> bool + Send + 'static,
) -> std::io::Result<InferenceWorker> {
    Worker::spawn("camview-inference", move |inbox| {
        serve(&model, inbox, &notify)
    })
}

fn serve(model: &ModelConfig, inbox: &Mailbox<Request>, notify: &dyn Fn(WorkerEvent) -> bool) {
    let Some(classifier) = load_model(model, notify) else {
        return;
    };
    while let Some(request) = inbox.take() {
        let keys = match request {
            Request::Analyze(key) => vec![key],
            Request::Prefetch(keys) => keys,
        };
        for key in keys {
            let result = contain_panic(|| analyze(&classifier, model, &key.path)).map(Arc::new);
            if !notify(WorkerEvent::Analysis { key, result }) {
                return;
            }
            // Newer work waits: drop the rest of a prefetch list.
            if inbox.has_job() {
                break;
            }
        }
    }
}

fn analyze(classifier: &Classifier, model: &ModelConfig, path: &Path) -> Result<Analysis, String> {
    let started = Instant::now();
    let img = load_rgb(path).map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let prepared = classifier
        .prepare(&img, model.resize)
        .map_err(|e| format!("{e:#}"))?;
    let analysis = classifier
        .analyze(&prepared, TOP_K, None)
        .map_err(|e| format!("{e:#}"))?;
    log::debug(&format!(
        "analysis of {} in {:?} (forward {:?})",
        path.display(),
        started.elapsed(),
        analysis.elapsed
    ));
    Ok(analysis)
}

/// Loads the classifier through [`provision`], reporting every step; `None` means the model
/// is unavailable (already reported) or nobody listens.
fn load_model(model: &ModelConfig, notify: &dyn Fn(WorkerEvent) -> bool) -> Option<Classifier> {
    let progress = ForwardProgress {
        notify,
        phase: Cell::new(String::new()),
        total: Cell::new(None),
        last_percent: Cell::new(None),
    };
    let started = Instant::now();
    let loaded = provision(model, &progress, &mut |step| {
        if step == Step::Loading {
            notify(WorkerEvent::Model(ModelStatus::Loading));
        }
    });
    match loaded {
        Ok(classifier) => {
            log::debug(&format!("model ready in {:?}", started.elapsed()));
            let device = device_name(classifier.device()).to_string();
            notify(WorkerEvent::Model(ModelStatus::Ready { device })).then_some(classifier)
        }
        Err(e) => {
            notify(WorkerEvent::Model(ModelStatus::Unavailable(e.to_string())));
            None
        }
    }
}

/// Turns fetch progress into [`ModelStatus::Fetching`] messages, at most one per percent.
struct ForwardProgress<'a> {
    notify: &'a dyn Fn(WorkerEvent) -> bool,
    phase: Cell<String>,
    total: Cell<Option<u64>>,
    last_percent: Cell<Option<u64>>,
}

impl ForwardProgress<'_> {
    fn send(&self, done: u64) {
        let phase = self.phase.take();
        (self.notify)(WorkerEvent::Model(ModelStatus::Fetching {
            phase: phase.clone(),
            done,
            total: self.total.get(),
        }));
        self.phase.set(phase);
    }
}

impl Progress for ForwardProgress<'_> {
    fn phase(&self, message: &str, total: Option<u64>) {
        self.phase.set(message.to_string());
        self.total.set(total);
        self.last_percent.set(None);
        self.send(0);
    }

    fn advance(&self, done: u64) {
        let percent = self.total.get().map(|t| done * 100 / t.max(1));
        if percent.is_none() || percent != self.last_percent.get() {
            self.last_percent.set(percent);
            self.send(done);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_progress_is_sent_at_most_once_per_percent() {
        let sent = std::cell::RefCell::new(Vec::new());
        let notify = |e: WorkerEvent| {
            sent.borrow_mut().push(e);
            true
        };
        let progress = ForwardProgress {
            notify: &notify,
            phase: Cell::new(String::new()),
            total: Cell::new(None),
            last_percent: Cell::new(None),
        };
        progress.phase("downloading", Some(100_000));
        for done in (0..=100_000).step_by(100) {
            progress.advance(done);
        }
        let sent = sent.into_inner();
        // The phase itself, then one message per percent (0 % included).
        assert_eq!(sent.len(), 1 + 101);
        assert!(matches!(
            sent.last(),
            Some(WorkerEvent::Model(ModelStatus::Fetching { phase, done: 100_000, total: Some(100_000) }))
                if phase == "downloading"
        ));
    }
}
