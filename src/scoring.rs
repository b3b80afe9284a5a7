//! How a prediction is scored against the ground truth, shared by `camview eval` and the
//! browser's dataset review: the score of one image (its verdict, the true class's rank and
//! probability, the margin), the IoU of a CAM box with a truth box,
//! top-1 accuracy per class and the most frequent confusions.

use std::collections::HashMap;

use crate::dataset::{Truth, TruthBox};
use crate::model::Prediction;
use crate::model::cam::BBox;

/// The IoU a CAM box needs with a truth box to count as a localisation (Zhou et al.).
pub const IOU_HIT: f64 = 0.5;

/// How the model did on one labelled image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The true class is the top-1.
    Top1,
    /// The true class is among the top 5, not first.
    Top5,
    /// The true class is not among the top 5.
    Miss,
}

/// What one labelled image's result says: the one scoring of a prediction, for `eval` and
/// the browser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub verdict: Verdict,
    /// The true class's rank and probability, when the result has them (it does once the
    /// class is pinned).
    pub truth_rank: Option<usize>,
    pub truth_prob: Option<f32>,
    /// The top-1 class and its probability.
    pub top1: usize,
    pub top1_prob: f32,
    /// p(true class) minus the highest probability of another class.
    pub margin: Option<f32>,
}

impl Score {
    /// The score of `top` (best first, each with its rank) for the true class `truth`;
    /// `None` for a result without classes.
    pub fn of(truth: usize, top: &[Prediction]) -> Option<Self> {
        let first = top.first()?;
        let entry = top.iter().find(|p| p.index == truth);
        let truth_rank = entry.map(|p| p.rank);
        let truth_prob = entry.map(|p| p.prob);
        let best_other = top
            .iter()
            .filter(|p| p.index != truth)
            .map(|p| p.prob)
            .fold(0.0, f32::max);
        let verdict = match truth_rank {
            Some(1) => Verdict::Top1,
            Some(rank) if rank <= 5 => Verdict::Top5,
            _ => Verdict::Miss,
        };
        Some(Self {
            verdict,
            truth_rank,
            truth_prob,
            top1: first.index,
            top1_prob: first.prob,
            margin: truth_prob.map(|p| p - best_other),
        })
    }

    pub fn top1_correct(&self) -> bool {
        self.verdict == Verdict::Top1
    }

    pub fn top5_correct(&self) -> bool {
        self.verdict != Verdict::Miss
    }

    /// −log p(true class): how surprised the model is by the label.
    pub fn loss(&self) -> Option<f32> {
        self.truth_prob.map(|p| -p.max(f32::MIN_POSITIVE).ln())
    }
}

/// Intersection over union of a CAM box (`x0 ≤ x < x1`) and a truth box (both ends
/// included, as VOC and ILSVRC write them), counting pixels.
pub fn iou(cam: BBox, truth: &TruthBox) -> f64 {
    let (ax0, ay0, ax1, ay1) = (
        i64::from(cam.x0),
        i64::from(cam.y0),
        i64::from(cam.x1) - 1,
        i64::from(cam.y1) - 1,
    );
    let (bx0, by0, bx1, by1) = (
        i64::from(truth.x0),
        i64::from(truth.y0),
        i64::from(truth.x1),
        i64::from(truth.y1),
    );
    let area =
        |x0: i64, y0: i64, x1: i64, y1: i64| ((x1 - x0 + 1).max(0) * (y1 - y0 + 1).max(0)) as f64;
    let inter = area(ax0.max(bx0), ay0.max(by0), ax1.min(bx1), ay1.min(by1));
    let union = area(ax0, ay0, ax1, ay1) + area(bx0, by0, bx1, by1) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// The best IoU of `cam` with the truth boxes of the true class (0 without a box); `None`
/// when the image has no box of its class.
pub fn best_iou(truth: &Truth, cam: Option<BBox>) -> Option<f64> {
    let mut boxes = truth
        .boxes
        .iter()
        .filter(|b| b.class == truth.class)
        .peekable();
    boxes.peek()?;
    Some(cam.map_or(0.0, |cam| boxes.map(|t| iou(cam, t)).fold(0.0, f64::max)))
}

/// Top-1 accuracy over the images of one true class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassScore {
    pub class: usize,
    pub images: usize,
    pub top1_hits: usize,
}

