//! Background inference for the browser: one thread owns the model, loads (or fetches) its
//! weights, and answers analysis requests by message; the newest request always wins.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::maps::{self, MapsRequest, MethodMap, ReadBacks};
use super::sweep::Sweep;
use crate::analysis::{self, AnalysisError, ImageKey, Record, TruthRecord};
use crate::dataset;
use crate::jobs::{self, Closed, Mailbox, Worker};
use crate::log;
use crate::model::cam::BBox;
use crate::model::cam_methods::CamMethod;
use crate::model::fetch::Progress;
use crate::model::{Analysis, Classes, Classifier};
use crate::provision::{ModelConfig, Step, provision};
use crate::results::{Results, Target};

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
    /// Ready to classify, on `device`; its outputs are `classes` (what a dataset's truth is
    /// read against).
    Ready {
        device: String,
        classes: Arc<Classes>,
    },
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
    /// The result for one image.
    Analysis {
        key: ImageKey,
        result: Result<Analysed, AnalysisError>,
    },
    /// Results of the background sweep (many at once when they come from the store).
    Swept {
        results: Vec<(ImageKey, Result<Analysed, AnalysisError>)>,
        progress: SweepProgress,
    },
    /// Something the user should know that is no error of the image shown (the result store
    /// was set aside, or cannot be written).
    Note(String),
    /// Score-CAM's masked passes for the maps asked for: `done` of `total`.
    MapsProgress {
        key: ImageKey,
        method: CamMethod,
        done: usize,
        total: usize,
    },
    /// The maps asked for ([`Request::Maps`]), one a class in the order asked. Maps that
    /// were stopped (the UI asked for something else) are not answered.
    Maps {
        key: ImageKey,
        method: CamMethod,
        result: Result<Vec<MethodMap>, AnalysisError>,
    },
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
    /// Make the maps of a method other than CAM for one image's classes, before any other
    /// analysis; it replaces maps asked for before, and stops Score-CAM's passes for them.
    Maps(MapsRequest),
    /// No maps are wanted any more: Score-CAM's passes under way stop.
    StopMaps,
}

/// The inference thread's mailbox slot: the UI's newest request, and a sweep that a newer
/// request must not push out.
#[derive(Debug, Default)]
pub struct Job {
    request: Option<Request>,
    sweep: Option<Arc<Vec<Target>>>,
    /// The maps wanted now (`None` inside: none), when that changed.
    maps: Option<Option<MapsRequest>>,
}

impl Job {
    /// Whether this job makes the maps under way useless: other maps are wanted (or none),
    /// or another image is selected.
    fn supersedes_maps(&self) -> bool {
        self.maps.is_some() || matches!(self.request, Some(Request::Analyze(_)))
    }
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
                Request::Maps(maps) => job.maps = Some(Some(maps)),
                Request::StopMaps => job.maps = Some(None),
                other => job.request = Some(other),
            }
        });
    }
}

/// Starts the inference thread: it loads (or, for the default path, fetches) the weights,
/// names the classes after the sorted folders of `class_folders` when nothing names them
/// (torchvision's ImageFolder rule, see [`dataset::folder_classes`]), opens the result store
/// at `store` (when given), then serves requests through the results service, from the
/// store where it can. Every event goes to `notify` (also from the sweep's pipeline), which
/// returns false once nobody listens.
pub fn spawn(
    model: ModelConfig,
    store: Option<PathBuf>,
    class_folders: Option<PathBuf>,
    notify: impl Fn(WorkerEvent) -> bool + Send + Sync + 'static,
) -> std::io::Result<InferenceWorker> {
    let worker = Worker::spawn("camview-inference", move |inbox| {
        serve(
            &model,
            store.as_deref(),
            class_folders.as_deref(),
            inbox,
            &notify,
        );
    })?;
    Ok(InferenceWorker { worker })
}

