//! `camview eval DIR`: the model and its CAMs measured on a labelled folder: accuracy, the
//! most frequent confusions and, with boxes, the CAM paper's localisation (top-1 and
//! GT-known at 20 % of the maximum) and MaxBoxAcc over a threshold sweep. Results come from
//! the store where they are there; the rest are analysed, decoding on one thread while the
//! forward pass runs on the others, and stored one by one, so an interrupted run loses only
//! the images in flight.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::faithfulness::{
    EvalFaithfulness, FaithfulnessArgs, INTERRUPTED, SummaryJson, measure_eval,
};
use super::{ModelArgs, StoreArgs};
use crate::analysis::{
    self, AnalysisError, ImageKey, Record, SWEEP_STEPS, truth_box_at_paper_threshold,
};
use crate::dataset::{self, Dataset, Item, LabelSource};
use crate::faithfulness_run::{ImageScores, Request};
use crate::model::Classes;
use crate::model::Classifier;
use crate::model::cam::BBox;
use crate::model::cam_methods::CamMethod;
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
    /// One CSV row per image (without faithfulness columns: not with --faithfulness).
    #[arg(long, conflicts_with = "faithfulness")]
    pub csv: bool,
    /// How many of the most frequent confusions to list.
    #[arg(long, value_name = "K", default_value_t = 10)]
    pub top_confusions: usize,
    /// Write each image's map — of its true class where it is labelled (the WSOL
    /// convention), else of the top-1 class — into DIR as a float32 .npy at the network
    /// input's size, scaled to 0..1, at DIR/<path below the dataset folder>.npy.
    #[arg(long, value_name = "DIR")]
    pub save_cams: Option<PathBuf>,
    #[command(flatten)]
    pub faithfulness: FaithfulnessArgs,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: &EvalArgs) -> anyhow::Result<i32> {
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
    let mut records: Vec<Option<Result<Record, AnalysisError>>> =
        targets.iter().map(|t| results.stored(t).map(Ok)).collect();
    analyse_missing(&dataset, &classifier, &results, &targets, &mut records)?;

    let outcomes: Vec<Outcome> = dataset
        .items
        .iter()
        .zip(records)
        .map(|(item, record)| Outcome::of(item, record.unwrap_or(Err(AnalysisError::Unfinished))))
        .collect();
    let mut unsaved = 0;
    if let Some(dir) = &args.save_cams {
        for (item, outcome) in dataset.items.iter().zip(&outcomes) {
            let Ok(record) = &outcome.record else {
                continue;
            };
            let top = &record.analysis.top;
            let index = item
                .truth
                .as_ref()
                .and_then(|t| top.iter().position(|p| p.index == t.class))
                .unwrap_or(0);
            let below = item.path.strip_prefix(&args.dir).unwrap_or(&item.path);
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
    }
    let faithfulness = if args.faithfulness.faithfulness {
        let requests: Vec<Option<Request>> = outcomes
            .iter()
            .zip(&targets)
            .map(|(o, target)| faithfulness_request(o, target))
            .collect();
        let name = |i: usize| dataset.items[i].relative.clone();
        let Some(measured) = measure_eval(
            &classifier,
            &results,
            &requests,
            CamMethod::Cam,
            args.faithfulness.settings(),
            &name,
        ) else {
            return Ok(INTERRUPTED);
        };
        Some(measured)
    } else {
        None
    };
    let mut summary = Summary::of(&outcomes);
    summary.faithfulness = faithfulness.as_ref().map(EvalFaithfulness::summary_json);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = if args.json {
        write_json(
            &mut out,
            &outcomes,
            &summary,
            &dataset.classes,
            faithfulness.as_ref(),
        )
    } else if args.csv {
        write_csv(&mut out, &outcomes, &dataset.classes)
    } else {
        write_report(
            &mut out,
            &dataset,
            &outcomes,
            &summary,
            args.top_confusions,
            faithfulness.as_ref(),
        )
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e.into());
    }
    let unmeasured = faithfulness.as_ref().map_or(0, EvalFaithfulness::failed);
    Ok(i32::from(
        summary.failed > 0 || unsaved > 0 || unmeasured > 0,
    ))
}

