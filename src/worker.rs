//! Background inference for the browser: one thread owns the model, loads (or fetches) its
//! weights, and answers analysis requests by message; the newest request always wins.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::analysis;
use crate::jobs::{Mailbox, Worker, contain_panic};
use crate::log;
use crate::model::classifier::device_name;
use crate::model::fetch::Progress;
use crate::model::{Analysis, Classifier, ResizeMode};
use crate::provision::{ModelConfig, Step, provision};
use crate::store::{FileId, Record, Store, open_or_recover};

/// Number of classes (and CAMs) the browser shows.
pub const TOP_K: usize = analysis::TOP_K;

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
    /// Something the user should know that is no error of the image shown (the result store
    /// was set aside, or cannot be written).
    Note(String),
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
/// opens the result store at `store` (when given), then serves requests, from the store
/// where it can. Every event goes to `notify`, which returns false once nobody listens.
pub fn spawn(
    model: ModelConfig,
    store: Option<PathBuf>,
    notify: impl Fn(WorkerEvent) -> bool + Send + 'static,
) -> std::io::Result<InferenceWorker> {
    Worker::spawn("camview-inference", move |inbox| {
        serve(&model, store.as_deref(), inbox, &notify);
    })
}

fn serve(
    model: &ModelConfig,
    store: Option<&Path>,
    inbox: &Mailbox<Request>,
    notify: &dyn Fn(WorkerEvent) -> bool,
) {
    let Some(classifier) = load_model(model, notify) else {
        return;
    };
    let results = Results::open(store, model, notify);
    while let Some(request) = inbox.take() {
        let keys = match request {
            Request::Analyze(key) => vec![key],
            Request::Prefetch(keys) => keys,
        };
        for key in keys {
            let result =
                contain_panic(|| analyze(&classifier, model, &results, &key.path)).map(Arc::new);
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

/// The result store as the worker uses it: with the weights' identity, once known.
struct Results {
    store: Option<(Store, String)>,
}

impl Results {
    fn open(
        path: Option<&Path>,
        model: &ModelConfig,
        notify: &dyn Fn(WorkerEvent) -> bool,
    ) -> Self {
        let Some(path) = path else {
            return Self { store: None };
        };
        let (store, note) = open_or_recover(path);
        let mut notes: Vec<String> = note.into_iter().collect();
        let store = store.and_then(|store| match store.weights_id(&model.weights) {
            Ok(id) => Some((store, id)),
            Err(e) => {
                notes.push(format!("results are not kept: {e:#}"));
                None
            }
        });
        for note in notes {
            notify(WorkerEvent::Note(note));
        }
        Self { store }
    }

    fn get(&self, file: &FileId, resize: ResizeMode) -> Option<Analysis> {
        let (store, weights) = self.store.as_ref()?;
        let record = store.get(file, weights, resize).ok()??;
        Some(record.analysis)
    }

    fn put(&self, file: &FileId, resize: ResizeMode, record: &Record) {
        if let Some((store, weights)) = &self.store
            && let Err(e) = store.put(file, weights, resize, record)
        {
            log::debug(&format!("cannot store the result of {}: {e:#}", file.path));
        }
    }
}

fn analyze(
    classifier: &Classifier,
    model: &ModelConfig,
    results: &Results,
    path: &Path,
) -> Result<Analysis, String> {
    let started = Instant::now();
    let file = FileId::of(path).ok();
    if let Some(found) = file.as_ref().and_then(|f| results.get(f, model.resize)) {
        log::debug(&format!("analysis of {} from the store", path.display()));
        return Ok(found);
    }
    let (img, prepared) =
        analysis::prepare(path, model.resize, classifier.device()).map_err(|e| format!("{e:#}"))?;
    let record = analysis::analyse(classifier, img.dimensions(), &prepared, None)
        .map_err(|e| format!("{e:#}"))?;
    if let Some(file) = &file {
        results.put(file, model.resize, &record);
    }
    log::debug(&format!(
        "analysis of {} in {:?} (forward {:?})",
        path.display(),
        started.elapsed(),
        record.analysis.elapsed
    ));
    Ok(record.analysis)
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
