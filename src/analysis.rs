//! One analysis as camview keeps it: the forward pass (top classes, their raw CAMs, and a
//! pinned true class with its rank), plus the CAM boxes the localisation metrics need; the
//! image file it is of; and why an image may have none. Shared by `camview eval` and the
//! browser, which both read and write the result store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use image::RgbImage;

use crate::jobs::Panicked;
use crate::model::cam::{self, BBOX_THRESHOLD, BBox};
use crate::model::classifier::AnalyzeError;
use crate::model::preprocess::{ImageError, Prepared, load_rgb};
use crate::model::{Analysis, Classifier, ResizeMode};
use crate::overlay;

/// How many classes every analysis keeps.
pub const TOP_K: usize = 5;

/// The thresholds of the localisation sweep (Choe et al., CVPR 2020): 0.00, 0.01, … 0.99 of
/// the CAM's maximum.
pub const SWEEP_STEPS: usize = 100;

/// Everything kept of one analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The photo's size (after EXIF orientation).
    pub size: (u32, u32),
    pub analysis: Analysis,
    /// The box of the top-1 class's CAM at the paper's threshold, in original pixels.
    pub top1_box: Option<BBox>,
    /// When the analysis was made for a labelled image: its class (in `analysis.top`, with its
    /// rank, even outside the top 5) and the box of its CAM at each sweep threshold.
    pub truth: Option<TruthRecord>,
}

/// The true class of a labelled image and where its CAM puts it.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthRecord {
    pub class: usize,
    /// `SWEEP_STEPS` boxes, at threshold `i / SWEEP_STEPS`.
    pub boxes: Vec<Option<BBox>>,
}

impl Record {
    /// True when the record is the one wanted for an image whose true class is `truth`: it
    /// pins that class (any record serves an image without one).
    pub fn serves(&self, truth: Option<usize>) -> bool {
        truth.is_none() || self.truth.as_ref().map(|t| t.class) == truth
    }
}

/// One version of one image file: a result is reused only while the file's size and
/// modification time are unchanged. The browser's caches and the result store key by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageKey {
    pub path: PathBuf,
    pub size: u64,
    /// `None` when the file could not be read: such a key finds no stored result.
    pub modified: Option<SystemTime>,
}

impl ImageKey {
    /// The key of `path` as it is on disk now.
    pub fn of(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        Self {
            path: path.to_path_buf(),
            size: meta.as_ref().map_or(0, std::fs::Metadata::len),
            modified: meta.and_then(|m| m.modified().ok()),
        }
    }
}

/// Why an image has no analysis. Each says its own part; [`crate::model::chain`] writes it
/// with its causes. Clone, as one failed batch is every image's error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AnalysisError {
    /// The photo cannot be read or decoded; the error names the file.
    #[error(transparent)]
    Image(Arc<ImageError>),
    #[error("cannot make the network input")]
    Input(#[source] Arc<candle_core::Error>),
    #[error("the network failed")]
    Network(#[source] Arc<AnalyzeError>),
    /// No thread could be started for the analysis.
    #[error("cannot start the analysis")]
    Start(#[source] Arc<std::io::Error>),
    /// The run ended before the image's turn.
    #[error("not analysed: the run ended before it")]
    Unfinished,
    /// A bug in camview, contained.
    #[error(transparent)]
    Bug(#[from] Panicked),
}

impl From<AnalyzeError> for AnalysisError {
    fn from(e: AnalyzeError) -> Self {
        Self::Network(Arc::new(e))
    }
}

/// The longest side, in pixels, of the heat maps boxes are found on: a larger photo has its
/// boxes found on a map scaled to this and scaled back. The CAM is 32 times coarser than the
/// network input, so a finer map moves a box edge by a pixel or two of the photo, while the
/// threshold sweep costs in proportion to the map's pixels.
const BOX_MAP_SIDE: u32 = 160;

/// Decodes and prepares `path` for `classifier`: its preprocessing, on its device (the part
/// that can run beside a forward pass).
pub fn prepare(
    path: &Path,
    resize: ResizeMode,
    classifier: &Classifier,
) -> Result<(RgbImage, Prepared), AnalysisError> {
    let img = load_rgb(path).map_err(|e| AnalysisError::Image(Arc::new(e)))?;
    let prepared = classifier
        .prepare(&img, resize)
        .map_err(|e| AnalysisError::Input(Arc::new(e)))?;
    Ok((img, prepared))
}

/// Runs the network on a prepared image of a photo of `size` and makes the record: the top
/// classes, `truth` pinned when it is given, the top-1 box and the true class's boxes at
/// every threshold.
pub fn analyse(
    classifier: &Classifier,
    size: (u32, u32),
    prepared: &Prepared,
    truth: Option<usize>,
) -> Result<Record, AnalysisError> {
    let analysis = classifier.analyze(prepared, TOP_K, truth)?;
    Ok(record(analysis, size, truth))
}

/// The record of `analysis` for a photo of `size`.
pub fn record(analysis: Analysis, size: (u32, u32), truth: Option<usize>) -> Record {
    let map = box_map_size(size);
    let sweep = |slot: usize| -> Vec<Option<BBox>> {
        overlay::heat(&analysis, slot, size, map).map_or_else(
            || vec![None; SWEEP_STEPS],
            |heat| {
                cam::bbox_sweep(&heat, SWEEP_STEPS)
                    .into_iter()
                    .map(|b| b.map(|b| b.scaled(map, size)))
                    .collect()
            },
        )
    };
    let truth = truth.map(|class| {
        let slot = analysis.top.iter().position(|p| p.index == class);
        let boxes = slot.map_or_else(|| vec![None; SWEEP_STEPS], sweep);
        (slot, TruthRecord { class, boxes })
    });
    // When the prediction is right its box is the sweep's at the paper's threshold (the
    // sweep gives exactly the box `bbox` would): one heat map and one labelling fewer.
    let top1_box = match &truth {
        Some((Some(0), truth)) => truth_box_at_paper_threshold(truth),
        _ => paper_box(&analysis, 0, size),
    };
    Record {
        size,
        analysis,
        top1_box,
        truth: truth.map(|(_, truth)| truth),
    }
}

/// The box of the map of `analysis`' class `slot` at the paper's threshold (20 % of its
/// maximum, the largest region), in the pixels of a photo of `size`, found as the stored
/// boxes are: on a heat map of at most [`BOX_MAP_SIDE`] pixels a side.
pub fn paper_box(analysis: &Analysis, slot: usize, size: (u32, u32)) -> Option<BBox> {
    let map = box_map_size(size);
    overlay::heat(analysis, slot, size, map)
        .and_then(|heat| cam::bbox(&heat, BBOX_THRESHOLD))
        .map(|b| b.scaled(map, size))
}

fn box_map_size((w, h): (u32, u32)) -> (u32, u32) {
    let longest = w.max(h).max(1);
    if longest <= BOX_MAP_SIDE {
        (w.max(1), h.max(1))
    } else {
        overlay::fitted_size((w, h), (BOX_MAP_SIDE, BOX_MAP_SIDE))
    }
}

/// The true class's box at the paper's threshold (20 % of the maximum), from its sweep.
pub fn truth_box_at_paper_threshold(truth: &TruthRecord) -> Option<BBox> {
    let step = (BBOX_THRESHOLD * SWEEP_STEPS as f32).round() as usize;
    truth.boxes.get(step).copied().flatten()
}
