//! Background inference for the browser: one thread owns the model, loads (or fetches) its
//! weights, and answers analysis requests by message; the newest request always wins.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime};

use crate::cli::ModelArgs;
use crate::model::classifier::{default_device, device_name};
use crate::model::fetch::{self, Progress, Source};
use crate::model::preprocess::load_rgb;
use crate::model::{Analysis, Classifier};

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

/// A single-slot mailbox: a new job replaces the one still waiting, so a burst of requests
/// (scrolling through a folder) costs one job, not one per request.
#[derive(Debug)]
pub struct Mailbox<T> {
    state: Mutex<Slot<T>>,
    ready: Condvar,
}

#[derive(Debug)]
struct Slot<T> {
    job: Option<T>,
    closed: bool,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(Slot {
                job: None,
                closed: false,
            }),
            ready: Condvar::new(),
        }
    }
}

impl<T> Mailbox<T> {
    /// Posts `job`, returning the job it replaced (which will now never run).
    pub fn put(&self, job: T) -> Option<T> {
        let mut slot = self.lock();
        let old = slot.job.replace(job);
        self.ready.notify_one();
        old
    }

    /// Posts `job` unless the job waiting is one `keep` wants kept; true if posted.
    pub fn offer(&self, job: T, keep: impl FnOnce(&T) -> bool) -> bool {
        let mut slot = self.lock();
        if slot.job.as_ref().is_some_and(keep) {
            return false;
        }
        slot.job = Some(job);
        self.ready.notify_one();
        true
    }

