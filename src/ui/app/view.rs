//! What drawing reads: each pane's view of the state, and `impl Widget for &App`.

use std::sync::Arc;

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::text::Span;
use ratatui::widgets::Widget;

use super::methods::Maps;
use super::{AnalysisState, App};
use crate::background::inference::ModelStatus;
use crate::background::render::Rendered;
use crate::model::Analysis;
use crate::model::cam_methods::CamMethod;
use crate::overlay::View;
use crate::scoring::Verdict;
use crate::ui::files::{self, Entry, EntryKind};
use crate::ui::image_pane::{ImageBody, ImagePane};
use crate::ui::predictions::{PredictionsBody, PredictionsPane};
use crate::ui::review::Mark;
use crate::ui::status::Notice;
use crate::ui::status::{self, StatusLine};
use crate::ui::{help, summary};

/// The braille spinner frame for `ticks`.
fn spinner(ticks: usize) -> char {
    const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    FRAMES[ticks % FRAMES.len()]
}

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let Some(panes) = self.layout(area) else {
            status::draw_too_small(area, buf);
            return;
        };
        let mark = |entry: &Entry| self.mark(entry);
        let look = files::Look {
            title: self.review.as_ref().filter(|r| r.flat).map(|r| {
                let c = r.counts();
                format!(
                    "top-1 {}/{} · top-5 {}/{}",
                    c.top1, c.labelled, c.top5, c.labelled
                )
            }),
            subtitle: self.review.as_ref().filter(|r| r.flat).map(|r| {
                let narrowed = match r.confusion {
                    Some((truth, predicted)) => {
                        let classes = &r.dataset.classes;
                        format!("{} → {}", classes.label(truth), classes.label(predicted))
                    }
                    None => r.show.name().to_string(),
                };
                format!("{narrowed} · {}", r.order.name())
            }),
            mark: &mark,
        };
        files::draw(&self.files, &look, panes.files, buf);
        self.image_pane().draw(panes.image, buf);
        self.predictions_pane().draw(panes.predictions, buf);
        self.status_line().draw(panes.status, buf);
        if let Some(review) = &self.review
            && let Some(selected) = review.summary
        {
            let right = Rect {
                height: panes.image.height + panes.predictions.height,
                ..panes.image
            };
            summary::draw(review, selected, right, buf);
        }
        if self.help {
            help::draw(self.review.is_some(), area, buf);
        }
    }
}

impl App {
    /// The picture of the selected image, when the render thread delivered one.
    pub fn picture(&self) -> Option<&Rendered> {
        let current = self.current.as_ref()?;
        self.shown
            .as_ref()
            .filter(|(key, _)| *key == current.key)
            .map(|(_, r)| r)
    }

    /// The analysis of the selected image, when there is one.
    pub fn analysis(&self) -> Option<&Arc<Analysis>> {
        match &self.current.as_ref()?.analysis {
            AnalysisState::Done(a) => Some(a),
            _ => None,
        }
    }

    /// Where the picture is drawn on the current screen, if it is.
    pub fn picture_area(&self) -> Option<Rect> {
        self.image_pane().picture_at(self.panes()?.picture())
    }