impl ClassScore {
    pub fn accuracy(&self) -> f64 {
        self.top1_hits as f64 / self.images.max(1) as f64
    }
}

/// Per true class, from (true class, top-1 class) pairs: worst accuracy first, then by class.
pub fn per_class(pairs: impl IntoIterator<Item = (usize, usize)>) -> Vec<ClassScore> {
    let mut classes: HashMap<usize, ClassScore> = HashMap::new();
    for (truth, predicted) in pairs {
        let score = classes.entry(truth).or_insert(ClassScore {
            class: truth,
            images: 0,
            top1_hits: 0,
        });
        score.images += 1;
        score.top1_hits += usize::from(truth == predicted);
    }
    let mut rows: Vec<ClassScore> = classes.into_values().collect();
    rows.sort_by(|a, b| {
        a.accuracy()
            .total_cmp(&b.accuracy())
            .then(a.class.cmp(&b.class))
    });
    rows
}

/// How often the model took one class for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confusion {
    pub truth: usize,
    pub predicted: usize,
    pub images: usize,
}

/// The (true → top-1) pairs among top-1 misses, most frequent first, then by class.
pub fn confusions(pairs: impl IntoIterator<Item = (usize, usize)>) -> Vec<Confusion> {
    let mut counts: HashMap<(usize, usize), usize> = HashMap::new();
    for (truth, predicted) in pairs {
        if truth != predicted {
            *counts.entry((truth, predicted)).or_default() += 1;
        }
    }
    let mut rows: Vec<Confusion> = counts
        .into_iter()
        .map(|((truth, predicted), images)| Confusion {
            truth,
            predicted,
            images,
        })
        .collect();
    rows.sort_by(|a, b| {
        b.images
            .cmp(&a.images)
            .then((a.truth, a.predicted).cmp(&(b.truth, b.predicted)))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_counts_pixels_with_truth_boxes_inclusive() {
        let t = TruthBox {
            class: 0,
            x0: 0,
            y0: 0,
            x1: 9,
            y1: 9,
        };
        let cam = |x0, y0, x1, y1| BBox { x0, y0, x1, y1 };
        assert_eq!(iou(cam(0, 0, 10, 10), &t), 1.0, "the same pixels");
        assert_eq!(iou(cam(0, 0, 5, 10), &t), 0.5);
        assert_eq!(iou(cam(20, 20, 30, 30), &t), 0.0);
    }

    #[test]
    fn verdicts_follow_the_rank_of_the_true_class() {
        let top: Vec<Prediction> = (1..=6)
            .map(|rank| Prediction {
                rank: if rank == 6 { 40 } else { rank },
                index: rank * 10,
                label: String::new(),
                prob: 0.1,
            })
            .collect();
        let verdict = |truth| Score::of(truth, &top).unwrap().verdict;
        assert_eq!(verdict(10), Verdict::Top1);
        assert_eq!(verdict(50), Verdict::Top5);
        assert_eq!(verdict(60), Verdict::Miss, "pinned at rank 40");
        assert_eq!(verdict(7), Verdict::Miss, "absent");
        let pinned = Score::of(60, &top).unwrap();
        assert_eq!((pinned.truth_rank, pinned.top1), (Some(40), 10));
        assert!(!pinned.top5_correct() && Score::of(50, &top).unwrap().top5_correct());
        assert_eq!(Score::of(7, &top).unwrap().truth_prob, None);
        assert_eq!(Score::of(7, &[]), None);
    }

    #[test]
    fn classes_and_confusions_are_counted_and_ordered() {
        let pairs = [(1, 1), (1, 2), (2, 2), (3, 2), (3, 2), (1, 2)];
        let classes = per_class(pairs);
        let order: Vec<(usize, usize, usize)> = classes
            .iter()
            .map(|c| (c.class, c.images, c.top1_hits))
            .collect();
        assert_eq!(order, [(3, 2, 0), (1, 3, 1), (2, 1, 1)]);
        let confused: Vec<(usize, usize, usize)> = confusions(pairs)
            .iter()
            .map(|c| (c.truth, c.predicted, c.images))
            .collect();
        assert_eq!(confused, [(1, 2, 2), (3, 2, 2)]);
    }
}