fn serve(
    model: &ModelConfig,
    store: Option<&Path>,
    class_folders: Option<&Path>,
    inbox: &Mailbox<Job>,
    notify: &(dyn Fn(WorkerEvent) -> bool + Sync),
) {
    let Some(classifier) = load_model(model, class_folders, notify) else {
        return;
    };
    let (results, notes) = Results::open(store, &classifier, model.resize);
    for note in notes {
        notify(WorkerEvent::Note(note));
    }
    let mut sweep = Sweep::default();
    let mut read_backs = ReadBacks::default();
    let waiting = || inbox.has_job();
    loop {
        let job = match inbox.try_take() {
            Err(Closed) => return,
            Ok(Some(job)) => job,
            // Nothing asked: the sweep goes on, a step at a time, and each step stops before
            // its next forward pass once a request waits.
            Ok(None) if sweep.has_work() => {
                if !sweep.step(&classifier, &results, &waiting, notify) {
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
        // The maps are of the image shown: they come first.
        if let Some(Some(request)) = job.maps {
            let target = Target {
                truth: sweep.truth_of(&request.key.path),
                key: request.key.clone(),
            };
            let makers = Makers {
                classifier: &classifier,
                results: &results,
                read_backs: &mut read_backs,
            };
            if !make_maps(makers, model, &target, &request, inbox, notify) {
                return;
            }
        }
        let keys = match job.request {
            Some(Request::Analyze(key)) => vec![key],
            Some(Request::Prefetch(keys)) => keys,
            Some(Request::Sweep(_) | Request::Maps(_) | Request::StopMaps) | None => Vec::new(),
        };
        for key in keys {
            let target = Target {
                truth: sweep.truth_of(&key.path),
                key,
            };
            let started = Instant::now();
            let result = results.get_or_analyse(&classifier, &target);
            log::debug(&format!(
                "result of {} in {:?}",
                target.key.path.display(),
                started.elapsed()
            ));
            sweep.answered(&target.key.path);
            let event = WorkerEvent::Analysis {
                key: target.key,
                result: result.map(Analysed::from),
            };
            if !notify(event) {
                return;
            }
            // Newer work waits: drop the rest of a prefetch list.
            if inbox.has_job() {
                break;
            }
        }
    }
}

/// What the worker makes a method's maps with.
struct Makers<'a> {
    classifier: &'a Classifier,
    results: &'a Results,
    read_backs: &'a mut ReadBacks,
}

/// Makes the maps `request` asks for and sends them (with Score-CAM's progress on the way),
/// unless a newer job supersedes them first; false once nobody listens. Score-CAM's maps of
/// the classes the image's analysis has (its table) come from the result store where a run
/// of `eval` or an earlier session left them, and go into it when made here: its thousands
/// of passes are made once.
fn make_maps(
    Makers {
        classifier,
        results,
        read_backs,
    }: Makers,
    model: &ModelConfig,
    target: &Target,
    request: &MapsRequest,
    inbox: &Mailbox<Job>,
    notify: &(dyn Fn(WorkerEvent) -> bool + Sync),
) -> bool {
    let started = Instant::now();
    let mut listening = true;
    let mut progress = |done: usize, total: usize| {
        listening &= notify(WorkerEvent::MapsProgress {
            key: request.key.clone(),
            method: request.method,
            done,
            total,
        });
        if !listening || inbox.has_job_that(Job::supersedes_maps) {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    };
    // A record's classes are the image's analysis' (its top 5 and the true class), which
    // the table shows and asks for.
    let of_request = |r: &Record| {
        r.analysis
            .top
            .iter()
            .map(|p| p.index)
            .eq(request.classes.iter().copied())
    };
    let by_record = request.method.needs_forward_passes()
        && results.is_kept()
        && results.stored(target).is_some_and(|r| of_request(&r));
    let stored = by_record
        .then(|| results.stored_by(target, request.method))
        .flatten()
        .filter(of_request);
    let stored_found = stored.is_some();
    let made = match stored {
        Some(record) => Ok(Some(maps::from_record(&record))),
        None if by_record => match results.analyse_score_cam(classifier, target, &mut progress) {
            None => Ok(None),
            Some(fresh) => fresh.record.map(|record| Some(maps::from_record(&record))),
        },
        None => jobs::contain_panic(|| {
            maps::make(classifier, model.resize, read_backs, request, &mut progress)
        }),
    };
    log::debug(&format!(
        "{} maps of {}: {} in {:?}",
        request.method.name(),
        request.key.path.display(),
        match &made {
            Ok(Some(_)) if stored_found => "from the store",
            Ok(Some(_)) => "made",
            Ok(None) => "stopped",
            Err(_) => "failed",
        },
        started.elapsed()
    ));
    let result = match made {
        Ok(Some(maps)) => Ok(maps),
        Ok(None) => return listening,
        Err(e) => Err(e),
    };
    listening
        && notify(WorkerEvent::Maps {
            key: request.key.clone(),
            method: request.method,
            result,
        })
}

/// Loads the classifier through [`provision`], reporting every step, and names its classes
/// after `class_folders` where nothing else names them; `None` means the model is
/// unavailable (already reported) or nobody listens.
fn load_model(
    model: &ModelConfig,
    class_folders: Option<&Path>,
    notify: &dyn Fn(WorkerEvent) -> bool,
) -> Option<Classifier> {
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
        Ok(mut classifier) => {
            log::debug(&format!("model ready in {:?}", started.elapsed()));
            if let Some(found) =
                class_folders.and_then(|root| dataset::folder_classes(root, classifier.classes()))
            {
                let note = match found.classes.map(|c| classifier.set_classes(c)) {
                    Some(Err(e)) => e.to_string(),
                    _ => found.note,
                };
                notify(WorkerEvent::Note(note));
            }
            let mut device = classifier.describe();
            if let Some(note) = precision_note {
                log::debug(&note);
                // The status line has room for a hint only; the log has the sentence.
                device.push_str(" f32 (no bf16 here)");
            }
            let classes = Arc::new(classifier.classes().clone());
            notify(WorkerEvent::Model(ModelStatus::Ready { device, classes })).then_some(classifier)
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
