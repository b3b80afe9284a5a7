//! What the workers send back (results, pictures) and what the browser asks of them next.

use std::sync::Arc;

use ratatui::layout::Rect;

use super::methods::Maps;
use super::{AnalysisState, App, Command, escaped};
use crate::analysis::{AnalysisError, ImageKey};
use crate::background::inference::{Analysed, ModelStatus, Request, WorkerEvent};
use crate::background::render::{RenderEvent, RenderRequest};
use crate::background::save::SaveRequest;
use crate::model::{Analysis, chain};
use crate::overlay::View;
use crate::ui::review::Review;
use crate::ui::status::{self, Notice};

impl App {
    pub(super) fn on_worker(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Model(status) => self.model = status,
            WorkerEvent::Note(note) => self.notice = Some(Notice::Problem(note)),
            WorkerEvent::MapsProgress {
                key,
                method,
                done,
                total,
            } => self.on_maps_progress(&key, method, done, total),
            WorkerEvent::Maps {
                key,
                method,
                result,
            } => self.on_maps(key, method, result),
            WorkerEvent::Analysis { key, result } => {
                if self.take_result(key, result) {
                    self.prefetch_neighbours();
                } else {
                    // A neighbour's result (prefetched): its picture can be made too.
                    self.prepare_neighbours();
                }
                self.rearrange_for_results();
            }
            WorkerEvent::Swept { results, progress } => {
                if let Some(review) = &mut self.review {
                    review.progress = Some(progress);
                }
                let mut current = false;
                for (key, result) in results {
                    current |= self.take_result(key, result);
                }
                if current {
                    self.prefetch_neighbours();
                } else {
                    self.prepare_neighbours();
                }
                self.rearrange_for_results();
            }
        }
    }

    /// New results change the list only when it is narrowed or ordered by them; all by name
    /// stays as it is (the marks are drawn from the results each frame).
    pub(super) fn rearrange_for_results(&mut self) {
        if self
            .review
            .as_ref()
            .is_some_and(Review::arranged_by_results)
        {
            self.rearrange(|_| {});
        }
    }

    /// Keeps one image's result; true when it is the selected image's (whose picture is
    /// then asked for).
    pub(super) fn take_result(
        &mut self,
        key: ImageKey,
        result: Result<Analysed, AnalysisError>,
    ) -> bool {
        if let Some(review) = &mut self.review {
            review.record(&key.path, result.as_ref());
        }
        let is_current = self.current.as_ref().is_some_and(|c| c.key == key);
        let state = match result {
            Ok(analysed) => {
                let analysis = Arc::clone(&analysed.analysis);
                self.cache.insert(key.clone(), analysed);
                AnalysisState::Done(analysis)
            }
            Err(e) => {
                let e = escaped(&crate::model::chain(&e));
                self.failures.insert(key.clone(), e.clone());
                AnalysisState::Failed(e)
            }
        };
        if is_current {
            if let Some(current) = &mut self.current {
                current.analysis = state;
            }
            self.request_render();
        }
        is_current
    }

    pub(super) fn on_render(&mut self, event: RenderEvent) {
        if self.pending_render != Some(event.ticket) {
            return; // superseded by a newer request
        }
        self.pending_render = None;
        let Some(current) = self.current.as_mut().filter(|c| c.key == event.key) else {
            return;
        };
        match event.result {
            Ok(rendered) => {
                current.image_error = None;
                self.shown = Some((event.key, rendered));
                self.prepare_neighbours();
            }
            Err(e) => current.image_error = Some(escaped(&chain(&e))),
        }
    }

    /// Once the shown picture is final, the render thread may make those of the images next
    /// to it that have their result, so moving there shows them at once.
    pub(super) fn prepare_neighbours(&mut self) {
        let (Some(current), Some(panes)) = (&self.current, self.panes()) else {
            return;
        };
        if self.pending_render.is_some() || !matches!(current.analysis, AnalysisState::Done(_)) {
            return;
        }
        let picture = panes.picture();
        // Class 0: a newly selected image shows its best class.
        let requests: Vec<RenderRequest> = self
            .files
            .neighbours(1)
            .into_iter()
            .filter_map(|e| {
                let analysed = self.cache.get(&e.key)?;
                let analysis = self.drawn_analysis(&e.key, &analysed.analysis)?;
                Some(self.render_request(0, &e.key, Some(analysis), 0, picture))
            })
            .collect();
        if !requests.is_empty() {
            self.commands.push(Command::Prepare(requests));
        }
    }

    /// After the selected image has its result, the worker may analyse its neighbours.
    pub(super) fn prefetch_neighbours(&mut self) {
        if !matches!(self.model, ModelStatus::Ready { .. }) {
            return;
        }
        let keys: Vec<ImageKey> = self
            .files
            .neighbours(2)
            .into_iter()
            .filter(|e| !self.cache.contains_key(&e.key) && !self.failures.contains_key(&e.key))
            .map(|e| e.key.clone())
            .collect();
        if !keys.is_empty() {
            self.commands.push(Command::Infer(Request::Prefetch(keys)));
        }
    }

    /// Asks the render thread for the selected image as it should look now (and the worker
    /// for its maps under the chosen method, when they are not at hand).
    pub(super) fn request_render(&mut self) {
        self.want_maps();
        let (Some(key), Some(panes)) = (self.current.as_ref().map(|c| c.key.clone()), self.panes())
        else {
            return;
        };
        let picture = panes.picture();
        if picture.is_empty() {
            return;
        }
        let analysis = match self.maps() {
            Maps::Ready(a) => Some(Arc::clone(a)),
            // A closed-form method's maps take a moment: the picture shown stays until
            // they come. Score-CAM's take minutes: the photo shows meanwhile.
            Maps::Pending(_) if !self.method.needs_forward_passes() && self.picture().is_some() => {
                return;
            }
            Maps::Pending(_) | Maps::Failed(_) | Maps::Missing => None,
        };
        self.ticket += 1;
        self.pending_render = Some(self.ticket);
        let request =
            self.render_request(self.ticket, &key, analysis.as_ref(), self.class, picture);
        self.commands.push(Command::Render(request));
    }

    /// What to ask of the render thread to show `key` now, on `picture` cells.
    pub(super) fn render_request(
        &self,
        ticket: u64,
        key: &ImageKey,
        analysis: Option<&Arc<Analysis>>,
        class: usize,
        picture: Rect,
    ) -> RenderRequest {
        // The original photo needs the analysis only for the box.
        let needed = self.style.view != View::Original || self.style.bbox;
        RenderRequest {
            ticket,
            key: key.clone(),
            analysis: analysis.filter(|_| needed).map(Arc::clone),
            class,
            style: self.style,
            cells: picture.as_size(),
            truth_boxes: self.truth_boxes(&key.path),
        }
    }

    /// Asks for the picture shown to be saved at full size (once its maps are in).
    pub(super) fn save(&mut self) {
        let analysis = match self.maps() {
            Maps::Ready(analysis) => Arc::clone(analysis),
            Maps::Missing => {
                let why = "nothing to save yet: no analysed image";
                self.notice = Some(Notice::Problem(why.into()));
                return;
            }
            Maps::Pending(_) => {
                let why = format!(
                    "nothing to save yet: the {} maps are being made",
                    self.method.title()
                );
                self.notice = Some(Notice::Problem(why));
                return;
            }
            Maps::Failed(e) => {
                let why = format!("nothing to save: {} failed: {e}", self.method.title());
                self.notice = Some(Notice::Problem(why));
                return;
            }
        };
        let Some(current) = &self.current else {
            return;
        };
        let request = SaveRequest {
            photo: current.key.path.clone(),
            analysis,
            method: self.method,
            class: self.class,
            style: self.style,
            dir: self.save_dir.clone(),
            truth_boxes: self.truth_boxes(&current.key.path),
        };
        let to = status::shown_path(&request.destination());
        self.notice = Some(Notice::Done(format!("saving {to}…")));
        self.commands.push(Command::Save(request));
    }
}
