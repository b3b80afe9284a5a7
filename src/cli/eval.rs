//! `camview eval DIR`: the model and its CAMs measured on a labelled folder: accuracy, the
//! most frequent confusions and, with boxes, the CAM paper's localisation (top-1 and
//! GT-known at 20 % of the maximum) and MaxBoxAcc over a threshold sweep (and, asked,
//! wsolevaluation's MaxBoxAccV2), by one method of the CAM family or several side by side.
//! Results come from the store where they are there; the rest are analysed, decoding on one
//! thread while the forward pass runs on the others (one pass an image for every method),
//! and stored one by one, so an interrupted run loses only the images in flight.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::faithfulness::{
    EvalFaithfulness, FaithfulnessArgs, INTERRUPTED, SummaryJson, measure_eval,
};
use super::score_cam;
use super::{ModelArgs, StoreArgs};
use crate::analysis::{
    self, AnalysisError, ImageKey, Record, SWEEP_STEPS, truth_box_at_paper_threshold,
};
use crate::box_v2::{self, LevelHits};
use crate::dataset::{self, Dataset, Item, LabelSource};
use crate::faithfulness_run::{ImageScores, Request};
use crate::model::Classes;
use crate::model::Classifier;
use crate::model::cam::BBox;
use crate::model::cam_methods::CamMethod;
use crate::model::faithfulness::ROAD_PERCENTILES;
use crate::overlay;
use crate::pipeline::Run;
use crate::results::{Results, Target};
use crate::scoring::{self, IOU_HIT, Score, best_iou};
use crate::text::printable_path;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The dataset: class folders DIR/<class>/<image> (the model's class names, WordNet IDs or
    /// indices; the sorted folders name a model nothing else names), or any folder of images
    /// with --labels.
    pub dir: PathBuf,
    /// Labels file: `path,label` CSV, or ImageNet's LOC_val_solution.csv (boxes included).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Folder of Pascal VOC XML box files, matched to images by file stem.
    #[arg(long, value_name = "DIR")]
    pub boxes: Option<PathBuf>,
    /// One JSON object per image, then a summary object.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// One CSV row per image (with --faithfulness, the scores of its map in columns too).
    #[arg(long)]
    pub csv: bool,
    /// How many of the most frequent confusions to list.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub top_confusions: usize,
    /// Write each image's map — of its true class where it is labelled (the WSOL
    /// convention), else of the top-1 class — into DIR as a float32 .npy at the network
    /// input's size, scaled to 0..1, at DIR/<path below the dataset folder>.npy.
    /// With --methods, DIR/<method>/<path below the dataset folder>.npy.
    #[arg(long, value_name = "DIR")]
    pub save_cams: Option<PathBuf>,
    /// How each class's map (and so its boxes and the localisation) is made: CAM, or another
    /// method of the CAM family (Score-CAM runs a forward pass a layer-4 channel, 2048 an
    /// image for a ResNet-50).
    #[arg(long, env = "CAMVIEW_METHOD", value_enum, default_value_t = CamMethod::Cam)]
    pub method: CamMethod,
    /// Several methods compared in one table, e.g. cam,gradcam++,layercam (one forward pass
    /// an image serves all but Score-CAM); takes the place of --method.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "M,M,…")]
    pub methods: Vec<CamMethod>,
    /// Localisation metrics: v1, camview's own (the largest region, the photo's pixels);
    /// v2 adds MaxBoxAccV2 as wsolevaluation computes it (every region, 224 × 224, IoU 0.3,
    /// 0.5 and 0.7).
    #[arg(long, value_enum, default_value_t = BoxMetric::V1)]
    pub box_metric: BoxMetric,
    #[command(flatten)]
    pub faithfulness: FaithfulnessArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Which localisation metrics `eval` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BoxMetric {
    /// camview's own: top-1 loc, GT-known loc and MaxBoxAcc.
    V1,
    /// Those and MaxBoxAccV2 (Choe et al., CVPR 2020, as wsolevaluation computes it).
    V2,
}

impl EvalArgs {
    /// The methods asked for, in order, each once: `--methods`, else `--method`.
    fn methods(&self) -> Vec<CamMethod> {
        let asked = if self.methods.is_empty() {
            vec![self.method]
        } else {
            self.methods.clone()
        };
        let mut methods = Vec::new();
        for m in asked {
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        methods
    }
}

pub fn run(args: &EvalArgs) -> anyhow::Result<i32> {
    let methods = args.methods();
    let mut classifier = args.model.load_classifier()?;
    // Class folders name a model's classes when nothing else does (torchvision's rule),
    // before the store is keyed by the names.
    if args.labels.is_none()
        && let Some(found) = dataset::folder_classes(&args.dir, classifier.classes())
    {
        eprintln!("camview: {}", found.note);
        if let Some(classes) = found.classes {
            classifier.set_classes(classes)?;
        }
    }
    let dataset = Dataset::load(
        &args.dir,
        args.labels.as_deref(),
        args.boxes.as_deref(),
        classifier.classes(),
    )?;
    for (dir, why) in &dataset.unreadable {
        eprintln!("camview: cannot read {}: {why}", dir.display());
    }
    for warning in &dataset.warnings {
        eprintln!("camview: {warning}");
    }
    let store = args.store.path();
    let (results, notes) = Results::open(store.as_deref(), &classifier, args.model.resize);
    for note in notes {
        eprintln!("camview: {note}");
    }
    let targets: Vec<Target> = dataset
        .items
        .iter()
        .map(|item| Target {
            key: ImageKey::of(&item.path),
            truth: item.truth.as_ref().map(|t| t.class),
        })
        .collect();
    let Some(records) = records_by_method(&dataset, &classifier, &results, &targets, &methods)?
    else {
        return Ok(INTERRUPTED);
    };
    let v2 = args.box_metric == BoxMetric::V2;
    let mut summaries: Vec<MethodSummary> = methods
        .iter()
        .zip(records)
        .map(|(&method, records)| MethodSummary::of(method, &dataset, records, v2))
        .collect();
    let mut unsaved = 0;
    if let Some(dir) = &args.save_cams {
        for s in &summaries {
            let dir = if summaries.len() > 1 {
                dir.join(s.method.name())
            } else {
                dir.clone()
            };
            unsaved += save_cams(&dir, &args.dir, &s.outcomes);
        }
    }
    if args.faithfulness.faithfulness {
        for s in &mut summaries {
            let requests: Vec<Option<Request>> = s
                .outcomes
                .iter()
                .zip(&targets)
                .map(|(o, target)| faithfulness_request(o, target, s.method))
                .collect();
            let name = |i: usize| dataset.items[i].relative.clone();
            let Some(measured) = measure_eval(
                &classifier,
                &results,
                &requests,
                s.method,
                args.faithfulness.settings(),
                &name,
            ) else {
                return Ok(INTERRUPTED);
            };
            s.summary.faithfulness = Some(measured.summary_json());
            s.faithfulness = Some(measured);
        }
    }
    let failed = summaries[0].summary.failed;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        write_json(&mut out, &summaries, &dataset.classes)
    } else if args.csv {
        write_csv(&mut out, &summaries, &dataset.classes)
    } else {
        write_report(&mut out, &dataset, &summaries, args.top_confusions)
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let unmeasured: usize = summaries
        .iter()
        .filter_map(|s| s.faithfulness.as_ref())
        .map(EvalFaithfulness::failed)
        .sum();
    Ok(i32::from(failed > 0 || unsaved > 0 || unmeasured > 0))
}

/// Which map of an analysed image `--faithfulness` measures: the true class's where it is
/// labelled (the WSOL convention), else the top-1's. None for an image without an analysis.
/// Score-CAM's is the record's map, whose passes were run already; the others' are made
/// again from one forward pass.
fn faithfulness_request(outcome: &Outcome, target: &Target, method: CamMethod) -> Option<Request> {
    let record = outcome.record.as_ref().ok()?;
    let class = match &outcome.item.truth {
        Some(truth) => truth.class,
        None => record.analysis.top.first()?.index,
    };
    let map = method
        .needs_forward_passes()
        .then(|| {
            let slot = record.analysis.top.iter().position(|p| p.index == class)?;
            record.analysis.cams.get(slot).cloned()
        })
        .flatten();
    Some(Request {
        key: target.key.clone(),
        class,
        map,
    })
}

/// Writes each image's map — of its true class where it is labelled, else of the top-1 —
/// into `dir` at the image's path below `root`, with `.npy`; returns how many could not be.
fn save_cams(dir: &std::path::Path, root: &std::path::Path, outcomes: &[Outcome]) -> usize {
    let mut unsaved = 0;
    for outcome in outcomes {
        let Ok(record) = &outcome.record else {
            continue;
        };
        let item = outcome.item;
        let top = &record.analysis.top;
        let index = item
            .truth
            .as_ref()
            .and_then(|t| top.iter().position(|p| p.index == t.class))
            .unwrap_or(0);
        let below = item.path.strip_prefix(root).unwrap_or(&item.path);
        let mut name = below.as_os_str().to_os_string();
        name.push(".npy");
        if let Err(e) = overlay::write_map_npy(&dir.join(name), &record.analysis, index) {
            eprintln!(
                "camview: cannot save the map of {}: {e}",
                item.path.display()
            );
            unsaved += 1;
        }
    }
    unsaved
}

/// Each image's record, or why it has none, by each method (outer: the methods, inner: the
/// images).
type Records = Vec<Vec<Result<Record, AnalysisError>>>;

/// Every image's record by each of `methods` (outer: the methods, inner: the images): from
/// the store where it holds them all, else analysed by every closed-form method in one pass
/// (and by Score-CAM with its own passes) and stored. `None` when Ctrl-C stopped Score-CAM:
/// what it finished is stored.
fn records_by_method(
    dataset: &Dataset,
    classifier: &Classifier,
    results: &Results,
    targets: &[Target],
    methods: &[CamMethod],
) -> anyhow::Result<Option<Records>> {
    let mut records: Vec<Vec<Option<Result<Record, AnalysisError>>>> = methods
        .iter()
        .map(|&m| {
            targets
                .iter()
                .map(|t| results.stored_by(t, m).map(Ok))
                .collect()
        })
        .collect();
    let (passes, closed): (Vec<usize>, Vec<usize>) =
        (0..methods.len()).partition(|&m| methods[m].needs_forward_passes());
    if !closed.is_empty() {
        // An image lacking any closed-form method's result is analysed by all: the pass is
        // the cost, and the fresh records of one pass agree with each other.
        let missing: Vec<bool> = (0..targets.len())
            .map(|i| closed.iter().any(|&m| records[m][i].is_none()))
            .collect();
        analyse_missing(
            dataset,
            classifier,
            results,
            targets,
            (methods, &closed),
            &missing,
            &mut records,
        )?;
    }
    for m in passes {
        if !analyse_score_cam(dataset, classifier, results, targets, &mut records[m]) {
            return Ok(None);
        }
    }
    Ok(Some(
        records
            .into_iter()
            .map(|by| {
                by.into_iter()
                    .map(|r| r.unwrap_or(Err(AnalysisError::Unfinished)))
                    .collect()
            })
            .collect(),
    ))
}

/// Analyses by Score-CAM the images whose `records` slot is empty, one at a time (its
/// passes go in batches through the engine), storing each as it is finished; false when
/// Ctrl-C stopped it before the last.
fn analyse_score_cam(
    dataset: &Dataset,
    classifier: &Classifier,
    results: &Results,
    targets: &[Target],
    records: &mut [Option<Result<Record, AnalysisError>>],
) -> bool {
    let todo: Vec<usize> = (0..targets.len())
        .filter(|&i| records[i].is_none())
        .collect();
    let stored = targets.len() - todo.len();
    if todo.is_empty() {
        eprintln!("camview: all {stored} Score-CAM results from the store");
        return true;
    }
    let mut progress = score_cam::Progress::start(classifier, todo.len());
    let started = std::time::Instant::now();
    for (n, &i) in todo.iter().enumerate() {
        let fresh = results.analyse_score_cam(classifier, &targets[i], &mut |done, total| {
            progress.update(n, done, total)
        });
        let Some(fresh) = fresh else {
            progress.clear();
            eprintln!(
                "camview: Score-CAM stopped (Ctrl-C) after {n} of {} images; their results \
                 are stored, run again to go on",
                todo.len()
            );
            return false;
        };
        if let Some(e) = &fresh.not_stored {
            progress.clear();
            eprintln!(
                "camview: cannot store the scorecam result of {}: {}",
                dataset.items[i].relative,
                crate::model::chain(e)
            );
        }
        records[i] = Some(fresh.record);
        if progress.stopped() && n + 1 < todo.len() {
            progress.clear();
            eprintln!(
                "camview: Score-CAM stopped (Ctrl-C) after {} of {} images; their results \
                 are stored, run again to go on",
                n + 1,
                todo.len()
            );
            return false;
        }
    }
    progress.clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "camview: Score-CAM analysed {} images in {seconds:.1} s ({:.1} s an image); {stored} from the store",
        todo.len(),
        seconds / todo.len() as f64,
    );
    true
}

/// Analyses the images marked `missing` by every method of `methods` picked by `slots`
/// (none with passes of its own) through the results service, which stores each result as
/// it comes, so an interrupted run loses only the images in flight; `records[m][i]`
/// receives image i's by method m.
fn analyse_missing(
    dataset: &Dataset,
    classifier: &Classifier,
    results: &Results,
    targets: &[Target],
    (all, slots): (&[CamMethod], &[usize]),
    missing: &[bool],
    records: &mut [Vec<Option<Result<Record, AnalysisError>>>],
) -> anyhow::Result<()> {
    let todo: Vec<usize> = (0..targets.len()).filter(|&i| missing[i]).collect();
    let to_analyse: Vec<Target> = todo.iter().map(|&i| targets[i].clone()).collect();
    let count = todo.len();
    let started = std::time::Instant::now();
    let bar = progress(count as u64);
    let mut finished = Vec::with_capacity(count);
    let run = Run::new(classifier, results.resize(), analysis::TOP_K);
    let methods: Vec<CamMethod> = slots.iter().map(|&m| all[m]).collect();
    results.analyse_methods(classifier, &to_analyse, run, &methods, |j, fresh| {
        let i = todo[j];
        let mut by_method = Vec::with_capacity(fresh.len());
        for (f, method) in fresh.into_iter().zip(&methods) {
            if let Some(e) = &f.not_stored {
                bar.suspend(|| {
                    eprintln!(
                        "camview: cannot store the {} result of {}: {}",
                        method.name(),
                        dataset.items[i].relative,
                        crate::model::chain(e)
                    );
                });
            }
            by_method.push(f.record);
        }
        finished.push((i, by_method));
        bar.inc(1);
        ControlFlow::Continue(())
    })?;
    for (i, by_method) in finished {
        for (&m, record) in slots.iter().zip(by_method) {
            records[m][i] = Some(record);
        }
    }
    bar.finish_and_clear();
    let stored = dataset.items.len() - count;
    if count > 0 {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "camview: analysed {count} images in {seconds:.1} s ({:.1} images/s); {stored} from the store",
            count as f64 / seconds.max(1e-9),
        );
    } else {
        eprintln!("camview: all {stored} results from the store");
    }
    Ok(())
}

fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{wide_bar} {pos}/{len} images  {per_sec}  eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

/// What one image came to.
struct Outcome<'a> {
    item: &'a Item,
    record: Result<Record, AnalysisError>,
    /// With a label and a result: how the prediction scores.
    score: Option<Score>,
    /// With boxes too: the top-1 CAM box's best IoU with a truth box of the true class.
    iou: Option<f64>,
    loc_correct: Option<bool>,
    gt_known_correct: Option<bool>,
    /// Whether the true class's box at each sweep threshold hits a truth box.
    sweep_hits: Option<Vec<bool>>,
    /// With `--box-metric v2`: the levels at which the true class's map's regions reach each
    /// IoU threshold.
    v2_hits: Option<LevelHits>,
}

impl<'a> Outcome<'a> {
    fn of(item: &'a Item, record: Result<Record, AnalysisError>, v2: bool) -> Self {
        let mut o = Outcome {
            item,
            record,
            score: None,
            iou: None,
            loc_correct: None,
            gt_known_correct: None,
            sweep_hits: None,
            v2_hits: None,
        };
        let (Some(truth), Ok(record)) = (&item.truth, &o.record) else {
            return o;
        };
        o.score = Score::of(truth.class, &record.analysis.top);
        if v2 {
            o.v2_hits = box_v2::record_curve(truth, record).map(|c| c.hits());
        }
        let Some(iou) = best_iou(truth, record.top1_box) else {
            return o;
        };
        let hits = |b: Option<BBox>| best_iou(truth, b).is_some_and(|iou| iou >= IOU_HIT);
        o.iou = Some(iou);
        o.loc_correct = Some(o.top1_correct() == Some(true) && iou >= IOU_HIT);
        if let Some(t) = &record.truth {
            o.gt_known_correct = Some(hits(truth_box_at_paper_threshold(t)));
            o.sweep_hits = Some(t.boxes.iter().map(|b| hits(*b)).collect());
        }
        o
    }

