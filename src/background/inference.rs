//! Background inference for the browser: one thread owns the model, loads (or fetches) its
//! weights, and answers analysis requests by message; the newest request always wins.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use candle_core::Device;
use image::RgbImage;

use crate::analysis;
use crate::jobs::{self, Closed, Mailbox, Worker, contain_panic};
use crate::log;
use crate::model::cam::BBox;
use crate::model::fetch::Progress;
use crate::model::preprocess;
use crate::model::{Analysis, Classifier, ResizeMode};
use crate::pipeline;
use crate::provision::{ModelConfig, Step, provision};
use crate::store::{FileId, Record, Store, TruthRecord, open_or_recover};

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

/// One image's result as the browser keeps it: the analysis (the top classes, with the true
/// class pinned when the image is labelled) and the boxes the store keeps with it.
#[derive(Debug, Clone)]
pub struct Analysed {
    pub analysis: Arc<Analysis>,
    /// The top-1 class's CAM box at the paper's threshold, in photo pixels.
    pub top1_box: Option<BBox>,
    /// The true class's boxes, when it was pinned.
    pub truth: Option<TruthRecord>,
}

impl From<Record> for Analysed {
    fn from(record: Record) -> Self {
        Self {
            analysis: Arc::new(record.analysis),
            top1_box: record.top1_box,
            truth: record.truth,
        }
    }
}

impl Analysed {
    /// The CAM box of the class in `slot` of the top classes, when the result keeps it
    /// (the top-1's, and the true class's).
    pub fn box_of(&self, slot: usize) -> Option<BBox> {
        let class = self.analysis.top.get(slot)?.index;
        match &self.truth {
            Some(truth) if truth.class == class => analysis::truth_box_at_paper_threshold(truth),
            _ if slot == 0 => self.top1_box,
            _ => None,
        }
    }
}

/// An image of a labelled folder, for the background sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub key: ImageKey,
    /// Its true class: pinned in its result (rank, probability and CAM even outside the top 5).
    pub truth: Option<usize>,
}

/// How far the background sweep has got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepProgress {
    /// Images with a result (from the store or analysed now) or an error.
    pub done: usize,
    pub total: usize,
    /// Images analysed (not read from the store) per second, once a few were.
    pub per_second: Option<f64>,
}

/// What the worker reports.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    Model(ModelStatus),
    /// The result for one image; errors are already formatted with their cause chain.
    Analysis {
        key: ImageKey,
        result: Result<Analysed, String>,
    },
    /// Results of the background sweep (many at once when they come from the store).
    Swept {
        results: Vec<(ImageKey, Result<Analysed, String>)>,
        progress: SweepProgress,
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
    /// Analyse every one of these, in order, whenever nothing else is asked: the background
    /// sweep of a labelled folder. It also gives the true classes that the other requests'
    /// results pin. A new sweep replaces the old; other requests do not end it.
    Sweep(Arc<Vec<Target>>),
}

/// The inference thread's mailbox slot: the UI's newest request, and a sweep that a newer
/// request must not push out.
#[derive(Debug, Default)]
pub struct Job {
    request: Option<Request>,
    sweep: Option<Arc<Vec<Target>>>,
}

/// The UI's handle on the inference thread. Dropping it stops the thread after its
/// current job.
pub struct InferenceWorker {
    worker: Worker<Job>,
}

impl InferenceWorker {
    /// Posts `request`: it replaces the request still waiting, but a sweep posted is kept.
    pub fn send(&self, request: Request) {
        self.worker.amend(|slot| {
            let job = slot.get_or_insert_with(Job::default);
            match request {
                Request::Sweep(targets) => job.sweep = Some(targets),
                other => job.request = Some(other),
            }
        });
    }
}

/// Starts the inference thread: it loads (or, for the default path, fetches) the weights,
/// opens the result store at `store` (when given), then serves requests, from the store
/// where it can. Every event goes to `notify`, which returns false once nobody listens.
pub fn spawn(
    model: ModelConfig,
    store: Option<PathBuf>,
    notify: impl Fn(WorkerEvent) -> bool + Send + 'static,
) -> std::io::Result<InferenceWorker> {
    let worker = Worker::spawn("camview-inference", move |inbox| {
        serve(&model, store.as_deref(), inbox, &notify);
    })?;
    Ok(InferenceWorker { worker })
}

