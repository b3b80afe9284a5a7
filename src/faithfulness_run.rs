//! Faithfulness for the commands (`cam --faithfulness`, `eval --faithfulness`): a class's map
//! by a method of the CAM family, measured by the engine ([`crate::model::faithfulness`]),
//! kept in the result store beside the image's analysis so a second run reads it; and the
//! dataset's means, as a summary a table of methods can take a row from.

use std::ops::ControlFlow;

use serde::Serialize;

use crate::analysis::{self, AnalysisError, ImageKey};
use crate::model::cam::CamGrid;
use crate::model::cam_methods::CamMethod;
use crate::model::classifier::AnalyzeError;
use crate::model::faithfulness::upsample_like_opencv;
use crate::model::faithfulness::{ROAD_PERCENTILES, Scores, Settings, measure_class};
use crate::model::preprocess::Prepared;
use crate::model::{Classifier, ResizeMode};
use crate::pipeline;
use crate::results::Results;
use crate::store::{MapKey, StoreError};

/// What a measurement is busy with, for its progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Score-CAM's masked passes, which make the map.
    Map,
    /// The perturbed inputs the scores read.
    Scores,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Map => "map",
            Self::Scores => "faithfulness",
        }
    }
}

/// `progress(stage, done, total)` after each batch of forward passes; `Break` stops.
pub type Progress<'a> = dyn FnMut(Stage, usize, usize) -> ControlFlow<()> + 'a;

/// The scores of `grid` (a raw map of `class` from the prepared input's forward pass), brought
/// to the input's size as pytorch-grad-cam does; `None` when `progress` stopped it.
pub fn measure_grid(
    classifier: &Classifier,
    prepared: &Prepared,
    class: usize,
    grid: &CamGrid,
    settings: Settings,
    progress: &mut Progress,
) -> Result<Option<Scores>, AnalyzeError> {
    let (width, height) = prepared.input;
    let map = upsample_like_opencv(
        &grid.normalised(),
        grid.width,
        grid.height,
        width as usize,
        height as usize,
    );
    let batch = pipeline::batch_size(classifier.device());
    Ok(measure_class(
        classifier.model(),
        &prepared.tensor,
        class,
        &map,
        settings,
        batch,
        &mut |done, total| progress(Stage::Scores, done, total),
    )?)
}

/// The scores of `class`'s map by `method` on a prepared input: the map made (one forward
/// pass; Score-CAM's a channel), then measured.
pub fn measure_map(
    classifier: &Classifier,
    prepared: &Prepared,
    class: usize,
    method: CamMethod,
    settings: Settings,
    progress: &mut Progress,
) -> Result<Option<Scores>, AnalyzeError> {
    let batch = pipeline::score_cam_batch(classifier.device());
    let maps = classifier.method_maps(prepared, &[class], method, batch, &mut |done, total| {
        progress(Stage::Map, done, total)
    })?;
    match maps.as_deref() {
        Some([grid]) => measure_grid(classifier, prepared, class, grid, settings, progress),
        _ => Ok(None),
    }
}

/// One image of a dataset whose map is to be measured.
#[derive(Debug, Clone)]
pub struct Request {
    pub key: ImageKey,
    /// The true class where the image is labelled (the WSOL convention), else the top-1.
    pub class: usize,
    /// The map to measure where it is made already (Score-CAM's, whose passes are the
    /// cost); `None`: made again by the method from one forward pass.
    pub map: Option<CamGrid>,
}

/// How a dataset's measurement went.
#[derive(Debug)]
pub struct Measured {
    /// Each request's scores, why it has none, or `None` when the run stopped before it.
    pub scores: Vec<Option<Result<Scores, String>>>,
    /// How many came from the store.
    pub from_store: usize,
    /// Whether `progress` stopped the run.
    pub stopped: bool,
}

/// Where a dataset's measurement is.
pub enum Event<'a> {
    /// Starting the images the store lacks: how many.
    Start { missing: usize },
    /// Working on an image: its forward passes.
    Passes {
        stage: Stage,
        done: usize,
        total: usize,
    },
    /// Request `index` measured (or failed), and why its scores could not be kept if not.
    Finished {
        index: usize,
        not_stored: Option<&'a StoreError>,
    },
}