    fn top1_correct(&self) -> Option<bool> {
        self.score.map(|s| s.top1_correct())
    }

    fn top5_correct(&self) -> Option<bool> {
        self.score.map(|s| s.top5_correct())
    }

    /// The error, with its causes, when the image has no result.
    fn error(&self) -> Option<String> {
        self.record.as_ref().err().map(|e| crate::model::chain(e))
    }
}

/// One method's results over the dataset: each image's outcome and the summary. The place
/// for more columns of a method (faithfulness).
struct MethodSummary<'a> {
    method: CamMethod,
    outcomes: Vec<Outcome<'a>>,
    summary: Summary,
    /// With `--faithfulness`: each image's scores and their means.
    faithfulness: Option<EvalFaithfulness>,
}

impl<'a> MethodSummary<'a> {
    fn of(
        method: CamMethod,
        dataset: &'a Dataset,
        records: Vec<Result<Record, AnalysisError>>,
        v2: bool,
    ) -> Self {
        let outcomes: Vec<Outcome> = dataset
            .items
            .iter()
            .zip(records)
            .map(|(item, record)| Outcome::of(item, record, v2))
            .collect();
        let summary = Summary::of(&outcomes, method, v2);
        Self {
            method,
            outcomes,
            summary,
            faithfulness: None,
        }
    }