fn serve(
    model: &ModelConfig,
    store: Option<&Path>,
    inbox: &Mailbox<Job>,
    notify: &dyn Fn(WorkerEvent) -> bool,
) {
    let Some(classifier) = load_model(model, notify) else {
        return;
    };
    let results = Results::open(store, model, notify);
    let mut sweep = Sweep::default();
    loop {
        let job = match inbox.try_take() {
            Err(Closed) => return,
            Ok(Some(job)) => job,
            // Nothing asked: the sweep goes on, one step at a time, so a request waits for
            // one image at most.
            Ok(None) if sweep.has_work() => {
                let step = sweep.step(&classifier, model, &results, inbox);
                if !step.is_none_or(notify) {
                    return;
                }
                continue;
            }
            Ok(None) => match inbox.take() {
                Some(job) => job,
                None => return,
            },
        };
        if let Some(targets) = job.sweep {
            sweep.start(targets);
        }
        let keys = match job.request {
            Some(Request::Analyze(key)) => vec![key],
            Some(Request::Prefetch(keys)) => keys,
            Some(Request::Sweep(_)) | None => Vec::new(),
        };
        for key in keys {
            let truth = sweep.truth_of(&key.path);
            let result = contain_panic(|| analyze(&classifier, model, &results, &key.path, truth));
            sweep.answered(&key.path);
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

/// Most results read from the store sent in one event: one event per result would keep the
/// UI busy re-sorting a large list.
const STORED_PER_EVENT: usize = 512;

/// The background sweep of a labelled folder: what is left to do, and how fast it goes.
#[derive(Default)]
struct Sweep {
    targets: Arc<Vec<Target>>,
    /// Index of the next target to look at.
    next: usize,
    truths: HashMap<PathBuf, usize>,
    /// Images already answered (the selected one, neighbours) that the sweep skips.
    answered: HashSet<PathBuf>,
    done: usize,
    /// When the first image was analysed, and how many have been since.
    analysing_since: Option<(Instant, usize)>,
    /// The next photo, being prepared beside the forward pass.
    ahead: Option<Ahead>,
}

/// A photo being decoded and resized on a thread of its own.
struct Ahead {
    path: PathBuf,
    thread: std::thread::JoinHandle<Prepared>,
}

impl Ahead {
    fn start(path: &Path, model: &ModelConfig, device: &Device) -> Option<Self> {
        let (owned, model, device) = (path.to_path_buf(), model.clone(), device.clone());
        let thread = jobs::spawn_contained_with("camview-prepare", move || {
            contain_panic(|| prepare(&owned, &model, &device))
        })
        .ok()?;
        Some(Self {
            path: path.to_path_buf(),
            thread,
        })
    }

    /// The prepared photo, if it is the one at `path`.
    fn result_for(self, path: &Path) -> Option<Prepared> {
        let prepared = self.thread.join().ok()?;
        (self.path == path).then_some(prepared)
    }
}

impl Sweep {
    fn start(&mut self, targets: Arc<Vec<Target>>) {
        self.truths = targets
            .iter()
            .filter_map(|t| Some((t.key.path.clone(), t.truth?)))
            .collect();
        self.targets = targets;
        self.next = 0;
        self.answered.clear();
        self.done = 0;
        self.analysing_since = None;
        self.ahead = None;
    }

    fn has_work(&self) -> bool {
        self.next < self.targets.len()
    }

    fn truth_of(&self, path: &Path) -> Option<usize> {
        self.truths.get(path).copied()
    }

    fn answered(&mut self, path: &Path) {
        self.answered.insert(path.to_path_buf());
    }

    /// Results from the store for as long as it has them (up to [`STORED_PER_EVENT`]), or
    /// else one image analysed; `None` when everything left had been answered already.
    fn step(
        &mut self,
        classifier: &Classifier,
        model: &ModelConfig,
        results: &Results,
        inbox: &Mailbox<Job>,
    ) -> Option<WorkerEvent> {
        let mut swept = Vec::new();
        while self.has_work() && swept.len() < STORED_PER_EVENT {
            let target = &self.targets[self.next];
            if self.answered.contains(&target.key.path) {
                self.next += 1;
                self.done += 1;
                continue;
            }
            let file = FileId::of(&target.key.path).ok();
            let stored = file
                .as_ref()
                .and_then(|f| results.get(f, model.resize, target.truth));
            match stored {
                Some(found) => swept.push((target.key.clone(), Ok(found))),
                // One analysis per event, and none once results are at hand to send.
                None if !swept.is_empty() => break,
                None if sweep_batch(classifier.device()) > 1 => {
                    self.analyse_batch(classifier, model, results, &mut swept);
                    break;
                }
                None => {
                    let key = target.key.clone();
                    let truth = target.truth;
                    self.analysing_since.get_or_insert((Instant::now(), 0));
                    let ready = self.ahead.take().and_then(|a| a.result_for(&key.path));
                    // The next photo is decoded while this one goes through the network.
                    self.ahead = self
                        .targets
                        .get(self.next + 1)
                        .filter(|t| !self.answered.contains(&t.key.path))
                        .and_then(|t| Ahead::start(&t.key.path, model, classifier.device()));
                    let result = contain_panic(|| {
                        analyze_with(classifier, model, results, &key.path, truth, ready)
                    });
                    if let Some((_, count)) = &mut self.analysing_since {
                        *count += 1;
                    }
                    swept.push((key, result));
                    self.next += 1;
                    self.done += 1;
                    break;
                }
            }
            self.next += 1;
            self.done += 1;
            if inbox.has_job() {
                break;
            }
        }
        if swept.is_empty() && self.has_work() {
            return None;
        }
        let per_second = self.analysing_since.and_then(|(since, count)| {
            let seconds = since.elapsed().as_secs_f64();
            (count >= 3 && seconds > 0.0).then(|| count as f64 / seconds)
        });
        if !self.has_work() {
            let analysed = self.analysing_since.map_or(0, |(_, n)| n);
            log::debug(&format!(
                "sweep done: {} images, {analysed} analysed ({:.1} images/s)",
                self.targets.len(),
                per_second.unwrap_or(0.0)
            ));
        }
        Some(WorkerEvent::Swept {
            results: swept,
            progress: SweepProgress {
                done: self.done,
                total: self.targets.len(),
                per_second,
            },
        })
    }
}

/// Set to the images the background sweep analyses per step on a GPU-sized scale: decoded
/// on every core and run through the network in batches ([`pipeline`]). The default is 64
/// on a GPU, and 1 on the CPU, where one photo is decoded beside the forward pass instead
/// and a request waits for one image at most.
pub const SWEEP_BATCH_ENV: &str = "CAMVIEW_SWEEP_BATCH";

fn sweep_batch(device: &Device) -> usize {
    std::env::var(SWEEP_BATCH_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 1)
        .unwrap_or(if device.is_cuda() { 64 } else { 1 })
}

impl Sweep {
    /// Analyses the next [`sweep_batch`] images that need the network in one pipeline run;
    /// stored results met on the way are sent along.
    fn analyse_batch(
        &mut self,
        classifier: &Classifier,
        model: &ModelConfig,
        results: &Results,
        swept: &mut Vec<(ImageKey, Result<Analysed, String>)>,
    ) {
        let batch = sweep_batch(classifier.device());
        let mut picked = Vec::new();
        while self.has_work() && picked.len() < batch {
            let target = &self.targets[self.next];
            if !self.answered.contains(&target.key.path) {
                let stored = FileId::of(&target.key.path)
                    .ok()
                    .and_then(|f| results.get(&f, model.resize, target.truth));
                match stored {
                    Some(found) => swept.push((target.key.clone(), Ok(found))),
                    None => picked.push(self.next),
                }
            }
            self.next += 1;
            self.done += 1;
        }
        let jobs: Vec<pipeline::Job> = picked
            .iter()
            .map(|&i| pipeline::Job {
                path: self.targets[i].key.path.clone(),
                pinned: self.targets[i].truth,
            })
            .collect();
        self.analysing_since.get_or_insert((Instant::now(), 0));
        let started = Instant::now();
        // The boxes are found on the pipeline's last stage; the store (one connection, not
        // shared between threads) is written here afterwards.
        let mut records: Vec<Option<Result<Record, String>>> = vec![None; jobs.len()];
        let cells = &mut records;
        let ran = pipeline::analyse_all(classifier, &jobs, model.resize, analysis::TOP_K, {
            let jobs = &jobs;
            move |j, outcome| {
                cells[j] = Some(outcome.and_then(|(analysis, size)| {
                    contain_panic(|| Ok(analysis::record(analysis, size, jobs[j].pinned)))
                }));
                ControlFlow::Continue(())
            }
        });
        for (&i, record) in picked.iter().zip(records) {
            let target = &self.targets[i];
            let record = match (&ran, record) {
                (_, Some(record)) => record,
                (Err(e), None) => Err(format!("cannot start the analysis: {e}")),
                (Ok(()), None) => Err("not analysed".into()),
            };
            if let (Ok(record), Ok(file)) = (&record, FileId::of(&target.key.path)) {
                results.put(&file, model.resize, record);
            }
            swept.push((target.key.clone(), record.map(Analysed::from)));
        }
        if let Some((_, count)) = &mut self.analysing_since {
            *count += picked.len();
        }
        log::debug(&format!(
            "sweep: {} images analysed in one batch run in {:?}",
            picked.len(),
            started.elapsed()
        ));
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

    /// The stored result, if it is of these weights and mode and pins `truth` (any result
    /// serves an image without one).
    fn get(&self, file: &FileId, resize: ResizeMode, truth: Option<usize>) -> Option<Analysed> {
        let (store, weights) = self.store.as_ref()?;
        let record = store.get(file, weights, resize).ok()??;
        let pinned = record.truth.as_ref().map(|t| t.class);
        (truth.is_none() || pinned == truth).then(|| record.into())
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
    truth: Option<usize>,
) -> Result<Analysed, String> {
    analyze_with(classifier, model, results, path, truth, None)
}

/// A photo decoded and made ready for the network, or why it could not be.
type Prepared = Result<(RgbImage, preprocess::Prepared), String>;

fn prepare(path: &Path, model: &ModelConfig, device: &Device) -> Prepared {
    analysis::prepare(path, model.resize, device).map_err(|e| format!("{e:#}"))
}

/// Like [`analyze`], with the photo already prepared when `ready` has it.
fn analyze_with(
    classifier: &Classifier,
    model: &ModelConfig,
    results: &Results,
    path: &Path,
    truth: Option<usize>,
    ready: Option<Prepared>,
) -> Result<Analysed, String> {
    let started = Instant::now();
    let file = FileId::of(path).ok();
    if let Some(found) = file
        .as_ref()
        .and_then(|f| results.get(f, model.resize, truth))
    {
        log::debug(&format!("analysis of {} from the store", path.display()));
        return Ok(found);
    }
    let (img, prepared) = ready.unwrap_or_else(|| prepare(path, model, classifier.device()))?;
    let record = analysis::analyse(classifier, img.dimensions(), &prepared, truth)
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
    Ok(record.into())
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
    let mut precision_note = None;
    let loaded = provision(model, &progress, &mut |step| match step {
        Step::Loading => {
            notify(WorkerEvent::Model(ModelStatus::Loading));
        }
        Step::Precision(note) => precision_note = Some(note),
        Step::Fetching | Step::Fetched(_) => {}
    });
    match loaded {
        Ok(classifier) => {
            log::debug(&format!("model ready in {:?}", started.elapsed()));
            let mut device = classifier.describe();
            if let Some(note) = precision_note {
                log::debug(&note);
                // The status line has room for a hint only; the log has the sentence.
                device.push_str(" f32 (no bf16 here)");
            }
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
