//! The background sweep of a labelled folder: every image analysed, whenever the inference
//! worker has nothing else to do. One path on every device: results the store holds go to
//! the UI up to [`STORED_PER_EVENT`] at a time; the rest go through the results service in
//! runs of a few forward passes, [`SWEEP_BATCH_ENV`] images to a pass (64 on a GPU; 1 on the
//! CPU, with the next photo decoded beside the forward pass), and a run stops before its next
//! forward pass as soon as a request waits, so the user waits for one pass at most.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;

use super::inference::{Analysed, SweepProgress, WorkerEvent};
use crate::analysis::{AnalysisError, ImageKey};
use crate::log;
use crate::model::Classifier;
use crate::pipeline::Run;
use crate::results::{Fresh, Results, Target};

/// Set to the images the background sweep puts through one forward pass. The default is 64
/// on a GPU and 1 on the CPU, where a batch saves little and a request would wait for a
/// whole batch.
pub const SWEEP_BATCH_ENV: &str = "CAMVIEW_SWEEP_BATCH";

/// Most results read from the store sent in one event: one event per result would keep the
/// UI busy re-sorting a large list.
const STORED_PER_EVENT: usize = 512;

/// Forward passes per run at most: a run decodes ahead, and ends (draining what is decoded)
/// before the store is asked about the next targets.
const PASSES_PER_RUN: usize = 8;

fn sweep_batch(device: &Device) -> usize {
    std::env::var(SWEEP_BATCH_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n >= 1)
        .unwrap_or(if device.is_cuda() { 64 } else { 1 })
}

/// What is left to do, and how fast it goes.
#[derive(Default)]
pub struct Sweep {
    targets: Arc<Vec<Target>>,
    /// Index of the next target to look for in the store.
    next: usize,
    /// Targets the store lacks, to analyse next, in order.
    missing: VecDeque<usize>,
    truths: HashMap<PathBuf, usize>,
    /// Images already answered (the selected one, neighbours) that the sweep skips.
    answered: HashSet<PathBuf>,
    done: usize,
    /// When the first image was analysed, and how many have been since.
    analysing_since: Option<(Instant, usize)>,
}

type Swept = Vec<(ImageKey, Result<Analysed, AnalysisError>)>;

impl Sweep {
    /// Starts over on `targets`.
    pub fn start(&mut self, targets: Arc<Vec<Target>>) {
        *self = Self {
            truths: targets
                .iter()
                .filter_map(|t| Some((t.key.path.clone(), t.truth?)))
                .collect(),
            targets,
            ..Self::default()
        };
    }

    pub fn has_work(&self) -> bool {
        !self.missing.is_empty() || self.next < self.targets.len()
    }

    /// The true class of the image at `path`, when the sweep knows it.
    pub fn truth_of(&self, path: &Path) -> Option<usize> {
        self.truths.get(path).copied()
    }

    /// The image at `path` was answered by a request: the sweep skips it.
    pub fn answered(&mut self, path: &Path) {
        self.answered.insert(path.to_path_buf());
    }

    /// One step: the results the store holds for the next targets, or else one run of the
    /// targets it lacks. False once nobody listens.
    pub fn step(
        &mut self,
        classifier: &Classifier,
        results: &Results,
        waiting: &(dyn Fn() -> bool + Sync),
        notify: &(dyn Fn(WorkerEvent) -> bool + Sync),
    ) -> bool {
        let batch = sweep_batch(classifier.device());
        let run_size = batch * PASSES_PER_RUN;
        let stored = self.look_up(results, run_size, waiting);
        if !stored.is_empty() || !self.has_work() {
            return notify(self.event(stored));
        }
        if waiting() {
            return true;
        }
        self.analyse(classifier, results, batch, run_size, waiting, notify)
    }

    /// Walks on through the targets while the store has their results (up to
    /// [`STORED_PER_EVENT`]), noting those it lacks, until `run_size` of those are noted.
    fn look_up(&mut self, results: &Results, run_size: usize, waiting: &dyn Fn() -> bool) -> Swept {
        let mut swept = Vec::new();
        while self.next < self.targets.len()
            && swept.len() < STORED_PER_EVENT
            && self.missing.len() < run_size
            && !waiting()
        {
            let i = self.next;
            self.next += 1;
            let target = &self.targets[i];
            if self.answered.contains(&target.key.path) {
                self.done += 1;
            } else if let Some(found) = results.stored(target) {
                self.done += 1;
                swept.push((target.key.clone(), Ok(found.into())));
            } else {
                self.missing.push_back(i);
            }
        }
        swept
    }