    /// Image `i`'s faithfulness scores, or why it has none, where they were measured.
    fn image_faithfulness(&self, i: usize) -> Option<Result<&ImageScores, &str>> {
        let scores = self.faithfulness.as_ref()?.per_image.get(i)?.as_ref()?;
        Some(scores.as_ref().map_err(String::as_str))
    }
}

#[derive(Debug, Serialize)]
struct Summary {
    method: &'static str,
    images: usize,
    unlabelled: usize,
    failed: usize,
    top1: Option<f64>,
    top5: Option<f64>,
    boxed: usize,
    loc_top1: Option<f64>,
    loc_gt_known: Option<f64>,
    max_box_acc: Option<f64>,
    best_threshold: Option<f64>,
    /// With `--box-metric v2`: MaxBoxAccV2 (the mean over IoU 0.3, 0.5, 0.7), each IoU's
    /// best accuracy and the CAM threshold it was reached at.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_box_acc_v2: Option<Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_box_acc_v2_by_iou: Option<Option<[f64; 3]>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    best_threshold_v2: Option<Option<[f64; 3]>>,
    /// With `--faithfulness`.
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness: Option<SummaryJson>,
}

fn fraction(hits: impl Iterator<Item = bool>) -> Option<f64> {
    let (mut n, mut k) = (0usize, 0usize);
    for hit in hits {
        n += 1;
        k += usize::from(hit);
    }
    (n > 0).then(|| k as f64 / n as f64)
}

impl Summary {
    fn of(outcomes: &[Outcome], method: CamMethod, v2: bool) -> Self {
        let sweep: Vec<&Vec<bool>> = outcomes
            .iter()
            .filter_map(|o| o.sweep_hits.as_ref())
            .collect();
        let (max_box_acc, best_threshold) = if sweep.is_empty() {
            (None, None)
        } else {
            let accuracy =
                |step: usize| sweep.iter().filter(|h| h[step]).count() as f64 / sweep.len() as f64;
            // The lowest threshold among equals, as a sweep from 0 up finds it.
            let best =
                (0..SWEEP_STEPS).fold(0, |b, s| if accuracy(s) > accuracy(b) { s } else { b });
            (Some(accuracy(best)), Some(best as f64 / SWEEP_STEPS as f64))
        };
        let v2 =
            v2.then(|| box_v2::max_box_acc_v2(outcomes.iter().filter_map(|o| o.v2_hits.as_ref())));
        Summary {
            method: method.name(),
            images: outcomes.len(),
            unlabelled: outcomes.iter().filter(|o| o.item.truth.is_none()).count(),
            failed: outcomes.iter().filter(|o| o.record.is_err()).count(),
            top1: fraction(outcomes.iter().filter_map(Outcome::top1_correct)),
            top5: fraction(outcomes.iter().filter_map(Outcome::top5_correct)),
            boxed: outcomes.iter().filter(|o| o.iou.is_some()).count(),
            loc_top1: fraction(outcomes.iter().filter_map(|o| o.loc_correct)),
            loc_gt_known: fraction(outcomes.iter().filter_map(|o| o.gt_known_correct)),
            max_box_acc,
            best_threshold,
            max_box_acc_v2: v2.as_ref().map(|m| m.as_ref().map(|m| m.mean)),
            max_box_acc_v2_by_iou: v2.as_ref().map(|m| m.as_ref().map(|m| m.by_iou)),
            best_threshold_v2: v2.as_ref().map(|m| m.as_ref().map(|m| m.best_threshold)),
            faithfulness: None,
        }
    }
}

#[derive(Serialize)]
struct JsonTruth<'a> {
    index: usize,
    label: String,
    /// Empty where the model's classes have no WordNet IDs.
    wnid: &'a str,
}

