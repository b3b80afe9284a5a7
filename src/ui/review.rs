//! The browser as a dataset reviewer: the labelled folder's images as one flat list, each
//! with its verdict as results arrive, narrowed to the misses or hits (or one confusion) and
//! ordered by name, confidence, loss or margin; the running top-1 / top-5 counts; and the
//! summary of per-class accuracy and confusions. Plain state, drawn by the panes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::analysis::{AnalysisError, ImageKey};
use crate::background::inference::{Analysed, SweepProgress};
use crate::dataset::{Dataset, Item, Truth};
use crate::results::Target;
use crate::scoring::{self, ClassScore, Confusion, Score, Verdict};
use crate::text::printable;
use crate::walk::EntryKind;

use super::files::Entry;

/// The file pane's row for a dataset's image: its path below the root.
fn entry(item: &Item, key: &ImageKey) -> Entry {
    Entry::new(
        EntryKind::Image,
        item.path.clone(),
        printable(std::ffi::OsStr::new(&item.relative)),
        key.clone(),
    )
}

/// Which images the list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Show {
    #[default]
    All,
    /// Analysed labelled images whose top-1 is wrong.
    Misses,
    /// Analysed labelled images whose top-1 is right.
    Hits,
}

impl Show {
    pub fn next(self) -> Self {
        match self {
            Self::All => Self::Misses,
            Self::Misses => Self::Hits,
            Self::Hits => Self::All,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Misses => "top-1 misses",
            Self::Hits => "top-1 hits",
        }
    }
}

/// The order of the list; the images without a score (not analysed, unlabelled) come last
/// in every order but by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Name,
    /// Top-1 probability, lowest first.
    Confidence,
    /// −log p(true class), highest first.
    Loss,
    /// p(true class) − the highest other probability, lowest first (confidently wrong first).
    Margin,
}

impl Order {
    pub fn next(self) -> Self {
        match self {
            Self::Name => Self::Confidence,
            Self::Confidence => Self::Loss,
            Self::Loss => Self::Margin,
            Self::Margin => Self::Name,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Name => "by name",
            Self::Confidence => "by confidence ↑",
            Self::Loss => "by loss ↓",
            Self::Margin => "by margin ↑",
        }
    }
}

/// Where an image stands in the review.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    Unlabelled,
    Pending,
    Failed,
    Scored(Score),
}

/// The reviewer's state over one labelled folder.
#[derive(Debug)]
pub struct Review {
    pub dataset: Arc<Dataset>,
    keys: Vec<ImageKey>,
    marks: Vec<Mark>,
    index: HashMap<PathBuf, usize>,
    pub show: Show,
    pub order: Order,
    /// Only the images of this (true, predicted) confusion, when chosen in the summary.
    pub confusion: Option<(usize, usize)>,
    /// The flat list (else the folders are browsed).
    pub flat: bool,
    pub progress: Option<SweepProgress>,
    /// The summary view and the confusion selected in it, while it is open.
    pub summary: Option<usize>,
}

/// Running counts over the labelled images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub labelled: usize,
    pub analysed: usize,
    pub top1: usize,
    pub top5: usize,
}