/// The scores of every request's map by `method`: from the store where it holds them, else
/// measured (the image decoded and prepared in `resize` mode again) and stored one by one, so
/// an interrupted run loses only the image in flight. `event` returning `Break` stops.
pub fn measure_dataset(
    classifier: &Classifier,
    results: &Results,
    requests: &[Request],
    method: CamMethod,
    settings: Settings,
    event: &mut dyn FnMut(Event) -> ControlFlow<()>,
) -> Measured {
    let settings_key = settings.key();
    let map_key = |r: &Request| MapKey {
        method,
        class: r.class,
        settings: &settings_key,
    };
    let mut scores: Vec<Option<Result<Scores, String>>> = requests
        .iter()
        .map(|r| results.stored_faithfulness(&r.key, map_key(r)).map(Ok))
        .collect();
    let from_store = scores.iter().filter(|s| s.is_some()).count();
    let missing: Vec<usize> = (0..requests.len())
        .filter(|&i| scores[i].is_none())
        .collect();
    let mut stopped = event(Event::Start {
        missing: missing.len(),
    })
    .is_break();
    for i in missing {
        if stopped {
            break;
        }
        let request = &requests[i];
        let measured = measure_file(
            classifier,
            results.resize(),
            request,
            method,
            settings,
            &mut |stage, done, total| event(Event::Passes { stage, done, total }),
        );
        let outcome = match measured {
            Ok(None) => {
                stopped = true;
                break;
            }
            Ok(Some(s)) => Ok(s),
            Err(e) => Err(crate::model::chain(&e)),
        };
        let not_stored = match &outcome {
            Ok(s) => results
                .put_faithfulness(&request.key, map_key(request), s)
                .err(),
            Err(_) => None,
        };
        scores[i] = Some(outcome);
        stopped = event(Event::Finished {
            index: i,
            not_stored: not_stored.as_ref(),
        })
        .is_break();
    }
    Measured {
        scores,
        from_store,
        stopped,
    }
}

fn measure_file(
    classifier: &Classifier,
    resize: ResizeMode,
    request: &Request,
    method: CamMethod,
    settings: Settings,
    progress: &mut Progress,
) -> Result<Option<Scores>, AnalysisError> {
    let (_, prepared) = analysis::prepare(&request.key.path, resize, classifier)?;
    crate::jobs::contain_panic(|| {
        if let Some(grid) = &request.map {
            return measure_grid(
                classifier,
                &prepared,
                request.class,
                grid,
                settings,
                progress,
            )
            .map_err(AnalysisError::from);
        }
        measure_map(
            classifier,
            &prepared,
            request.class,
            method,
            settings,
            progress,
        )
        .map_err(AnalysisError::from)
    })
}

/// One image's scores as `--json` gives them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageScores {
    /// The class whose map was measured.
    pub class: usize,
    pub confidence: f32,
    pub cam_mult_change: f32,
    /// max(−change, 0) / confidence: this image's share of the average drop.
    pub drop: f32,
    pub increased: bool,
    pub deletion_auc: f32,
    pub insertion_auc: f32,
    pub road_most_relevant_first: [f32; 4],
    pub road_least_relevant_first: [f32; 4],
    pub road_combined: f32,
}

impl ImageScores {
    pub fn of(class: usize, s: &Scores) -> Self {
        Self {
            class,
            confidence: s.confidence,
            cam_mult_change: s.cam_mult_change,
            drop: s.drop(),
            increased: s.increased(),
            deletion_auc: s.deletion_auc,
            insertion_auc: s.insertion_auc,
            road_most_relevant_first: s.road_most_relevant_first,
            road_least_relevant_first: s.road_least_relevant_first,
            road_combined: s.road_combined(),
        }
    }
}

/// The settings as `--json` states them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingsJson {
    pub deletion_substrate: &'static str,
    pub insertion_substrate: &'static str,
    /// Pixels a step of the deletion and insertion curves.
    pub step: usize,
    pub road_percentiles: [f64; 4],
    pub road_noise: f64,
    pub road_seed: u64,
}

/// Deletion's substrate, in words.
pub const DELETION_SUBSTRATE: &str = "zero in the normalised input (the mean colour)";
/// Insertion's substrate, in words.
pub const INSERTION_SUBSTRATE: &str = "the input blurred (11 × 11 Gaussian, σ = 5)";

impl SettingsJson {
    pub fn of(s: Settings) -> Self {
        Self {
            deletion_substrate: DELETION_SUBSTRATE,
            insertion_substrate: INSERTION_SUBSTRATE,
            step: s.step,
            road_percentiles: ROAD_PERCENTILES,
            // As written (0.01), not as the f32 nearest it widens (0.009999999776).
            road_noise: s.noise.amount.to_string().parse().unwrap_or_default(),
            road_seed: s.noise.seed,
        }
    }
}