#[derive(Serialize)]
struct JsonImage<'a> {
    path: String,
    truth: Option<JsonTruth<'a>>,
    top: Option<&'a [crate::model::Prediction]>,
    truth_rank: Option<usize>,
    truth_prob: Option<f32>,
    top1_correct: Option<bool>,
    top5_correct: Option<bool>,
    bbox: Option<[u32; 4]>,
    iou: Option<f64>,
    loc_correct: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// With `--faithfulness`: the scores of the image's map.
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness: Option<&'a ImageScores>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faithfulness_error: Option<&'a str>,
}

fn json_image<'a>(o: &'a Outcome, classes: &'a Classes) -> JsonImage<'a> {
    let record = o.record.as_ref().ok();
    JsonImage {
        path: printable_path(&o.item.path),
        truth: o.item.truth.as_ref().map(|t| JsonTruth {
            index: t.class,
            label: classes.label(t.class),
            wnid: classes.wnid(t.class).unwrap_or(""),
        }),
        // The top five; a true class ranked lower is given by truth_rank and truth_prob.
        top: record.map(|r| &r.analysis.top[..r.analysis.top.len().min(analysis::TOP_K)]),
        truth_rank: o.score.and_then(|s| s.truth_rank),
        truth_prob: o.score.and_then(|s| s.truth_prob),
        top1_correct: o.top1_correct(),
        top5_correct: o.top5_correct(),
        bbox: record
            .and_then(|r| r.top1_box)
            .map(|b| [b.x0, b.y0, b.x1, b.y1]),
        iou: o.iou,
        loc_correct: o.loc_correct,
        error: o.error(),
        faithfulness: None,
        faithfulness_error: None,
    }
}

/// One method's localisation of one image, for `--methods`' JSON.
#[derive(Serialize)]
struct JsonLocalisation {
    bbox: Option<[u32; 4]>,
    iou: Option<f64>,
    loc_correct: Option<bool>,
    gt_known_correct: Option<bool>,
}

impl JsonLocalisation {
    fn of(o: &Outcome) -> Self {
        Self {
            bbox: o
                .record
                .as_ref()
                .ok()
                .and_then(|r| r.top1_box)
                .map(|b| [b.x0, b.y0, b.x1, b.y1]),
            iou: o.iou,
            loc_correct: o.loc_correct,
            gt_known_correct: o.gt_known_correct,
        }
    }
}

/// One line an image (the first method's fields, and with several methods each one's
/// localisation under `methods`), then the summary (likewise, each method's under
/// `methods`).
fn write_json(
    out: &mut impl Write,
    summaries: &[MethodSummary],
    classes: &Classes,
) -> std::io::Result<()> {
    let first = &summaries[0];
    let several = summaries.len() > 1;
    for (i, o) in first.outcomes.iter().enumerate() {
        let mut json = json_image(o, classes);
        match first.image_faithfulness(i) {
            Some(Ok(scores)) => json.faithfulness = Some(scores),
            Some(Err(e)) => json.faithfulness_error = Some(e),
            None => {}
        }
        let mut line = serde_json::to_value(json)?;
        if several && let Some(fields) = line.as_object_mut() {
            let by: serde_json::Map<String, serde_json::Value> = summaries
                .iter()
                .map(|s| {
                    let mut value = serde_json::to_value(JsonLocalisation::of(&s.outcomes[i]))?;
                    if let (Some(Ok(scores)), Some(fields)) =
                        (s.image_faithfulness(i), value.as_object_mut())
                    {
                        fields.insert("faithfulness".into(), serde_json::to_value(scores)?);
                    }
                    Ok((s.method.name().to_string(), value))
                })
                .collect::<Result<_, serde_json::Error>>()?;
            fields.insert("methods".into(), by.into());
        }
        writeln!(out, "{line}")?;
    }
    let mut summary = serde_json::to_value(&first.summary)?;
    if several && let Some(fields) = summary.as_object_mut() {
        let by: serde_json::Map<String, serde_json::Value> = summaries
            .iter()
            .map(|s| serde_json::to_value(&s.summary).map(|v| (s.method.name().to_string(), v)))
            .collect::<Result<_, _>>()?;
        fields.insert("methods".into(), by.into());
    }
    writeln!(out, "{}", serde_json::json!({ "summary": summary }))
}

/// The columns of an image's faithfulness scores in `--csv` (after `--json`'s names; ROAD's
/// a percentile each), a method's suffixed `_<method>` as `iou_<method>` is.
fn faithfulness_columns() -> Vec<String> {
    let mut names: Vec<String> = [
        "faithfulness_class",
        "confidence",
        "confidence_change",
        "drop",
        "increased",
        "deletion_auc",
        "insertion_auc",
    ]
    .map(String::from)
    .to_vec();
    for order in ["morf", "lerf"] {
        names.extend(ROAD_PERCENTILES.iter().map(|p| format!("road_{order}_{p}")));
    }
    names.push("road_combined".into());
    names.push("faithfulness_error".into());
    names
}

/// The cells of [`faithfulness_columns`] for one image's scores (each number written in
/// full, as `--json` has it), empty where it has none.
fn faithfulness_cells(scores: Option<Result<&ImageScores, &str>>) -> Vec<String> {
    let n = faithfulness_columns().len();
    let s = match scores {
        None => return vec![String::new(); n],
        Some(Err(e)) => {
            let mut cells = vec![String::new(); n - 1];
            cells.push(e.to_string());
            return cells;
        }
        Some(Ok(s)) => s,
    };
    let mut cells = vec![
        s.class.to_string(),
        s.confidence.to_string(),
        s.cam_mult_change.to_string(),
        s.drop.to_string(),
        s.increased.to_string(),
        s.deletion_auc.to_string(),
        s.insertion_auc.to_string(),
    ];
    cells.extend(s.road_most_relevant_first.iter().map(f32::to_string));
    cells.extend(s.road_least_relevant_first.iter().map(f32::to_string));
    cells.push(s.road_combined.to_string());
    cells.push(String::new());
    cells
}

