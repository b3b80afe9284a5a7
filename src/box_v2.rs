//! MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization Methods
//! Right", CVPR 2020) as clovaai's wsolevaluation computes it (`BoxEvaluator` with
//! `multi_contour_eval`), so camview's numbers compare with the WSOL literature's:
//!
//! - the map is scaled to 0..1 and seen at 224 × 224, as `uint8(map × 255)`;
//! - at each CAM threshold t of 0, 0.001, … 0.999 the map keeps the pixels above
//!   `int(t × its uint8 maximum)`, and *every* contour OpenCV's `findContours(RETR_TREE)`
//!   finds gives a box: the outer border of each 8-connected region and the border around
//!   each hole (a 4-connected background region that does not reach the edge). A box is
//!   `boundingRect`'s `x, y, x + w, y + h`, the last two clipped to 223, compared as
//!   inclusive pixel ranges (so one pixel larger than the region on its right and bottom);
//!   no contour at all gives the box (0, 0, 0, 0);
//! - an image counts at t when the best IoU of those boxes with a truth box reaches δ; the
//!   accuracy over the images is maximised over t for each δ of 0.3, 0.5, 0.7, and
//!   MaxBoxAccV2 is the mean of the three maxima.
//!
//! camview's own MaxBoxAcc differs: the largest region only, IoU ≥ 0.5 only, 100 thresholds,
//! in the photo's pixels (docs/eval.md).
//!
//! All thresholds come from two union-find passes over the pixels rather than a labelling
//! per threshold: regions grow as the threshold falls, holes grow as it rises.

use crate::analysis::Record;
use crate::dataset::Truth;
use crate::model::faithfulness::upsample_like_opencv;

/// The side of the square frame maps and truth boxes are compared in (the network input of
/// wsolevaluation's protocol).
pub const FRAME: usize = 224;

/// The IoU thresholds whose best accuracies are averaged.
pub const IOU_THRESHOLDS: [f64; 3] = [0.3, 0.5, 0.7];

/// CAM thresholds 0, 0.001, … 0.999 (wsolevaluation's default `cam_curve_interval`).
pub const CAM_THRESHOLDS: usize = 1000;
const CAM_INTERVAL: f64 = 0.001;

/// A box in the frame's pixels, both ends included (`[x0, y0, x1, y1]`).
pub type FrameBox = [i64; 4];

/// One image's best IoU at every uint8 level: `best[k]` for the pixels above k.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelCurve {
    /// The map's largest uint8 value, which sets the levels the CAM thresholds fall on.
    pub top: u8,
    /// 256 values, level 0 to 255.
    pub best: Vec<f64>,
}

impl LevelCurve {
    /// The best IoU at CAM threshold `i` (of [`CAM_THRESHOLDS`]), as wsolevaluation cuts:
    /// `int(threshold × maximum)`.
    pub fn at_threshold(&self, i: usize) -> f64 {
        self.best[threshold_level(i, self.top)]
    }

    /// The levels at which the best IoU reaches each of [`IOU_THRESHOLDS`]: all the metric
    /// needs of an image, 100 bytes rather than 2 KB.
    pub fn hits(&self) -> LevelHits {
        let mut reached = [[0u64; 4]; 3];
        for (k, &best) in self.best.iter().enumerate() {
            for (bits, &delta) in reached.iter_mut().zip(&IOU_THRESHOLDS) {
                if best >= delta {
                    bits[k / 64] |= 1 << (k % 64);
                }
            }
        }
        LevelHits {
            top: self.top,
            reached,
        }
    }
}

/// The uint8 level CAM threshold `i` falls on for a map whose maximum is `top`.
fn threshold_level(i: usize, top: u8) -> usize {
    let threshold = i as f64 * CAM_INTERVAL;
    ((threshold * f64::from(top)) as usize).min(255)
}

/// Of one image: at which uint8 levels the best IoU reaches each IoU threshold (a bit a
/// level), and the map's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelHits {
    top: u8,
    reached: [[u64; 4]; 3],
}

impl LevelHits {
    /// Whether the image counts at CAM threshold `i` for IoU threshold `d` (an index of
    /// [`IOU_THRESHOLDS`]).
    fn at_threshold(&self, i: usize, d: usize) -> bool {
        let k = threshold_level(i, self.top);
        self.reached[d][k / 64] >> (k % 64) & 1 == 1
    }
}

/// The map (row-major, `width` × `height`, values in 0..1) as wsolevaluation reads it:
/// `uint8(map × 255)`, in float64 as its `check_scoremap_validity` demands.
pub fn to_levels(map: &[f32]) -> Vec<u8> {
    map.iter()
        .map(|&v| (f64::from(v) * 255.0).clamp(0.0, 255.0) as u8)
        .collect()
}