impl Review {
    /// The review of `dataset`, whose items have these `keys` (one each, in order).
    pub fn new(dataset: Arc<Dataset>, keys: Vec<ImageKey>) -> Self {
        debug_assert_eq!(keys.len(), dataset.items.len());
        let marks = dataset
            .items
            .iter()
            .map(|item| {
                if item.truth.is_some() {
                    Mark::Pending
                } else {
                    Mark::Unlabelled
                }
            })
            .collect();
        let index = dataset
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| (item.path.clone(), i))
            .collect();
        Self {
            dataset,
            keys,
            marks,
            index,
            show: Show::All,
            order: Order::Name,
            confusion: None,
            flat: true,
            progress: None,
            summary: None,
        }
    }

    /// What the background sweep is asked to do: every image, with its true class.
    pub fn targets(&self) -> Vec<Target> {
        self.dataset
            .items
            .iter()
            .zip(&self.keys)
            .map(|(item, key)| Target {
                key: key.clone(),
                truth: item.truth.as_ref().map(|t| t.class),
            })
            .collect()
    }

    /// The flat list's entries, one per item, in the dataset's order.
    pub fn entries(&self) -> Vec<Entry> {
        self.dataset
            .items
            .iter()
            .zip(&self.keys)
            .map(|(item, key)| entry(item, key))
            .collect()
    }

    /// True when some image has a truth box.
    pub fn has_boxes(&self) -> bool {
        self.dataset
            .items
            .iter()
            .any(|i| i.truth.as_ref().is_some_and(|t| !t.boxes.is_empty()))
    }

    /// The item at `path`, if it is one of the dataset's.
    pub fn item_at(&self, path: &Path) -> Option<usize> {
        self.index.get(path).copied()
    }

    pub fn truth_at(&self, path: &Path) -> Option<&Truth> {
        self.dataset.items[self.item_at(path)?].truth.as_ref()
    }

    pub fn mark(&self, item: usize) -> Mark {
        self.marks[item]
    }

    /// Takes in the result for `path`; true when the image is one of the dataset's.
    pub fn record(&mut self, path: &Path, result: Result<&Analysed, &AnalysisError>) -> bool {
        let Some(i) = self.item_at(path) else {
            return false;
        };
        let Some(truth) = &self.dataset.items[i].truth else {
            return true;
        };
        self.marks[i] = match result {
            Ok(analysed) => {
                Score::of(truth.class, &analysed.analysis.top).map_or(Mark::Failed, Mark::Scored)
            }
            Err(_) => Mark::Failed,
        };
        true
    }

    /// True when the result lacks what the review needs of it: the true class pinned.
    pub fn needs_pinning(&self, path: &Path, result: &Analysed) -> bool {
        self.truth_at(path)
            .is_some_and(|truth| !result.analysis.top.iter().any(|p| p.index == truth.class))
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for mark in &self.marks {
            match mark {
                Mark::Unlabelled => {}
                Mark::Pending | Mark::Failed => c.labelled += 1,
                Mark::Scored(s) => {
                    c.labelled += 1;
                    c.analysed += 1;
                    c.top1 += usize::from(s.verdict == Verdict::Top1);
                    c.top5 += usize::from(s.verdict != Verdict::Miss);
                }
            }
        }
        c
    }

    /// True when results decide which items the list shows or their order.
    pub fn arranged_by_results(&self) -> bool {
        self.flat
            && (self.show != Show::All || self.order != Order::Name || self.confusion.is_some())
    }

    /// The items the list shows, in its order.
    pub fn arranged(&self) -> Vec<usize> {
        let score = |i: usize| match self.marks[i] {
            Mark::Scored(s) => Some(s),
            _ => None,
        };
        let mut shown: Vec<usize> = (0..self.marks.len())
            .filter(|&i| {
                let passes = match (self.show, score(i)) {
                    (Show::All, _) => true,
                    (Show::Misses, Some(s)) => s.verdict != Verdict::Top1,
                    (Show::Hits, Some(s)) => s.verdict == Verdict::Top1,
                    (_, None) => false,
                };
                let confused = self.confusion.is_none_or(|(truth, predicted)| {
                    score(i).is_some_and(|s| s.top1 == predicted)
                        && self.dataset.items[i].truth.as_ref().map(|t| t.class) == Some(truth)
                });
                passes && confused
            })
            .collect();
        // Items without a key go last; the stable sort keeps name order among equals.
        let key = |i: usize| -> Option<f32> {
            let s = score(i)?;
            match self.order {
                Order::Name => Some(0.0),
                Order::Confidence => Some(s.top1_prob),
                Order::Loss => s.loss().map(|l| -l),
                Order::Margin => s.margin,
            }
        };
        if self.order != Order::Name {
            shown.sort_by(|&a, &b| match (key(a), key(b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            });
        }
        shown
    }

    /// True when the item is an analysed top-1 miss (what `n` / `N` jump to).
    pub fn is_miss(&self, item: usize) -> bool {
        matches!(self.marks[item], Mark::Scored(s) if s.verdict != Verdict::Top1)
    }

    /// (true, top-1) of every scored image.
    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.marks.iter().enumerate().filter_map(|(i, m)| match m {
            Mark::Scored(s) => Some((self.dataset.items[i].truth.as_ref()?.class, s.top1)),
            _ => None,
        })
    }

    pub fn per_class(&self) -> Vec<ClassScore> {
        scoring::per_class(self.pairs())
    }

    pub fn confusions(&self) -> Vec<Confusion> {
        scoring::confusions(self.pairs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::{Item, LabelSource};
    use crate::model::{Analysis, Prediction, preprocess::Region};

    fn dataset(truths: &[Option<usize>]) -> Arc<Dataset> {
        Arc::new(Dataset {
            root: "d".into(),
            items: truths
                .iter()
                .enumerate()
                .map(|(i, t)| Item {
                    path: format!("d/{i}.png").into(),
                    relative: format!("{i}.png"),
                    truth: t.map(|class| Truth {
                        class,
                        boxes: Vec::new(),
                    }),
                })
                .collect(),
            source: LabelSource::ClassFolders,
            unreadable: Vec::new(),
            warnings: Vec::new(),
            classes: crate::model::Classes::imagenet(),
        })
    }

    /// A result whose classes are `top` (class, probability), best first.
    fn result(top: &[(usize, f32)]) -> Analysed {
        Analysed {
            analysis: Arc::new(Analysis {
                top: top
                    .iter()
                    .enumerate()
                    .map(|(i, &(index, prob))| Prediction {
                        rank: i + 1,
                        index,
                        label: String::new(),
                        prob,
                    })
                    .collect(),
                cams: Vec::new(),
                input: (224, 224),
                region: Region {
                    x0: 0.0,
                    y0: 0.0,
                    x1: 1.0,
                    y1: 1.0,
                },
                elapsed: std::time::Duration::ZERO,
            }),
            top1_box: None,
            truth: None,
        }
    }

    #[test]
    fn counts_filters_and_orders_follow_the_results() {
        let d = dataset(&[Some(1), Some(2), Some(3), None, Some(5)]);
        let keys = d
            .items
            .iter()
            .map(|i| ImageKey {
                path: i.path.clone(),
                size: 0,
                modified: None,
            })
            .collect();
        let mut r = Review::new(d, keys);
        let path = |i: usize| PathBuf::from(format!("d/{i}.png"));
        assert_eq!(r.counts().labelled, 4);
        r.record(&path(0), Ok(&result(&[(1, 0.9), (7, 0.05)])));
        r.record(&path(1), Ok(&result(&[(7, 0.6), (2, 0.3)])));
        r.record(&path(2), Ok(&result(&[(7, 0.5), (8, 0.2), (3, 0.01)])));
        let c = r.counts();
        assert_eq!((c.analysed, c.top1, c.top5), (3, 1, 3));
        assert_eq!(r.arranged(), [0, 1, 2, 3, 4]);
        r.show = Show::Misses;
        assert_eq!(r.arranged(), [1, 2]);
        r.show = Show::Hits;
        assert_eq!(r.arranged(), [0]);
        r.show = Show::All;
        r.order = Order::Loss;
        // Highest −log p(true) first: 0.01, then 0.3, then 0.9; unscored last, by name.
        assert_eq!(r.arranged(), [2, 1, 0, 3, 4]);
        r.order = Order::Confidence;
        assert_eq!(r.arranged(), [2, 1, 0, 3, 4]);
        r.order = Order::Margin;
        // 0.01 − 0.5, 0.3 − 0.6, 0.9 − 0.05.
        assert_eq!(r.arranged(), [2, 1, 0, 3, 4]);
        r.order = Order::Name;
        r.confusion = Some((2, 7));
        assert_eq!(r.arranged(), [1]);
        let confusions = r.confusions();
        assert_eq!(confusions.len(), 2);
        assert!(r.is_miss(1) && !r.is_miss(0) && !r.is_miss(4));
    }
}