/// One row an image: the first method's localisation (and faithfulness, when measured),
/// and with several methods each one's in columns `iou_<method>`, `loc_correct_<method>`,
/// `deletion_auc_<method>`, ….
fn write_csv(
    out: &mut impl Write,
    summaries: &[MethodSummary],
    classes: &Classes,
) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let opt = |v: Option<String>| v.unwrap_or_default();
    let others = if summaries.len() > 1 { summaries } else { &[] };
    let outcomes = &summaries[0].outcomes;
    let mut header: Vec<String> = [
        "path",
        "truth_index",
        "truth_wnid",
        "truth_label",
        "top1_index",
        "top1_label",
        "top1_prob",
        "truth_rank",
        "truth_prob",
        "top1_correct",
        "top5_correct",
        "iou",
        "loc_correct",
        "error",
    ]
    .map(String::from)
    .to_vec();
    let faithful = summaries[0].faithfulness.is_some();
    if faithful {
        header.extend(faithfulness_columns());
    }
    for s in others {
        header.push(format!("iou_{}", s.method.name()));
        header.push(format!("loc_correct_{}", s.method.name()));
        if faithful {
            let suffixed = faithfulness_columns()
                .into_iter()
                .map(|c| format!("{c}_{}", s.method.name()));
            header.extend(suffixed);
        }
    }
    w.write_record(&header)?;
    for (i, o) in outcomes.iter().enumerate() {
        let top1 = o.record.as_ref().ok().and_then(|r| r.analysis.top.first());
        let truth = o.item.truth.as_ref();
        let mut row = vec![
            printable_path(&o.item.path),
            opt(truth.map(|t| t.class.to_string())),
            opt(truth
                .and_then(|t| classes.wnid(t.class))
                .map(str::to_string)),
            opt(truth.map(|t| classes.label(t.class))),
            opt(top1.map(|p| p.index.to_string())),
            opt(top1.map(|p| p.label.clone())),
            opt(top1.map(|p| format!("{:.6}", p.prob))),
            opt(o.score.and_then(|s| s.truth_rank).map(|r| r.to_string())),
            opt(o
                .score
                .and_then(|s| s.truth_prob)
                .map(|p| format!("{p:.6}"))),
            opt(o.top1_correct().map(|b| b.to_string())),
            opt(o.top5_correct().map(|b| b.to_string())),
            opt(o.iou.map(|v| format!("{v:.4}"))),
            opt(o.loc_correct.map(|b| b.to_string())),
            opt(o.error()),
        ];
        if faithful {
            row.extend(faithfulness_cells(summaries[0].image_faithfulness(i)));
        }
        for s in others {
            let by = &s.outcomes[i];
            row.push(opt(by.iou.map(|v| format!("{v:.4}"))));
            row.push(opt(by.loc_correct.map(|b| b.to_string())));
            if faithful {
                row.extend(faithfulness_cells(s.image_faithfulness(i)));
            }
        }
        w.write_record(&row)?;
    }
    w.flush()
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |v| format!("{:.1} %", v * 100.0))
}

/// `n02124075 Egyptian cat`, or the name alone where the classes have no WordNet IDs.
fn class_name(classes: &Classes, index: usize) -> String {
    match classes.wnid(index) {
        Some(wnid) => format!("{wnid} {}", classes.label(index)),
        None => classes.label(index),
    }
}

fn write_report(
    out: &mut impl Write,
    dataset: &Dataset,
    summaries: &[MethodSummary],
    confusions: usize,
) -> std::io::Result<()> {
    // Classes and their ranks are the same by every method: the first says them.
    let MethodSummary {
        outcomes,
        summary: s,
        ..
    } = &summaries[0];
    let source = match &dataset.source {
        LabelSource::None => "no labels found".to_string(),
        LabelSource::ClassFolders => "labels from class folders".to_string(),
        LabelSource::File(f) => format!("labels from {}", f.display()),
    };
    let labelled = s.images - s.unlabelled;
    writeln!(
        out,
        "{}: {} images, {labelled} labelled ({source}), {} unlabelled, {} failed, {} with boxes",
        dataset.root.display(),
        s.images,
        s.unlabelled,
        s.failed,
        s.boxed
    )?;
    let counted = outcomes.iter().filter(|o| o.score.is_some()).count();
    let hits = |f: &dyn Fn(&Outcome<'_>) -> Option<bool>| {
        outcomes.iter().filter(|o| f(o) == Some(true)).count()
    };
    writeln!(
        out,
        "top-1 accuracy  {:>8}  ({} / {counted})",
        percent(s.top1),
        hits(&|o| o.top1_correct())
    )?;
    writeln!(
        out,
        "top-5 accuracy  {:>8}  ({} / {counted})",
        percent(s.top5),
        hits(&|o| o.top5_correct())
    )?;
    let faithful = summaries.iter().any(|s| s.faithfulness.is_some());
    if summaries.len() > 1 {
        if s.boxed > 0 || faithful {
            write_method_table(out, summaries)?;
        }
    } else {
        if s.boxed > 0 {
            write_localisation(out, &summaries[0])?;
        }
        if let Some(f) = &summaries[0].faithfulness {
            f.write_report(out)?;
        }
    }
    write_per_class(out, outcomes, &dataset.classes)?;
    write_confusions(out, outcomes, confusions, &dataset.classes)?;
    for o in outcomes {
        if let Some(e) = o.error() {
            writeln!(out, "failed: {}: {e}", printable_path(&o.item.path))?;
        }
    }
    Ok(())
}