/// IoU of two inclusive boxes as wsolevaluation's `calculate_multiple_iou` counts it (a
/// degenerate union counts 0).
pub fn iou(a: FrameBox, b: FrameBox) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1).max(0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1).max(0);
    let inter = iw * ih;
    let area = |r: FrameBox| (r[2] - r[0] + 1) * (r[3] - r[1] + 1);
    let union = area(a) + area(b) - inter;
    if union <= 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// For the uint8 map `levels` (`width` × `height`) and the truth boxes `truth` (in its
/// pixels, inclusive), the best IoU of any contour's box with any truth box at each level.
pub fn level_curve(levels: &[u8], width: usize, height: usize, truth: &[FrameBox]) -> LevelCurve {
    assert_eq!(levels.len(), width * height, "map size");
    let best_of = |b: FrameBox| truth.iter().map(|&t| iou(b, t)).fold(0.0, f64::max);
    let (xmax, ymax) = (width as i64 - 1, height as i64 - 1);
    let mut by_level: Vec<Vec<u32>> = vec![Vec::new(); 256];
    for (i, &v) in levels.iter().enumerate() {
        by_level[usize::from(v)].push(i as u32);
    }
    let mut best = vec![best_of([0, 0, 0, 0]); 256];

    // Regions: level k keeps the pixels above k, so lowering k by one adds those of value
    // k + 1; 8-connected, as OpenCV's borders follow them.
    let mut regions = Sets::new(width * height);
    for k in (0..255usize).rev() {
        for &i in &by_level[k + 1] {
            regions.add(i as usize, width, height, Connectivity::Eight);
        }
        if regions.live.is_empty() {
            continue;
        }
        // boundingRect's x + w is one past the region, clipped to the last pixel.
        best[k] = regions
            .live
            .iter()
            .map(|&r| {
                let b = regions.bounds[r as usize];
                best_of([b[0], b[1], (b[2] + 1).min(xmax), (b[3] + 1).min(ymax)])
            })
            .fold(0.0, f64::max);
    }

    // Holes: background at level k is the pixels at or below k, so raising k adds those of
    // value k; 4-connected, and a background region touching the edge is no hole.
    let mut holes = Sets::new(width * height);
    for k in 0..255usize {
        for &i in &by_level[k] {
            holes.add(i as usize, width, height, Connectivity::Four);
        }
        // The border around a hole runs through the region's pixels next to it: the hole's
        // bounds one wider on each side, then boundingRect's one past, clipped.
        let hole_best = holes
            .live
            .iter()
            .filter(|&&r| !holes.touches_edge[r as usize])
            .map(|&r| {
                let b = holes.bounds[r as usize];
                best_of([
                    b[0] - 1,
                    b[1] - 1,
                    (b[2] + 2).min(xmax),
                    (b[3] + 2).min(ymax),
                ])
            })
            .fold(0.0, f64::max);
        best[k] = best[k].max(hole_best);
    }
    let top = levels.iter().copied().max().unwrap_or(0);
    LevelCurve { top, best }
}

/// The truth box `[x0, y0, x1, y1]` (inclusive, in the pixels of the image the network saw
/// as `region`) in the frame, as wsolevaluation's `resize_bbox` scales it: each coordinate
/// times the frame over the image's side, truncated, clipped into the frame.
pub fn frame_box(b: [f64; 4], region: [f64; 4]) -> FrameBox {
    let (rw, rh) = (
        (region[2] - region[0]).max(1e-9),
        (region[3] - region[1]).max(1e-9),
    );
    let f = FRAME as f64;
    let x = |v: f64| (((v - region[0]) * f / rw) as i64).clamp(0, FRAME as i64 - 1);
    let y = |v: f64| (((v - region[1]) * f / rh) as i64).clamp(0, FRAME as i64 - 1);
    [x(b[0]), y(b[1]), x(b[2]), y(b[3])]
}

/// The level curve of an image's true class, from its record: the class's map (of the
/// method the record was made by) in the frame — upsampled from its grid as `--save-cams`
/// writes it (OpenCV's bilinear, min–max), at 224 × 224 over the network input's region —
/// against the truth boxes of that class. `None` when the image has no box of its class or
/// the record no map of it.
pub fn record_curve(truth: &Truth, record: &Record) -> Option<LevelCurve> {
    let frame_boxes: Vec<FrameBox> = truth
        .boxes
        .iter()
        .filter(|b| b.class == truth.class)
        .map(|b| {
            let r = record.analysis.region;
            frame_box(
                [b.x0, b.y0, b.x1, b.y1].map(f64::from),
                [r.x0, r.y0, r.x1, r.y1].map(f64::from),
            )
        })
        .collect();
    if frame_boxes.is_empty() {
        return None;
    }
    let slot = record
        .analysis
        .top
        .iter()
        .position(|p| p.index == truth.class)?;
    let grid = record.analysis.cams.get(slot)?;
    let map = upsample_like_opencv(&grid.normalised(), grid.width, grid.height, FRAME, FRAME);
    Some(level_curve(&to_levels(&map), FRAME, FRAME, &frame_boxes))
}

