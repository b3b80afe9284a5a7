//! One analysis as camview keeps it: the forward pass (top classes, their raw CAMs, and a
//! pinned true class with its rank), plus the CAM boxes the localisation metrics need. Shared
//! by `camview eval` and the browser, which both read and write the result store.

use std::path::Path;

use image::RgbImage;

use crate::model::cam::{self, BBOX_THRESHOLD, BBox};
use crate::model::preprocess::{self, Prepared, load_rgb};
use crate::model::{Analysis, Classifier, ResizeMode};
use crate::overlay;
use crate::store::{Record, SWEEP_STEPS, TruthRecord};

/// How many classes every analysis keeps.
pub const TOP_K: usize = 5;

/// The longest side, in pixels, of the heat maps boxes are found on: a larger photo has its
/// boxes found on a map scaled to this and scaled back. The CAM is 32 times coarser than the
/// network input, so a finer map moves a box edge by a pixel or two of the photo, while the
/// threshold sweep costs in proportion to the map's pixels.
const BOX_MAP_SIDE: u32 = 160;

/// Decodes and prepares `path` for the network on `device` (the part that can run beside a
/// forward pass).
pub fn prepare(
    path: &Path,
    resize: ResizeMode,
    device: &candle_core::Device,
) -> anyhow::Result<(RgbImage, Prepared)> {
    let img = load_rgb(path)?;
    let prepared = preprocess::prepare(&img, resize, device)?;
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
) -> anyhow::Result<Record> {
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
        _ => overlay::heat(&analysis, 0, size, map)
            .and_then(|heat| cam::bbox(&heat, BBOX_THRESHOLD))
            .map(|b| b.scaled(map, size)),
    };
    Record {
        size,
        analysis,
        top1_box,
        truth: truth.map(|(_, truth)| truth),
    }
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