/// One method's localisation, a line a metric.
fn write_localisation(out: &mut impl Write, m: &MethodSummary) -> std::io::Result<()> {
    let s = &m.summary;
    let (map, by) = match m.method {
        CamMethod::Cam => ("CAM".to_string(), String::new()),
        other => (
            other.name().to_string(),
            format!(", maps by {}", other.name()),
        ),
    };
    writeln!(
        out,
        "localisation over {} boxed images (IoU ≥ 0.5{by}):",
        s.boxed
    )?;
    writeln!(
        out,
        "  top-1 loc     {:>8}  (top-1 right and its {map} box at 20 %)",
        percent(s.loc_top1)
    )?;
    writeln!(
        out,
        "  GT-known loc  {:>8}  (the true class's {map} box at 20 %)",
        percent(s.loc_gt_known)
    )?;
    if let (Some(acc), Some(t)) = (s.max_box_acc, s.best_threshold) {
        writeln!(
            out,
            "  MaxBoxAcc     {:>8}  (best threshold {t:.2} of the maximum)",
            percent(Some(acc))
        )?;
    }
    if let Some(v2) = &s.max_box_acc_v2 {
        let by_iou = s.max_box_acc_v2_by_iou.flatten();
        writeln!(
            out,
            "  MaxBoxAccV2   {:>8}  ({}; wsolevaluation's: every region, 224 × 224)",
            percent(*v2),
            v2_by_iou(by_iou)
        )?;
    }
    Ok(())
}

/// `IoU 0.3 / 0.5 / 0.7: 100.0 / 100.0 / 50.0 %`.
fn v2_by_iou(by_iou: Option<[f64; 3]>) -> String {
    match by_iou {
        Some([a, b, c]) => format!(
            "IoU 0.3 / 0.5 / 0.7: {:.1} / {:.1} / {:.1} %",
            a * 100.0,
            b * 100.0,
            c * 100.0
        ),
        None => "no map of the true class".to_string(),
    }
}

/// A column of a table: its header and a cell a row, right-aligned unless `left`.
struct Column {
    header: String,
    cells: Vec<String>,
    left: bool,
}

impl Column {
    fn new(header: &str, cells: Vec<String>) -> Self {
        Self {
            header: header.to_string(),
            cells,
            left: false,
        }
    }
}