/// MaxBoxAccV2 over a set of images.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MaxBoxAccV2 {
    /// The mean of `by_iou`.
    pub mean: f64,
    /// The best accuracy (0..1) at each of [`IOU_THRESHOLDS`].
    pub by_iou: [f64; 3],
    /// The CAM threshold each best accuracy was reached at (the lowest among equals).
    pub best_threshold: [f64; 3],
}

/// MaxBoxAccV2 over images given by their hits; `None` without images.
pub fn max_box_acc_v2<'a>(images: impl IntoIterator<Item = &'a LevelHits>) -> Option<MaxBoxAccV2> {
    let mut hits = vec![[0usize; 3]; CAM_THRESHOLDS];
    let mut count = 0usize;
    for image in images {
        count += 1;
        for (i, counts) in hits.iter_mut().enumerate() {
            for (d, n) in counts.iter_mut().enumerate() {
                *n += usize::from(image.at_threshold(i, d));
            }
        }
    }
    let images = count;
    if images == 0 {
        return None;
    }
    let mut by_iou = [0.0; 3];
    let mut best_threshold = [0.0; 3];
    for d in 0..3 {
        let first_best =
            (0..CAM_THRESHOLDS).fold(0, |b, i| if hits[i][d] > hits[b][d] { i } else { b });
        by_iou[d] = hits[first_best][d] as f64 / images as f64;
        best_threshold[d] = first_best as f64 * CAM_INTERVAL;
    }
    Some(MaxBoxAccV2 {
        mean: by_iou.iter().sum::<f64>() / 3.0,
        by_iou,
        best_threshold,
    })
}

#[derive(Clone, Copy)]
enum Connectivity {
    Four,
    Eight,
}

/// Disjoint sets of pixels with their bounds, the live roots listed (for the per-level scan)
/// and whether a set touches the image's edge.
struct Sets {
    parent: Vec<u32>,
    size: Vec<u32>,
    /// `[x0, y0, x1, y1]`, inclusive, valid at roots.
    bounds: Vec<[i64; 4]>,
    touches_edge: Vec<bool>,
    /// The roots, and each root's place among them.
    live: Vec<u32>,
    place: Vec<u32>,
    added: Vec<bool>,
}

