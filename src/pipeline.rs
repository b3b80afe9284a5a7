//! Many image files through one classifier as fast as its device allows, for `classify`,
//! `eval` and the browser: decoding and resizing on threads of their own (one beside the CPU's forward pass,
//! which takes every core; all cores but one beside a GPU), forward passes in batches of
//! images of one input size, and whatever the caller does with each result on a third stage
//! behind them. The three overlap, so a batch is decoded while the one before it runs.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use image::RgbImage;

use crate::analysis::{self, AnalysisError};
use crate::jobs;
use crate::model::cam_methods::CamMethod;
use crate::model::preprocess::Prepared;
use crate::model::{Analysis, Classifier, ResizeMode};

/// One file to analyse.
#[derive(Debug, Clone)]
pub struct Job {
    pub path: PathBuf,
    /// A class to report (rank, probability, CAM) even outside the top k: the true class.
    pub pinned: Option<usize>,
}

/// A file's analysis with its photo's size.
pub type Analysed = (Analysis, (u32, u32));

/// A file's analysis with its photo's size, or why there is none.
pub type Outcome = Result<Analysed, AnalysisError>;

/// A file's analyses by several methods (in the order asked) with its photo's size, or why
/// there are none.
pub type MethodsOutcome = Result<(Vec<Analysis>, (u32, u32)), AnalysisError>;

/// How a run goes.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub resize: ResizeMode,
    /// Classes per image.
    pub top: usize,
    /// Images per forward pass at most.
    pub batch: usize,
    /// Asked before each forward pass: true ends the run there (newer work waits).
    pub stop: &'a (dyn Fn() -> bool + Sync),
    /// How each class's map is made (any method without passes of its own).
    pub method: CamMethod,
}

impl Run<'_> {
    /// A run to the end, in batches as large as `classifier`'s device wants.
    pub fn new(classifier: &Classifier, resize: ResizeMode, top: usize) -> Self {
        Run {
            resize,
            top,
            batch: batch_size(classifier.device()),
            stop: &|| false,
            method: CamMethod::Cam,
        }
    }
}

/// Analyses every job as `run` says, and hands each outcome with its job's index to `finish`,
/// on a thread of its own, in the order they complete (batches keep the jobs' order, but a
/// failed decode may overtake). `finish` returning `Break`, or `run.stop`, ends the run: what
/// is in flight is dropped.
pub fn analyse_all(
    classifier: &Classifier,
    jobs: &[Job],
    run: Run,
    mut finish: impl FnMut(usize, Outcome) -> ControlFlow<()> + Send,
) -> std::io::Result<()> {
    analyse_all_methods(classifier, jobs, run, &[run.method], |i, outcome| {
        finish(
            i,
            outcome.map(|(mut analyses, size)| (analyses.swap_remove(0), size)),
        )
    })
}

/// [`analyse_all`] by each of `methods` (none with passes of its own; `run.method` is not
/// used): one forward pass an image serves them all.
pub fn analyse_all_methods(
    classifier: &Classifier,
    jobs: &[Job],
    run: Run,
    methods: &[CamMethod],
    finish: impl FnMut(usize, MethodsOutcome) -> ControlFlow<()> + Send,
) -> std::io::Result<()> {
    let device = classifier.device();
    let Run {
        resize,
        top,
        batch,
        stop,
        method: _,
    } = run;
    let batch = batch.max(1);
    let (to_forward, decoded) = mpsc::sync_channel(2 * batch);
    let (to_finish, forwarded) = mpsc::sync_channel::<(usize, MethodsOutcome)>(2 * batch);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| -> std::io::Result<()> {
        let next = &next;
        for _ in 0..decoders(device) {
            let to_forward = to_forward.clone();
            std::thread::Builder::new()
                .name("camview-decode".into())
                .spawn_scoped(scope, move || {
                    // Each decoder takes the next file to do.
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(index) else {
                            return;
                        };
                        let prepared = decode(&job.path, resize, classifier);
                        if to_forward.send((index, prepared)).is_err() {
                            return;
                        }
                    }
                })?;
        }
        drop(to_forward);
        let finisher = std::thread::Builder::new()
            .name("camview-finish".into())
            .spawn_scoped(scope, move || {
                let mut finish = finish;
                for (i, outcome) in forwarded {
                    if finish(i, outcome).is_break() {
                        // Dropping the receiver stops the forward stage, and it the decoders.
                        return;
                    }
                }
            })?;
        let mut batches = Batches {
            decoded,
            held: None,
            size: batch,
        };
        'outer: while !stop()
            && let Some(batch) = batches.next_batch()
        {
            for item in forward(classifier, jobs, batch, top, methods) {
                if to_finish.send(item).is_err() {
                    break 'outer;
                }
            }
        }
        // The decoders see the run end at their next image.
        drop(batches);
        drop(to_finish);
        // A panic in `finish` is the caller's bug: it goes on up, rather than the run
        // ending as if every result had been handled.
        if let Err(panic) = finisher.join() {
            std::panic::resume_unwind(panic);
        }
        Ok(())
    })
}