    /// The image pane's view of the state.
    pub(super) fn image_pane(&self) -> ImagePane<'_> {
        let spinner = spinner(self.ticks);
        let Some(current) = &self.current else {
            let hint = match self.files.selected() {
                Some(e) if e.kind == EntryKind::Folder => {
                    format!("{}/ is a folder: Enter opens it", e.name)
                }
                _ => "No image selected".to_string(),
            };
            return ImagePane {
                title: " Image ".to_string(),
                body: ImageBody::Hint(hint),
                spinner,
            };
        };
        let class = self.map_title();
        let body = if let Some(error) = &current.image_error {
            ImageBody::Error(error)
        } else if self.help || self.review.as_ref().is_some_and(|r| r.summary.is_some()) {
            ImageBody::Hidden
        } else if let Some(picture) = self.picture() {
            ImageBody::Picture(&picture.protocol)
        } else {
            ImageBody::Loading(&current.name)
        };
        ImagePane {
            title: format!(" {}{class} ", current.name),
            body,
            spinner,
        }
    }

    /// What the picture shows, for its title: ` — CAM of tabby`, ` — Grad-CAM++ maps of the
    /// top 5, photo last`, ` — Score-CAM of tabby: 320/2048`.
    fn map_title(&self) -> String {
        let method = self.method.title();
        let label = self
            .analysis()
            .and_then(|a| a.top.get(self.class))
            .map(|p| p.label.as_str());
        let shows = match (self.style.view, self.method, label) {
            (View::Original, ..) => return String::new(),
            (View::Grid, CamMethod::Cam, _) => "CAMs of the top 5, photo last".to_string(),
            (View::Grid, ..) => format!("{method} maps of the top 5, photo last"),
            // The same map whatever the class.
            (_, CamMethod::EigenCam, _) => format!("{method} (class-agnostic)"),
            (_, _, Some(label)) => format!("{method} of {label}"),
            (_, _, None) => return String::new(),
        };
        let state = match self.maps() {
            Maps::Pending(Some((done, total))) => format!(": {done}/{total}"),
            Maps::Pending(None) => " …".to_string(),
            Maps::Failed(_) => " failed".to_string(),
            Maps::Ready(_) | Maps::Missing => String::new(),
        };
        format!(" — {shows}{state}")
    }

    /// The predictions pane's view of the state.
    pub(super) fn predictions_pane(&self) -> PredictionsPane<'_> {
        let body = match (&self.model, &self.current) {
            (ModelStatus::Unavailable(why), _) => PredictionsBody::Unavailable(why),
            (ModelStatus::Fetching { phase, done, total }, _) => PredictionsBody::Fetching {
                phase,
                done: *done,
                total: *total,
            },
            (ModelStatus::Loading, _) if self.analysis().is_none() => PredictionsBody::LoadingModel,
            (_, None) => PredictionsBody::NoImage,
            (_, Some(current)) => match &current.analysis {
                AnalysisState::Running => PredictionsBody::Analysing(&current.name),
                AnalysisState::Failed(e) => PredictionsBody::Failed(e),
                AnalysisState::Done(analysis) => PredictionsBody::Table {
                    analysis,
                    rows: self.classes(),
                    shown: self.class,
                    truth: self.truth().map(|t| t.class),
                },
            },
        };
        PredictionsPane {
            style: self.style,
            method: self.method,
            spinner: spinner(self.ticks),
            body,
        }
    }

    /// The status line's view of the state.
    pub(super) fn status_line(&self) -> StatusLine<'_> {
        let current = self.current.as_ref();
        let analysis = current.and_then(|c| match &c.analysis {
            AnalysisState::Done(a) => Some(a),
            _ => None,
        });
        let error = current.and_then(|c| {
            c.image_error.as_deref().or(match &c.analysis {
                AnalysisState::Failed(e) => Some(e.as_str()),
                _ => None,
            })
        });
        StatusLine {
            name: current.map(|c| c.name.as_str()),
            pixels: self.picture().map(|p| p.original),
            elapsed_ms: analysis.map(|a| a.elapsed.as_millis()),
            device: match &self.model {
                ModelStatus::Ready { device, .. } => device,
                ModelStatus::Unavailable(_) => "no model",
                _ => "model loading",
            },
            protocol: &self.protocol,
            error,
            notice: self.notice.as_ref(),
            iou: self.shown_iou(),
            maps: match self.maps() {
                Maps::Pending(Some((done, total))) => Some(Notice::Done(format!(
                    "{} {done}/{total}",
                    self.method.title()
                ))),
                Maps::Pending(None) => Some(Notice::Done(format!("{} …", self.method.title()))),
                Maps::Failed(why) => Some(Notice::Problem(format!(
                    "{} failed: {why}",
                    self.method.title()
                ))),
                Maps::Ready(_) | Maps::Missing => None,
            },
            sweep: self.review.as_ref().and_then(|r| r.progress),
        }
    }

    /// The one-cell mark before a file: its verdict in a dataset, else whether its result
    /// is cached.
    pub(super) fn mark(&self, entry: &Entry) -> Span<'static> {
        let item = self
            .review
            .as_ref()
            .and_then(|r| Some((r, r.item_at(&entry.path)?)));
        match item.map(|(r, i)| r.mark(i)) {
            Some(Mark::Scored(s)) => match s.verdict {
                Verdict::Top1 => Span::styled("✓", Color::Green),
                Verdict::Top5 => Span::styled("5", Color::Yellow),
                Verdict::Miss => Span::styled("✗", Color::Red),
            },
            Some(Mark::Pending) => Span::styled("·", Color::DarkGray),
            Some(Mark::Failed) => Span::styled("!", Color::Red),
            // Analysed, but with nothing to be right or wrong about.
            Some(Mark::Unlabelled) if self.cache.contains_key(&entry.key) => {
                Span::styled("–", Color::DarkGray)
            }
            None if self.cache.contains_key(&entry.key) => Span::styled("✓", Color::Green),
            Some(Mark::Unlabelled) | None => Span::raw(" "),
        }
    }
}
