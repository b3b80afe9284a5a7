//! Moving through the files and the classes of the predictions table.

use std::sync::Arc;

use super::{AnalysisState, App, Command, Current};
use crate::analysis::TOP_K;
use crate::background::inference::{ModelStatus, Request};
use crate::overlay::Style;
use crate::ui::files::EntryKind;

impl App {
    pub(super) fn page_rows(&self) -> isize {
        self.panes()
            .map_or(10, |p| (p.file_rows().height.max(2) - 1) as isize)
    }

    pub(super) fn open_folder(&mut self) {
        if let Some(listing) = self.files.enter() {
            self.commands.push(Command::List(listing));
            self.selection_changed();
        }
    }

    pub(super) fn go_up(&mut self) {
        if let Some(listing) = self.files.leave() {
            self.commands.push(Command::List(listing));
            self.selection_changed();
        }
    }

    pub(super) fn move_selection(&mut self, delta: isize) {
        let before = self.files.selected;
        self.files.move_by(delta);
        if self.files.selected != before {
            self.selection_changed();
        }
    }

    pub(super) fn select(&mut self, index: usize) {
        let before = self.files.selected;
        self.files.select(index);
        if self.files.selected != before {
            self.selection_changed();
        }
    }

    /// The selection moved (or the list changed): show the new entry and ask for its result.
    pub(super) fn selection_changed(&mut self) {
        if let Some(p) = self.panes() {
            self.files
                .scroll_into_view(usize::from(p.file_rows().height));
        }
        let entry = self
            .files
            .selected()
            .filter(|e| e.kind == EntryKind::Image)
            .cloned();
        let Some(entry) = entry else {
            self.current = None;
            self.pending_render = None;
            self.want_maps();
            return;
        };
        if self.current.as_ref().is_some_and(|c| c.key == entry.key) {
            return;
        }
        self.class = 0;
        let analysis = if let Some(done) = self.cache.get(&entry.key) {
            AnalysisState::Done(Arc::clone(&done.analysis))
        } else if let Some(e) = self.failures.get(&entry.key) {
            AnalysisState::Failed(e.clone())
        } else {
            if !matches!(self.model, ModelStatus::Unavailable(_)) {
                self.commands
                    .push(Command::Infer(Request::Analyze(entry.key.clone())));
            }
            AnalysisState::Running
        };
        self.current = Some(Current {
            key: entry.key,
            name: entry.name,
            analysis,
            image_error: None,
        });
        self.request_render();
        if matches!(
            self.current,
            Some(Current {
                analysis: AnalysisState::Done(_),
                ..
            })
        ) {
            self.prefetch_neighbours();
        }
    }

    /// How many of the analysis's classes the table shows (and the CAM can be chosen from):
    /// the top 5, and the true class pinned after them in a dataset.
    pub(super) fn classes(&self) -> usize {
        let Some(analysis) = self.analysis() else {
            return 0;
        };
        let truth = self.truth().map(|t| t.class);
        analysis
            .top
            .iter()
            .filter(|p| p.rank <= TOP_K || Some(p.index) == truth)
            .count()
    }

    pub(super) fn choose_class(&mut self, class: usize) {
        let available = self.classes();
        if class < available && class != self.class {
            self.class = class;
            self.request_render();
        }
    }

    pub(super) fn cycle_class(&mut self, step: isize) {
        let available = self.classes();
        if available > 0 {
            let next = (self.class as isize + step).rem_euclid(available as isize);
            self.choose_class(next as usize);
        }
    }

    pub(super) fn restyle(&mut self, change: impl FnOnce(&mut Style)) {
        change(&mut self.style);
        self.request_render();
    }
}