fn decode(path: &Path, resize: ResizeMode, classifier: &Classifier) -> Decoded {
    jobs::contain_panic(|| analysis::prepare(path, resize, classifier))
}

/// One forward pass over `batch`, each image's outcome with its job's index.
fn forward(
    classifier: &Classifier,
    jobs: &[Job],
    batch: Batch,
    top: usize,
    methods: &[CamMethod],
) -> Vec<(usize, MethodsOutcome)> {
    let images = match batch {
        Batch::Failed(i, e) => return vec![(i, Err(e))],
        Batch::Images(images) => images,
    };
    let prepared: Vec<&Prepared> = images.iter().map(|(_, _, p)| p).collect();
    let pinned: Vec<Option<usize>> = images.iter().map(|(i, _, _)| jobs[*i].pinned).collect();
    let analysed = jobs::contain_panic(|| {
        classifier
            .analyze_batch_methods(&prepared, top, &pinned, methods)
            .map_err(AnalysisError::from)
    });
    match analysed {
        Ok(analyses) => images
            .iter()
            .zip(analyses)
            .map(|((i, size, _), a)| (*i, Ok((a, *size))))
            .collect(),
        Err(e) => images
            .iter()
            .map(|(i, _, _)| (*i, Err(e.clone())))
            .collect(),
    }
}

/// Images per forward pass at most: a batch reads each weight once for all its images; a
/// GPU wants many more at once to be kept busy.
pub fn batch_size(device: &candle_core::Device) -> usize {
    if device.is_cuda() { 64 } else { 8 }
}

/// Masked inputs a forward pass for Score-CAM: on the CPU a batch is a second or so, the
/// longest a stop (a newer selection, Ctrl-C) waits for; a GPU wants more at once.
pub fn score_cam_batch(device: &candle_core::Device) -> usize {
    if device.is_cuda() { 64 } else { 16 }
}

/// One file's analysis with Score-CAM's maps: the forward pass for its `top` classes (and
/// `pinned`), then one set of masked passes — a pass a layer-4 channel,
/// [`score_cam_batch`] at a time — that scores every one of those classes. `progress(done,
/// total)` is called before the first batch and after each; `Break` stops it and gives
/// `None`.
pub fn analyse_score_cam(
    classifier: &Classifier,
    job: &Job,
    resize: ResizeMode,
    top: usize,
    progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Option<Analysed>, AnalysisError> {
    let (img, prepared) = decode(&job.path, resize, classifier)?;
    jobs::contain_panic(|| -> Result<_, AnalysisError> {
        let read = classifier.read_back(&prepared)?;
        if progress(0, read.map().channels).is_break() {
            return Ok(None);
        }
        let mut analysis = classifier.analyze(&prepared, top, job.pinned)?;
        let classes: Vec<usize> = analysis.top.iter().map(|p| p.index).collect();
        let batch = score_cam_batch(classifier.device());
        let started = std::time::Instant::now();
        let maps = classifier.score_cam_maps(&prepared, &read, &classes, batch, progress)?;
        Ok(maps.map(|maps| {
            analysis.cams = maps;
            analysis.elapsed += started.elapsed();
            (analysis, img.dimensions())
        }))
    })
}

/// Threads decoding and resizing: one beside the CPU's forward pass (which takes every
/// core), all but one core when a GPU does the forward pass.
fn decoders(device: &candle_core::Device) -> usize {
    if device.is_cuda() {
        std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
    } else {
        1
    }
}

type Decoded = Result<(RgbImage, Prepared), AnalysisError>;

/// What the forward stage runs next.
enum Batch {
    /// An image that could not be decoded.
    Failed(usize, AnalysisError),
    /// Images of one input size: (index, photo size, network input).
    Images(Vec<(usize, (u32, u32), Prepared)>),
}

/// Groups decoded images into batches: whatever is already decoded, up to `size`, while
/// the input size stays the same (it never waits for more than the first).
struct Batches {
    decoded: mpsc::Receiver<(usize, Decoded)>,
    /// An image that did not fit the last batch.
    held: Option<(usize, Decoded)>,
    size: usize,
}

impl Batches {
    fn next_batch(&mut self) -> Option<Batch> {
        let (i, first) = match self.held.take() {
            Some(held) => held,
            None => self.decoded.recv().ok()?,
        };
        let (img, prepared) = match first {
            Ok(decoded) => decoded,
            Err(e) => return Some(Batch::Failed(i, e)),
        };
        let dims = prepared.tensor.dims().to_vec();
        let mut images = vec![(i, img.dimensions(), prepared)];
        while images.len() < self.size {
            let Ok(next) = self.decoded.try_recv() else {
                break;
            };
            match next {
                (j, Ok((img, p))) if p.tensor.dims() == dims.as_slice() => {
                    images.push((j, img.dimensions(), p));
                }
                other => {
                    self.held = Some(other);
                    break;
                }
            }
        }
        Some(Batch::Images(images))
    }
}