    /// Waits for a job; `None` once the mailbox is closed.
    pub fn take(&self) -> Option<T> {
        let mut slot = self.lock();
        loop {
            if slot.closed {
                return None;
            }
            if let Some(job) = slot.job.take() {
                return Some(job);
            }
            slot = self.ready.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// True when a job is waiting (so work in progress may stop early).
    pub fn has_job(&self) -> bool {
        let slot = self.lock();
        slot.job.is_some() || slot.closed
    }

    /// Wakes the consumer for good.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        // A panic elsewhere must not make the mailbox unusable for the rest.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The UI's handle on the inference thread. Dropping it stops the thread after its
/// current job.
pub struct InferenceWorker {
    mailbox: Arc<Mailbox<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl InferenceWorker {
    /// Starts the thread: it loads (or, for the default path, fetches) the weights, then
    /// serves requests. Every event goes to `notify`, which returns false once nobody listens.
    pub fn spawn(
        model: ModelArgs,
        notify: impl Fn(WorkerEvent) -> bool + Send + 'static,
    ) -> std::io::Result<Self> {
        let mailbox = Arc::new(Mailbox::default());
        let inbox = Arc::clone(&mailbox);
        let thread = std::thread::Builder::new()
            .name("camview-inference".into())
            .spawn(move || serve(&model, &inbox, &notify))?;
        Ok(Self {
            mailbox,
            thread: Some(thread),
        })
    }

    /// Posts a request; it replaces any request still waiting.
    pub fn send(&self, request: Request) {
        self.mailbox.put(request);
    }
}

impl Drop for InferenceWorker {
    fn drop(&mut self) {
        self.mailbox.close();
        // A forward pass cannot be interrupted; do not make quitting wait for it.
        drop(self.thread.take());
    }
}

fn serve(model: &ModelArgs, inbox: &Mailbox<Request>, notify: &dyn Fn(WorkerEvent) -> bool) {
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

/// Names of the threads whose panics are caught and reported as an error for the one job
/// (the UI's panic hook must then leave the terminal alone).
pub const CONTAINED_THREADS: [&str; 4] = [
    "camview-inference",
    "camview-render",
    "camview-list",
    "camview-save",
];

/// Runs `job`, turning a panic into an error message: one image that trips a bug must not
/// take the browser down.
pub fn contain_panic<T>(job: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or_else(|payload| {
        let why = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        Err(format!("internal error (a bug in camview): {why}"))
    })
}

fn analyze(classifier: &Classifier, model: &ModelArgs, path: &Path) -> Result<Analysis, String> {
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

/// Loads the classifier, fetching default weights first when they are missing. Reports
/// every step; `None` means the model is unavailable (already reported) or nobody listens.
fn load_model(model: &ModelArgs, notify: &dyn Fn(WorkerEvent) -> bool) -> Option<Classifier> {
    let unavailable = |why: String| {
        notify(WorkerEvent::Model(ModelStatus::Unavailable(why)));
        None
    };
    if !model.weights.exists() {
        if !model.weights_are_default() {
            return unavailable(format!(
                "no weights file at {} (get one with `camview weights fetch -o {0}`)",
                model.weights.display()
            ));
        }
        let progress = ForwardProgress {
            notify,
            phase: Cell::new(String::new()),
            total: Cell::new(None),
            last_percent: Cell::new(None),
        };
        if let Err(e) = fetch::fetch(&model.weights, &Source::DEFAULT_ORDER, &progress) {
            return unavailable(format!(
                "could not download weights: {e:#} (retry with `camview weights fetch`)"
            ));
        }
    }
    if !notify(WorkerEvent::Model(ModelStatus::Loading)) {
        return None;
    }
    let started = Instant::now();
    match Classifier::load(&model.weights, model.arch, default_device()) {
        Ok(classifier) => {
            log::debug(&format!("model loaded in {:?}", started.elapsed()));
            let device = device_name(classifier.device()).to_string();
            notify(WorkerEvent::Model(ModelStatus::Ready { device })).then_some(classifier)
        }
        Err(e) => unavailable(format!(
            "cannot load {}: {e:#} (get genuine weights with `camview weights fetch`)",
            model.weights.display()
        )),
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

/// Debug timings, written to the file named by `CAMVIEW_LOG` (nothing when unset).
pub mod log {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    use std::time::Instant;

    struct Log {
        start: Instant,
        file: Option<Mutex<std::fs::File>>,
    }

    fn log() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| Log {
            start: Instant::now(),
            file: std::env::var_os("CAMVIEW_LOG")
                .and_then(|p| std::fs::File::create(p).ok())
                .map(Mutex::new),
        })
    }

    /// Starts the clock (call first thing, so times are relative to launch).
    pub fn init() {
        let _ = log();
    }

    /// True when logging is on (to skip building messages otherwise).
    pub fn enabled() -> bool {
        log().file.is_some()
    }

    /// Appends `message` with the time since launch.
    pub fn debug(message: &str) {
        let log = log();
        if let Some(file) = &log.file {
            let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(
                file,
                "{:10.3} ms  {message}",
                log.start.elapsed().as_secs_f64() * 1e3
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_job_wins() {
        let mailbox = Mailbox::default();
        assert_eq!(mailbox.put(1), None);
        assert_eq!(mailbox.put(2), Some(1));
        assert_eq!(mailbox.put(3), Some(2));
        assert!(mailbox.has_job());
        assert_eq!(mailbox.take(), Some(3));
        assert!(!mailbox.has_job());
        // An offer gives way to a job that must not be lost.
        mailbox.put(4);
        assert!(!mailbox.offer(5, |&waiting| waiting == 4));
        assert!(mailbox.offer(6, |&waiting| waiting == 5));
        assert_eq!(mailbox.take(), Some(6));
        mailbox.close();
        assert_eq!(mailbox.take(), None);
    }

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

    #[test]
    fn a_panic_in_a_job_becomes_its_error() {
        let r: Result<(), String> = contain_panic(|| panic!("boom"));
        assert_eq!(r.unwrap_err(), "internal error (a bug in camview): boom");
        assert_eq!(contain_panic(|| Ok::<_, String>(3)), Ok(3));
    }

    #[test]
    fn take_waits_for_a_job_from_another_thread() {
        let mailbox = Arc::new(Mailbox::default());
        let sender = Arc::clone(&mailbox);
        let t = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            sender.put("job");
        });
        assert_eq!(mailbox.take(), Some("job"));
        t.join().unwrap();
    }
}