/// Writes `columns` as a table indented by two spaces, each as wide as its widest cell.
fn write_table(out: &mut impl Write, columns: &[Column]) -> std::io::Result<()> {
    let width = |c: &Column| {
        c.cells
            .iter()
            .chain([&c.header])
            .map(|t| t.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = columns.iter().map(width).collect();
    let rows = columns.first().map_or(0, |c| c.cells.len());
    let line = |cell: &dyn Fn(&Column) -> &str| -> String {
        let cells: Vec<String> = columns
            .iter()
            .zip(&widths)
            .map(|(c, &w)| {
                let text = cell(c);
                let pad = " ".repeat(w.saturating_sub(text.chars().count()));
                if c.left {
                    format!("{text}{pad}")
                } else {
                    format!("{pad}{text}")
                }
            })
            .collect();
        format!("  {}", cells.join("  ")).trim_end().to_string()
    };
    writeln!(out, "{}", line(&|c| &c.header))?;
    for r in 0..rows {
        writeln!(out, "{}", line(&|c| &c.cells[r]))?;
    }
    Ok(())
}

/// The methods side by side, a row each: the localisation (with boxes) and the
/// faithfulness means (when measured), the headers explained under the table; then ROAD at
/// each percentile, which the table gives as means.
fn write_method_table(out: &mut impl Write, summaries: &[MethodSummary]) -> std::io::Result<()> {
    let first = &summaries[0].summary;
    let boxed = first.boxed > 0;
    let v2 = boxed && first.max_box_acc_v2.is_some();
    let means: Vec<Option<&crate::faithfulness_run::MethodSummary>> = summaries
        .iter()
        .map(|m| m.faithfulness.as_ref().and_then(|f| f.summary.as_ref()))
        .collect();
    let faithful = summaries.iter().any(|m| m.faithfulness.is_some());
    let cells = |f: &dyn Fn(&Summary) -> String| -> Vec<String> {
        summaries.iter().map(|m| f(&m.summary)).collect()
    };
    let mut columns = vec![Column {
        left: true,
        ..Column::new(
            "method",
            summaries.iter().map(|m| m.method.name().into()).collect(),
        )
    }];
    if boxed {
        columns.push(Column::new("top-1 loc", cells(&|s| percent(s.loc_top1))));
        columns.push(Column::new("GT-known", cells(&|s| percent(s.loc_gt_known))));
        columns.push(Column::new("MaxBoxAcc", cells(&|s| percent(s.max_box_acc))));
        columns.push(Column::new(
            "thr",
            cells(&|s| {
                s.best_threshold
                    .map_or_else(|| "—".to_string(), |t| format!("{t:.2}"))
            }),
        ));
    }
    if v2 {
        columns.push(Column::new(
            "MaxBoxAccV2",
            cells(&|s| percent(s.max_box_acc_v2.flatten())),
        ));
        // Beside the faithfulness columns the table would pass 120 columns: `--json` and
        // the single-method report give each IoU's then.
        if !faithful {
            columns.push(Column {
                left: true,
                ..Column::new(
                    "IoU 0.3 / 0.5 / 0.7",
                    cells(&|s| {
                        s.max_box_acc_v2_by_iou.flatten().map_or_else(
                            || "—".to_string(),
                            |[a, b, c]| {
                                format!("{:.1} / {:.1} / {:.1} %", a * 100.0, b * 100.0, c * 100.0)
                            },
                        )
                    }),
                )
            });
        }
    }
    if faithful {
        let headers = crate::faithfulness_run::MethodSummary::COLUMNS;
        for (k, header) in headers.into_iter().enumerate() {
            let column = means
                .iter()
                .map(|m| m.map_or_else(|| "—".to_string(), |m| m.cells()[k].clone()))
                .collect();
            columns.push(Column::new(header, column));
        }
    }
    let mut over = Vec::new();
    if boxed {
        over.push(format!("localisation over {} boxed images", first.boxed));
    }
    if faithful {
        let measured = means.iter().flatten().map(|m| m.images).max().unwrap_or(0);
        over.push(format!("faithfulness over {measured} images"));
    }
    writeln!(out, "by method ({}):", over.join(", "))?;
    write_table(out, &columns)?;
    if boxed {
        writeln!(
            out,
            "  top-1 loc: top-1 right and its box hits a truth box (IoU ≥ 0.5); GT-known: the \
             true class's\n  box hits; boxes at 20 % of the map's maximum; thr: MaxBoxAcc's best \
             threshold"
        )?;
    }
    if v2 {
        writeln!(
            out,
            "  MaxBoxAccV2: wsolevaluation's (every region, 224 × 224, IoU 0.3/0.5/0.7 averaged)"
        )?;
    }
    if faithful {
        writeln!(
            out,
            "  faithfulness of the true class's map (else the top-1's), means: del/ins: RISE \
             deletion and\n  insertion AUC; drop: average drop; incr: increase in confidence \
             (images whose confidence rose);\n  MoRF/LeRF: ROAD most/least relevant first, the \
             mean of 20/40/60/80 %; ROAD: (LeRF − MoRF) / 2\n  (ROADCombined); ↓ lower is \
             better, ↑ higher"
        )?;
        write_road_table(out, summaries, &means)?;
    }
    Ok(())
}

/// ROAD at each percentile by method, and the faithfulness settings.
fn write_road_table(
    out: &mut impl Write,
    summaries: &[MethodSummary],
    means: &[Option<&crate::faithfulness_run::MethodSummary>],
) -> std::io::Result<()> {
    writeln!(
        out,
        "ROAD by the share of pixels replaced (most relevant first: lower is better; least: higher):"
    )?;
    let mut columns = vec![Column {
        left: true,
        ..Column::new(
            "method",
            summaries.iter().map(|m| m.method.name().into()).collect(),
        )
    }];
    let orders = [("MoRF", true), ("LeRF", false)];
    for (name, most_relevant_first) in orders {
        let values = |m: &crate::faithfulness_run::MethodSummary| {
            if most_relevant_first {
                m.road_most_relevant_first
            } else {
                m.road_least_relevant_first
            }
        };
        for (p, percentile) in ROAD_PERCENTILES.iter().enumerate() {
            let cells = means
                .iter()
                .map(|m| m.map_or_else(|| "—".to_string(), |m| format!("{:+.3}", values(m)[p])))
                .collect();
            columns.push(Column::new(&format!("{name} {percentile} %"), cells));
        }
    }
    write_table(out, &columns)?;
    if let Some(f) = summaries.iter().find_map(|m| m.faithfulness.as_ref()) {
        let settings = crate::faithfulness_run::settings_line(f.settings);
        for line in wrap(&format!("settings: {settings}"), 96) {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

/// `text` broken at spaces into lines of at most `width` characters (a longer word alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// Images and top-1 accuracy per true class, worst first.
fn write_per_class(
    out: &mut impl Write,
    outcomes: &[Outcome],
    names: &Classes,
) -> std::io::Result<()> {
    let classes = scoring::per_class(top1_pairs(outcomes));
    if !classes.is_empty() {
        writeln!(out, "per class (worst first):")?;
        for c in classes {
            writeln!(
                out,
                "  {:>6.1} %  {:>4} / {:<4}  {}",
                c.accuracy() * 100.0,
                c.top1_hits,
                c.images,
                class_name(names, c.class)
            )?;
        }
    }
    Ok(())
}

/// (true class, top-1 class) of every labelled image analysed.
fn top1_pairs<'a>(outcomes: &'a [Outcome]) -> impl Iterator<Item = (usize, usize)> + 'a {
    outcomes.iter().filter_map(|o| {
        let truth = o.item.truth.as_ref()?;
        let top1 = o.record.as_ref().ok()?.analysis.top.first()?;
        Some((truth.class, top1.index))
    })
}

/// The most frequent (true → predicted) pairs among top-1 misses.
fn write_confusions(
    out: &mut impl Write,
    outcomes: &[Outcome],
    confusions: usize,
    classes: &Classes,
) -> std::io::Result<()> {
    let pairs = scoring::confusions(top1_pairs(outcomes));
    if confusions > 0 && !pairs.is_empty() {
        writeln!(out, "most frequent confusions (true → predicted):")?;
        for c in pairs.into_iter().take(confusions) {
            writeln!(
                out,
                "  {:>4}  {} → {}",
                c.images,
                class_name(classes, c.truth),
                class_name(classes, c.predicted)
            )?;
        }
    }
    Ok(())
}