    /// Analyses the targets noted missing (those answered meanwhile left out), sending their
    /// results a batch to an event; what a request cut short stays noted.
    fn analyse(
        &mut self,
        classifier: &Classifier,
        results: &Results,
        batch: usize,
        run_size: usize,
        waiting: &(dyn Fn() -> bool + Sync),
        notify: &(dyn Fn(WorkerEvent) -> bool + Sync),
    ) -> bool {
        let picked = self.pick(run_size);
        let targets: Vec<Target> = picked.iter().map(|&i| self.targets[i].clone()).collect();
        let (since, analysed) = *self.analysing_since.get_or_insert((Instant::now(), 0));
        let mut sender = Sender {
            targets: &targets,
            finished: vec![false; targets.len()],
            count: 0,
            swept: Vec::new(),
            batch,
            notify,
            listening: true,
            progress: (self.done, self.targets.len(), since, analysed),
        };
        let started = Instant::now();
        let run = Run {
            batch,
            stop: waiting,
            ..Run::new(classifier, results.resize(), crate::analysis::TOP_K)
        };
        let ran = results.analyse(classifier, &targets, run, |j, fresh| sender.take(j, fresh));
        let count = sender.count;
        self.done += count;
        self.analysing_since = Some((since, analysed + count));
        // Cut short: the rest is analysed next time, first.
        for (&i, _) in picked
            .iter()
            .zip(&sender.finished)
            .rev()
            .filter(|(_, f)| !**f)
        {
            self.missing.push_front(i);
        }
        log::debug(&format!(
            "sweep: {count} of {} images analysed in one run in {:?}",
            picked.len(),
            started.elapsed()
        ));
        let (swept, listening) = (std::mem::take(&mut sender.swept), sender.listening);
        match ran {
            Err(e) => self.fail_all(&AnalysisError::Start(Arc::new(e)), notify),
            Ok(()) if !swept.is_empty() => notify(self.event(swept)),
            Ok(()) => listening,
        }
    }

    /// Up to `count` of the targets noted missing, leaving out those answered meanwhile.
    fn pick(&mut self, count: usize) -> Vec<usize> {
        let mut picked = Vec::new();
        while picked.len() < count
            && let Some(i) = self.missing.pop_front()
        {
            if self.answered.contains(&self.targets[i].key.path) {
                self.done += 1;
            } else {
                picked.push(i);
            }
        }
        picked
    }

    /// No run could be started: every image left says why, rather than the sweep trying
    /// again forever.
    fn fail_all(
        &mut self,
        why: &AnalysisError,
        notify: &(dyn Fn(WorkerEvent) -> bool + Sync),
    ) -> bool {
        let total = self.targets.len();
        let left: Vec<usize> = self.missing.drain(..).chain(self.next..total).collect();
        let results: Swept = left
            .iter()
            .map(|&i| (self.targets[i].key.clone(), Err(why.clone())))
            .collect();
        self.next = total;
        self.done += results.len();
        notify(self.event(results))
    }

    /// The event for `results`, with the progress so far.
    fn event(&self, results: Swept) -> WorkerEvent {
        let (since, analysed) = self
            .analysing_since
            .map_or((None, 0), |(since, n)| (Some(since), n));
        let progress = match since {
            Some(since) => progress(self.done, self.targets.len(), since, analysed),
            None => SweepProgress {
                done: self.done,
                total: self.targets.len(),
                per_second: None,
            },
        };
        if !self.has_work() {
            log::debug(&format!(
                "sweep done: {} images, {analysed} analysed ({:.1} images/s)",
                self.targets.len(),
                progress.per_second.unwrap_or(0.0)
            ));
        }
        WorkerEvent::Swept { results, progress }
    }
}

/// The progress of `done` of `total` images, `analysed` of them analysed since `since`.
fn progress(done: usize, total: usize, since: Instant, analysed: usize) -> SweepProgress {
    let seconds = since.elapsed().as_secs_f64();
    SweepProgress {
        done,
        total,
        per_second: (analysed >= 3 && seconds > 0.0).then(|| analysed as f64 / seconds),
    }
}

/// Sends a run's results as they come, a batch to an event, on the pipeline's last stage.
struct Sender<'a> {
    targets: &'a [Target],
    finished: Vec<bool>,
    count: usize,
    swept: Swept,
    batch: usize,
    notify: &'a (dyn Fn(WorkerEvent) -> bool + Sync),
    listening: bool,
    /// Images done and in all, and images analysed since when, before the run.
    progress: (usize, usize, Instant, usize),
}

impl Sender<'_> {
    fn take(&mut self, j: usize, fresh: Fresh) -> ControlFlow<()> {
        self.finished[j] = true;
        self.count += 1;
        let key = &self.targets[j].key;
        if let Some(e) = &fresh.not_stored {
            log::debug(&format!(
                "cannot store the result of {}: {}",
                key.path.display(),
                crate::model::chain(e)
            ));
        }
        self.swept
            .push((key.clone(), fresh.record.map(Analysed::from)));
        if self.swept.len() < self.batch && self.count < self.targets.len() {
            return ControlFlow::Continue(());
        }
        let (done, total, since, analysed) = self.progress;
        let event = WorkerEvent::Swept {
            results: std::mem::take(&mut self.swept),
            progress: progress(done + self.count, total, since, analysed + self.count),
        };
        self.listening = (self.notify)(event);
        if self.listening {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}