/// The settings in one line, for a report.
pub fn settings_line(s: Settings) -> String {
    let percentiles: Vec<String> = ROAD_PERCENTILES.iter().map(|p| format!("{p}")).collect();
    format!(
        "deletion to {DELETION_SUBSTRATE}, insertion from {INSERTION_SUBSTRATE}, {} pixels a \
         step; ROAD at {} % with noise {} × N(0, 1), seed {}",
        s.step,
        percentiles.join("/"),
        s.noise.amount,
        s.noise.seed
    )
}

/// One method's faithfulness over a dataset: the means of its images' scores (fractions
/// 0..1 for the drop and the increase, as every `--json` rate).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSummary {
    pub method: &'static str,
    /// Images measured.
    pub images: usize,
    pub deletion_auc: f64,
    pub insertion_auc: f64,
    /// Grad-CAM++'s average drop: the mean of max(−change, 0) / confidence.
    pub average_drop: f64,
    /// Grad-CAM++'s increase in confidence: the share of images whose confidence rose.
    pub increase_in_confidence: f64,
    pub road_percentiles: [f64; 4],
    pub road_most_relevant_first: [f64; 4],
    pub road_least_relevant_first: [f64; 4],
    pub road_most_relevant_first_mean: f64,
    pub road_least_relevant_first_mean: f64,
    /// pytorch-grad-cam's `ROADCombined`: (LeRF mean − MoRF mean) / 2.
    pub road_combined: f64,
}

fn average(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values {
        sum += v;
        n += 1;
    }
    sum / n.max(1) as f64
}

impl MethodSummary {
    /// The means of `scores` (one a measured image); `None` for no image.
    pub fn of(method: CamMethod, scores: &[Scores]) -> Option<Self> {
        if scores.is_empty() {
            return None;
        }
        let of = |f: &dyn Fn(&Scores) -> f32| average(scores.iter().map(|s| f64::from(f(s))));
        let per_percentile = |f: &dyn Fn(&Scores) -> [f32; 4]| -> [f64; 4] {
            std::array::from_fn(|p| average(scores.iter().map(|s| f64::from(f(s)[p]))))
        };
        let morf = per_percentile(&|s| s.road_most_relevant_first);
        let lerf = per_percentile(&|s| s.road_least_relevant_first);
        let morf_mean = morf.iter().sum::<f64>() / morf.len() as f64;
        let lerf_mean = lerf.iter().sum::<f64>() / lerf.len() as f64;
        Some(Self {
            method: method.name(),
            images: scores.len(),
            deletion_auc: of(&|s| s.deletion_auc),
            insertion_auc: of(&|s| s.insertion_auc),
            average_drop: of(&|s| s.drop()),
            increase_in_confidence: of(&|s| f32::from(u8::from(s.increased()))),
            road_percentiles: ROAD_PERCENTILES,
            road_most_relevant_first: morf,
            road_least_relevant_first: lerf,
            road_most_relevant_first_mean: morf_mean,
            road_least_relevant_first_mean: lerf_mean,
            road_combined: (lerf_mean - morf_mean) / 2.0,
        })
    }