impl Sets {
    fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
            bounds: vec![[0; 4]; n],
            touches_edge: vec![false; n],
            live: Vec::new(),
            place: vec![0; n],
            added: vec![false; n],
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] as usize != i {
            let up = self.parent[self.parent[i] as usize];
            self.parent[i] = up;
            i = up as usize;
        }
        i
    }

    /// Adds pixel `i` and joins it to its neighbours already added.
    fn add(&mut self, i: usize, width: usize, height: usize, connectivity: Connectivity) {
        let (x, y) = (i % width, i / width);
        self.added[i] = true;
        self.bounds[i] = [x as i64, y as i64, x as i64, y as i64];
        self.touches_edge[i] = x == 0 || y == 0 || x + 1 == width || y + 1 == height;
        self.place[i] = self.live.len() as u32;
        self.live.push(i as u32);
        let eight = matches!(connectivity, Connectivity::Eight);
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                if (dx == 0 && dy == 0) || (!eight && dx != 0 && dy != 0) {
                    continue;
                }
                let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if self.added[j] {
                    self.union(i, j);
                }
            }
        }
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a as u32;
        self.size[a] += self.size[b];
        let (p, q) = (self.bounds[a], self.bounds[b]);
        self.bounds[a] = [
            p[0].min(q[0]),
            p[1].min(q[1]),
            p[2].max(q[2]),
            p[3].max(q[3]),
        ];
        self.touches_edge[a] |= self.touches_edge[b];
        // b is no root any more.
        let at = self.place[b] as usize;
        self.live.swap_remove(at);
        if let Some(&moved) = self.live.get(at) {
            self.place[moved as usize] = at as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An 11 × 9 map drawn by hand: a ring of 200, two pixels thick, around a hole of 0
    /// (x 3..=4, y 3..=4), and a lone pixel of 100 at (9, 3), the rest 0. OpenCV 5.1's
    /// `findContours` gives it, at levels 0 to 99, the boxes (1, 1, 7, 7) (the ring),
    /// (2, 2, 6, 6) (the hole's border) and (9, 3, 10, 4) (the pixel); from 100 to 199 the
    /// first two.
    const MAP: [&str; 9] = [
        "...........",
        ".RRRRRR....",
        ".RRRRRR....",
        ".RR..RR..p.",
        ".RR..RR....",
        ".RRRRRR....",
        ".RRRRRR....",
        "...........",
        "...........",
    ];

    fn levels() -> Vec<u8> {
        MAP.iter()
            .flat_map(|row| {
                row.chars().map(|c| match c {
                    'R' => 200,
                    'p' => 100,
                    _ => 0,
                })
            })
            .collect()
    }

    #[test]
    fn every_contour_counts_holes_included() {
        let levels = levels();
        let curve = |truth: FrameBox| level_curve(&levels, 11, 9, &[truth]);
        let ring = curve([1, 1, 7, 7]);
        assert_eq!(ring.top, 200);
        for k in [0, 99, 100, 199] {
            assert_eq!(ring.best[k], 1.0, "level {k}");
        }
        // From 200 on nothing is left: the box (0, 0, 0, 0).
        assert_eq!(ring.best[200], iou([0, 0, 0, 0], [1, 1, 7, 7]));
        // The hole's border is a box of its own, which the largest region's box (IoU
        // 25 / 49 with it) is not.
        let hole = curve([2, 2, 6, 6]);
        assert_eq!(hole.best[0], 1.0);
        assert_eq!(hole.best[150], 1.0);
        assert!((iou([1, 1, 7, 7], [2, 2, 6, 6]) - 25.0 / 49.0).abs() < 1e-12);
        let pixel = curve([9, 3, 10, 4]);
        assert_eq!(pixel.best[99], 1.0);
        assert!(pixel.best[100] < 1.0, "gone at 100");
    }

    #[test]
    fn a_hole_open_to_the_edge_is_no_hole() {
        // A "C" open to the top edge: its inside is background reaching the edge.
        let rows = ["R.R", "R.R", "RRR"];
        let levels: Vec<u8> = rows
            .iter()
            .flat_map(|r| r.chars().map(|c| if c == 'R' { 9 } else { 0 }))
            .collect();
        // Only the C's box (0..=2 clipped, 0..=2 clipped).
        let c = level_curve(&levels, 3, 3, &[[1, 0, 1, 1]]);
        assert_eq!(c.best[0], iou([0, 0, 2, 2], [1, 0, 1, 1]));
    }

    #[test]
    fn thresholds_fall_on_levels_as_wsolevaluation_truncates() {
        let curve = LevelCurve {
            top: 254,
            best: (0..256).map(|k| k as f64).collect(),
        };
        // int(0.5 × 254) = 127; int(0.999 × 254) = 253; int(0.001 × 254) = 0.
        assert_eq!(curve.at_threshold(500), 127.0);
        assert_eq!(curve.at_threshold(999), 253.0);
        assert_eq!(curve.at_threshold(1), 0.0);
    }

    #[test]
    fn the_metric_averages_the_best_accuracy_of_each_iou_threshold() {
        // Image A: IoU 0.6 at every threshold; image B: 0.8 up to level 100, then 0.2.
        let a = LevelCurve {
            top: 255,
            best: vec![0.6; 256],
        };
        let b = LevelCurve {
            top: 255,
            best: (0..256).map(|k| if k < 100 { 0.8 } else { 0.2 }).collect(),
        };
        let m = max_box_acc_v2([&a.hits(), &b.hits()]).unwrap();
        assert_eq!(m.by_iou, [1.0, 1.0, 0.5]);
        assert_eq!(m.best_threshold, [0.0, 0.0, 0.0]);
        assert!((m.mean - 2.5 / 3.0).abs() < 1e-12);
        assert_eq!(max_box_acc_v2([]), None);
    }

    #[test]
    fn truth_boxes_scale_into_the_frame_as_resize_bbox_does() {
        // A 451 × 300 photo: int(100 × 224 / 451) = 49, int(299 × 224 / 300) = 223.
        let b = frame_box([100.0, 20.0, 360.0, 299.0], [0.0, 0.0, 451.0, 300.0]);
        assert_eq!(b, [49, 14, 178, 223]);
        // A centre crop x 75.5..375.5: the frame is the crop, and the box is cut to it.
        let b = frame_box([10.0, 20.0, 200.0, 299.0], [75.5, 0.0, 375.5, 300.0]);
        // int((200 − 75.5) × 224 / 300) = int(92.96) = 92.
        assert_eq!(b, [0, 14, 92, 223]);
    }
}