/// Which map of an analysed image `--faithfulness` measures: the true class's where it is
/// labelled (the WSOL convention), else the top-1's. None for an image without an analysis.
fn faithfulness_request(outcome: &Outcome, target: &Target) -> Option<Request> {
    let record = outcome.record.as_ref().ok()?;
    let class = match &outcome.item.truth {
        Some(truth) => truth.class,
        None => record.analysis.top.first()?.index,
    };
    Some(Request {
        key: target.key.clone(),
        class,
    })
}

/// Analyses the images the store lacks (`records` without one) through the results service,
/// which stores each as it comes, so an interrupted run loses only the images in flight.
fn analyse_missing(
    dataset: &Dataset,
    classifier: &Classifier,
    results: &Results,
    targets: &[Target],
    records: &mut [Option<Result<Record, AnalysisError>>],
) -> anyhow::Result<()> {
    let todo: Vec<usize> = (0..targets.len())
        .filter(|&i| records[i].is_none())
        .collect();
    let missing: Vec<Target> = todo.iter().map(|&i| targets[i].clone()).collect();
    let count = todo.len();
    let started = std::time::Instant::now();
    let bar = progress(count as u64);
    let mut finished = Vec::with_capacity(count);
    let run = Run::new(classifier, results.resize(), analysis::TOP_K);
    results.analyse(classifier, &missing, run, |j, fresh| {
        let i = todo[j];
        if let Some(e) = &fresh.not_stored {
            bar.suspend(|| {
                eprintln!(
                    "camview: cannot store the result of {}: {}",
                    dataset.items[i].relative,
                    crate::model::chain(e)
                );
            });
        }
        finished.push((i, fresh.record));
        bar.inc(1);
        ControlFlow::Continue(())
    })?;
    for (i, record) in finished {
        records[i] = Some(record);
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
}

impl<'a> Outcome<'a> {
    fn of(item: &'a Item, record: Result<Record, AnalysisError>) -> Self {
        let mut o = Outcome {
            item,
            record,
            score: None,
            iou: None,
            loc_correct: None,
            gt_known_correct: None,
            sweep_hits: None,
        };
        let (Some(truth), Ok(record)) = (&item.truth, &o.record) else {
            return o;
        };
        o.score = Score::of(truth.class, &record.analysis.top);
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

#[derive(Debug, Serialize)]
struct Summary {
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
    fn of(outcomes: &[Outcome]) -> Self {
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
        Summary {
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

fn write_json(
    out: &mut impl Write,
    outcomes: &[Outcome],
    summary: &Summary,
    classes: &Classes,
    faithfulness: Option<&EvalFaithfulness>,
) -> std::io::Result<()> {
    for (i, o) in outcomes.iter().enumerate() {
        let mut line = json_image(o, classes);
        match faithfulness.and_then(|f| f.per_image[i].as_ref()) {
            Some(Ok(scores)) => line.faithfulness = Some(scores),
            Some(Err(e)) => line.faithfulness_error = Some(e),
            None => {}
        }
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
    }
    writeln!(out, "{}", serde_json::json!({ "summary": summary }))
}

fn write_csv(out: &mut impl Write, outcomes: &[Outcome], classes: &Classes) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let opt = |v: Option<String>| v.unwrap_or_default();
    w.write_record([
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
    ])?;
    for o in outcomes {
        let top1 = o.record.as_ref().ok().and_then(|r| r.analysis.top.first());
        let truth = o.item.truth.as_ref();
        w.write_record([
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
        ])?;
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
    outcomes: &[Outcome],
    s: &Summary,
    confusions: usize,
    faithfulness: Option<&EvalFaithfulness>,
) -> std::io::Result<()> {
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
    if s.boxed > 0 {
        writeln!(
            out,
            "localisation over {} boxed images (IoU ≥ 0.5):",
            s.boxed
        )?;
        writeln!(
            out,
            "  top-1 loc     {:>8}  (top-1 right and its CAM box at 20 %)",
            percent(s.loc_top1)
        )?;
        writeln!(
            out,
            "  GT-known loc  {:>8}  (the true class's CAM box at 20 %)",
            percent(s.loc_gt_known)
        )?;
        if let (Some(acc), Some(t)) = (s.max_box_acc, s.best_threshold) {
            writeln!(
                out,
                "  MaxBoxAcc     {:>8}  (best threshold {t:.2} of the maximum)",
                percent(Some(acc))
            )?;
        }
    }
    if let Some(f) = faithfulness {
        f.write_report(out)?;
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
