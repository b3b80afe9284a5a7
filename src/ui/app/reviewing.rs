//! Reviewing a labelled folder: the dataset's list, its order and filters, misses and the ground truth.

use std::path::Path;
use std::sync::Arc;

use super::{App, Command, escaped};
use crate::background::dataset_reader::LoadedDataset;
use crate::background::inference::Request;
use crate::model::cam::BBox;
use crate::scoring;
use crate::ui::review::Review;
use crate::ui::status::Notice;

impl App {
    /// The folder's labels are in: the file pane becomes the flat list of its images, the
    /// background sweep starts, and results without the true class pinned are redone.
    pub(super) fn review_dataset(&mut self, loaded: LoadedDataset) {
        // What the dataset's files gave but cannot be used: the first, and how many more
        // (`camview eval` prints them all).
        if let Some(first) = loaded.dataset.warnings.first() {
            let more = match loaded.dataset.warnings.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more: `camview eval` lists them all)"),
            };
            self.notice = Some(Notice::Problem(format!("{}{more}", escaped(first))));
        }
        let mut review = Review::new(loaded.dataset, loaded.keys);
        self.cache
            .retain(|key, analysed| !review.needs_pinning(&key.path, analysed));
        for (key, analysed) in &self.cache {
            review.record(&key.path, Ok(analysed));
        }
        if review.has_boxes() {
            // The reviewer came for the boxes: show them from the start.
            self.style.bbox = true;
        }
        let targets = Arc::new(review.targets());
        self.files.show_flat(review.entries(), review.arranged());
        self.review = Some(review);
        self.commands.push(Command::Infer(Request::Sweep(targets)));
        // The selected image's result may have been dropped for lacking its true class.
        self.current = None;
        self.selection_changed();
    }

    /// Applies `change` to the review, then shows its list as it now is.
    pub(super) fn rearrange(&mut self, change: impl FnOnce(&mut Review)) {
        let Some(review) = &mut self.review else {
            return;
        };
        let was_flat = review.flat;
        change(review);
        if !review.flat {
            return;
        }
        let arranged = review.arranged();
        if was_flat {
            self.files.arrange(arranged);
            self.selection_changed();
        } else {
            self.flat_list(arranged);
        }
    }

    /// Back to the flat list of the dataset (from browsing its folders).
    pub(super) fn flat_list(&mut self, arranged: Vec<usize>) {
        let Some(review) = &self.review else {
            return;
        };
        self.files.show_flat(review.entries(), arranged);
        self.selection_changed();
    }

    /// `f`: the flat list of the dataset, or its folders.
    pub(super) fn toggle_flat(&mut self) {
        let Some(review) = &mut self.review else {
            return;
        };
        if review.flat {
            review.flat = false;
            let listing = self.files.show_folders();
            self.commands.push(Command::List(listing));
            self.selection_changed();
        } else {
            self.rearrange(|r| r.flat = true);
        }
    }

    /// `n` / `N`: the next (`step` 1) or previous (−1) top-1 miss in the list, wrapping.
    pub(super) fn jump_to_miss(&mut self, step: isize) {
        let Some(review) = &self.review else {
            return;
        };
        let n = self.files.visible.len();
        if n == 0 {
            return;
        }
        let is_miss = |row: usize| {
            let entry = &self.files.entries[self.files.visible[row]];
            review
                .item_at(&entry.path)
                .is_some_and(|i| review.is_miss(i))
        };
        let found = (1..=n)
            .map(|d| (self.files.selected as isize + step * d as isize).rem_euclid(n as isize))
            .map(|row| row as usize)
            .find(|&row| is_miss(row));
        match found {
            Some(row) => self.select(row),
            None => {
                self.notice = Some(Notice::Problem("no top-1 miss in this list (yet)".into()));
            }
        }
    }

    /// `t`: the CAM of the true class.
    pub(super) fn show_true_class(&mut self) {
        let slot = self.truth().and_then(|truth| {
            self.analysis()?
                .top
                .iter()
                .position(|p| p.index == truth.class)
        });
        if let Some(slot) = slot {
            self.choose_class(slot);
        }
    }

    /// The selected image's ground truth, when the folder is reviewed as a dataset.
    pub fn truth(&self) -> Option<&crate::dataset::Truth> {
        self.review
            .as_ref()?
            .truth_at(&self.current.as_ref()?.key.path)
    }

    /// The truth boxes of the image at `path` (of its true class), as CAM boxes are kept.
    pub(super) fn truth_boxes(&self, path: &Path) -> Vec<BBox> {
        let Some(truth) = self.review.as_ref().and_then(|r| r.truth_at(path)) else {
            return Vec::new();
        };
        truth
            .boxes
            .iter()
            .filter(|b| b.class == truth.class)
            .map(|b| BBox {
                x0: b.x0,
                y0: b.y0,
                x1: b.x1 + 1,
                y1: b.y1 + 1,
            })
            .collect()
    }

    /// The IoU of the shown class's CAM box with the truth box, when both are known.
    pub(super) fn shown_iou(&self) -> Option<f64> {
        let current = self.current.as_ref()?;
        let analysed = self.cache.get(&current.key)?;
        // Under another method than CAM, the box of its map (when it is made).
        let cam = match self.method_box() {
            Some(method_box) => method_box?,
            None if self.method == crate::model::cam_methods::CamMethod::Cam => {
                analysed.box_of(self.class)?
            }
            None => return None,
        };
        scoring::best_iou(self.truth()?, Some(cam))
    }
}