    /// The headers of [`Self::cells`], for a table with a row a method: short, so that the
    /// table stays within 120 columns beside the localisation's (the report explains them;
    /// ↓ lower is better, ↑ higher).
    pub const COLUMNS: [&'static str; 7] =
        ["del↓", "ins↑", "drop↓", "incr↑", "MoRF↓", "LeRF↑", "ROAD↑"];

    /// This method's row of a methods table: the means, drop and increase in percent.
    pub fn cells(&self) -> [String; 7] {
        [
            format!("{:.3}", self.deletion_auc),
            format!("{:.3}", self.insertion_auc),
            format!("{:.1} %", self.average_drop * 100.0),
            format!("{:.1} %", self.increase_in_confidence * 100.0),
            format!("{:+.3}", self.road_most_relevant_first_mean),
            format!("{:+.3}", self.road_least_relevant_first_mean),
            format!("{:+.3}", self.road_combined),
        ]
    }

    /// The lines of a report, each metric with what better means.
    pub fn lines(&self) -> Vec<String> {
        let at = |v: &[f64; 4]| {
            v.iter()
                .map(|x| format!("{x:+.3}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        let percentiles: Vec<String> = self
            .road_percentiles
            .iter()
            .map(|p| format!("{:>6}", format!("{p} %")))
            .collect();
        vec![
            format!(
                "  deletion AUC      {:>8.4}  (RISE; lower is better)",
                self.deletion_auc
            ),
            format!(
                "  insertion AUC     {:>8.4}  (RISE; higher is better)",
                self.insertion_auc
            ),
            format!(
                "  average drop      {:>8}  (the map multiplied in; lower is better)",
                format!("{:.1} %", self.average_drop * 100.0)
            ),
            format!(
                "  increase          {:>8}  (of images whose confidence rose; higher is better)",
                format!("{:.1} %", self.increase_in_confidence * 100.0)
            ),
            format!("  ROAD at              {}    mean", percentiles.join("  ")),
            format!(
                "    most relevant first  {}  {:+.3}  (lower is better)",
                at(&self.road_most_relevant_first),
                self.road_most_relevant_first_mean
            ),
            format!(
                "    least relevant first {}  {:+.3}  (higher is better)",
                at(&self.road_least_relevant_first),
                self.road_least_relevant_first_mean
            ),
            format!(
                "  ROAD combined     {:>+8.4}  ((LeRF − MoRF) / 2, pytorch-grad-cam's ROADCombined)",
                self.road_combined
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(confidence: f32, change: f32, morf: f32, lerf: f32, del: f32, ins: f32) -> Scores {
        Scores {
            confidence,
            cam_mult_change: change,
            road_most_relevant_first: [morf, morf - 0.1, morf - 0.2, morf - 0.3],
            road_least_relevant_first: [lerf, lerf, lerf + 0.1, lerf + 0.1],
            deletion_auc: del,
            insertion_auc: ins,
        }
    }

    #[test]
    fn dataset_means_checked_by_hand() {
        let all = [
            // Dropped by 0.2 of 0.8: 25 %.
            scores(0.8, -0.2, -0.1, 0.0, 0.1, 0.5),
            // Rose: no drop, one increase.
            scores(0.5, 0.1, -0.2, 0.2, 0.3, 0.7),
            // Dropped by all of 0.4: 100 %.
            scores(0.4, -0.4, 0.0, -0.2, 0.2, 0.3),
            // No change: neither.
            scores(0.6, 0.0, 0.3, 0.0, 0.2, 0.5),
        ];
        let s = MethodSummary::of(CamMethod::GradCamPlusPlus, &all).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert_eq!((s.method, s.images), ("gradcam++", 4));
        assert!(close(s.average_drop, (0.25 + 0.0 + 1.0 + 0.0) / 4.0));
        assert!(close(s.increase_in_confidence, 0.25));
        assert!(close(s.deletion_auc, 0.2));
        assert!(close(s.insertion_auc, 0.5));
        // MoRF at 20 %: (−0.1 − 0.2 + 0 + 0.3) / 4 = 0; each later percentile 0.1 lower.
        for (p, want) in [0.0, -0.1, -0.2, -0.3].into_iter().enumerate() {
            assert!(close(s.road_most_relevant_first[p], want), "{p}");
        }
        // LeRF at 20 % and 40 %: 0; at 60 % and 80 %: 0.1.
        assert!(close(s.road_least_relevant_first[1], 0.0));
        assert!(close(s.road_least_relevant_first[3], 0.1));
        assert!(close(s.road_most_relevant_first_mean, -0.15));
        assert!(close(s.road_least_relevant_first_mean, 0.05));
        assert!(close(s.road_combined, 0.1));
        assert_eq!(s.cells()[2], "31.2 %");
        assert_eq!(s.cells()[3], "25.0 %");
        assert_eq!(MethodSummary::of(CamMethod::Cam, &[]), None);
    }

    #[test]
    fn the_summary_of_one_image_is_its_scores() {
        let one = scores(0.9, -0.3, -0.2, 0.1, 0.15, 0.6);
        let s = MethodSummary::of(CamMethod::Cam, &[one]).unwrap();
        let image = ImageScores::of(7, &one);
        assert!((s.average_drop - f64::from(image.drop)).abs() < 1e-6);
        assert!((s.road_combined - f64::from(image.road_combined)).abs() < 1e-6);
        assert!((s.deletion_auc - f64::from(image.deletion_auc)).abs() < 1e-9);
    }
}
