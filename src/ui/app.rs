//! The browser's state and its one way of changing: [`App::update`] takes an event (a key,
//! a worker's result, a tick) and records the work to ask of the workers as [`Command`]s.
//! Nothing here touches the terminal, so whole sessions are testable in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossterm::event::{Event, KeyEventKind};
use ratatui::layout::Size;

use super::files::{FileList, ListRequest};
use super::review::Review;
use super::status::{self, Notice};
use crate::analysis::ImageKey;
use crate::background::inference::{Analysed, ModelStatus};
use crate::background::render::Rendered;
use crate::model::cam_methods::CamMethod;
use crate::model::{Analysis, chain};
use crate::overlay::Style;
use crate::text::printable;

mod event;
mod input;
mod layout;
mod methods;
mod results;
mod reviewing;
mod selection;
mod view;

pub use super::status::{MIN_HEIGHT, MIN_WIDTH};
pub use crate::background::Command;
pub use event::AppEvent;
pub use layout::Panes;
pub use methods::Maps;

/// The inference result for the selected image.
#[derive(Debug, Clone)]
pub enum AnalysisState {
    /// Asked of the worker (which may still be loading the model).
    Running,
    Done(Arc<Analysis>),
    Failed(String),
}

/// The selected image.
#[derive(Debug, Clone)]
pub struct Current {
    pub key: ImageKey,
    /// The file name, escaped.
    pub name: String,
    pub analysis: AnalysisState,
    /// Why the photo cannot be shown, once the render thread said so.
    pub image_error: Option<String>,
}

/// The browser.
pub struct App {
    files: FileList,
    /// Results per file version; also drives the cached marks in the file pane.
    cache: HashMap<ImageKey, Analysed>,
    /// The dataset review, once the folder's labels are in.
    review: Option<Review>,
    failures: HashMap<ImageKey, String>,
    model: ModelStatus,
    /// `None` while a folder (or nothing) is selected.
    current: Option<Current>,
    /// The last picture received, kept on screen while a newer one of the same file renders.
    shown: Option<(ImageKey, Rendered)>,
    style: Style,
    /// Which of the top classes the CAM shows (0 = the best).
    class: usize,
    /// How the maps are made: CAM, or another method of its family.
    method: CamMethod,
    /// The maps of methods other than CAM, as the worker made them.
    maps: methods::MethodMaps,
    help: bool,
    /// Name of the graphics protocol, for the status line.
    protocol: String,
    size: Size,
    /// Counts ticks; the spinner's frame.
    ticks: usize,
    ticket: u64,
    /// The render request whose answer is awaited.
    pending_render: Option<u64>,
    /// Where `s` writes.
    save_dir: PathBuf,
    /// The outcome of the last save (the message, or the error), until the next key.
    notice: Option<Notice>,
    commands: Vec<Command>,
    quit: bool,
}

impl App {
    /// A browser of `root` on a screen of `size`, showing `protocol` in the status line. The
    /// listing of `root` is waiting in [`App::take_commands`]; once it arrives
    /// ([`AppEvent::Listed`]) the first entry is selected.
    pub fn new(root: &Path, protocol: &str, size: Size) -> Self {
        let mut app = Self {
            files: FileList::new(root),
            cache: HashMap::new(),
            review: None,
            failures: HashMap::new(),
            model: ModelStatus::Loading,
            current: None,
            shown: None,
            style: Style::default(),
            class: 0,
            method: CamMethod::Cam,
            maps: methods::MethodMaps::default(),
            help: false,
            protocol: protocol.to_string(),
            size,
            ticks: 0,
            ticket: 0,
            pending_render: None,
            save_dir: PathBuf::from("."),
            notice: None,
            commands: Vec::new(),
            quit: false,
        };
        let listing = app.files.reload();
        app.commands.push(Command::List(listing));
        app
    }

    /// The work recorded since the last call.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// Only the folder listings among the work recorded (the run loop starts reading the
    /// folder before the other threads exist); the rest stays.
    pub fn take_listings(&mut self) -> Vec<ListRequest> {
        self.commands
            .extract_if(.., |c| matches!(c, Command::List(_)))
            .filter_map(|c| match c {
                Command::List(request) => Some(request),
                _ => None,
            })
            .collect()
    }

    /// The file pane's list.
    pub fn files(&self) -> &FileList {
        &self.files
    }

    /// The dataset review, once the folder's labels are in.
    pub fn review(&self) -> Option<&Review> {
        self.review.as_ref()
    }

    /// The selected image, `None` while a folder (or nothing) is selected.
    pub fn current(&self) -> Option<&Current> {
        self.current.as_ref()
    }

    pub fn style(&self) -> Style {
        self.style
    }

    /// Which row of the predictions table the CAM shows (0 = the best class).
    pub fn class(&self) -> usize {
        self.class
    }

    /// Whether the help is open.
    pub fn help(&self) -> bool {
        self.help
    }

    pub fn should_quit(&self) -> bool {
        self.quit
    }

    /// True while something is in progress (the loop then ticks to animate the spinner).
    pub fn is_busy(&self) -> bool {
        let analysing = matches!(
            self.current,
            Some(Current {
                analysis: AnalysisState::Running,
                ..
            })
        ) && !matches!(self.model, ModelStatus::Unavailable(_));
        analysing
            || self.maps.asked.is_some()
            || self.files.loading()
            || self.pending_render.is_some()
            || matches!(
                self.model,
                ModelStatus::Loading | ModelStatus::Fetching { .. }
            )
    }

    /// Applies one event.
    pub fn update(&mut self, event: AppEvent) {
        match event {
            AppEvent::Input(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                self.on_key(key);
            }
            AppEvent::Input(Event::Mouse(mouse)) => self.on_mouse(mouse),
            AppEvent::Input(Event::Resize(width, height)) => self.resize(Size::new(width, height)),
            AppEvent::Input(_) => {}
            AppEvent::Worker(event) => self.on_worker(event),
            AppEvent::Render(event) => self.on_render(event),
            AppEvent::Listed(listing) => {
                if self.files.apply(listing) {
                    self.selection_changed();
                }
            }
            AppEvent::Saved(Ok(path)) => {
                let saved = format!("saved {}", status::shown_path(&path));
                self.notice = Some(Notice::Done(saved));
            }
            AppEvent::Saved(Err(e)) => self.notice = Some(Notice::Problem(escaped(&chain(&e)))),
            AppEvent::Dataset(Ok(loaded)) => self.review_dataset(*loaded),
            AppEvent::Dataset(Err(e)) => {
                let why = escaped(&chain(&e));
                self.notice = Some(Notice::Problem(format!("not reviewed as a dataset: {why}")));
            }
            AppEvent::Tick => self.ticks = self.ticks.wrapping_add(1),
            AppEvent::Protocol(name) => self.protocol = name,
            AppEvent::SaveDir(dir) => self.save_dir = dir,
            AppEvent::Method(method) => self.set_method(method),
            AppEvent::SelectOnArrival(path) => self.files.select_on_arrival(path),
        }
    }
}

/// An error message made safe to draw, on one line (cause chains may span several).
fn escaped(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    printable(std::ffi::OsStr::new(&one_line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::background::inference::Request;

    #[test]
    fn a_new_browser_reads_its_folder_before_anything_else() {
        let mut app = App::new(Path::new("images"), "halfblocks", Size::new(100, 30));
        assert!(app.files.loading() && app.files.entries.is_empty());
        let listings = app.take_listings();
        assert_eq!(listings.len(), 1);
        assert_eq!(listings[0].dir, Path::new("images"));
        assert!(app.take_commands().is_empty(), "nothing else is asked yet");
        app.update(AppEvent::Listed(listings[0].clone().run()));
        assert!(!app.files.loading());
        assert!(matches!(
            app.take_commands().as_slice(),
            [Command::Infer(Request::Analyze(key)), ..] if key.path.starts_with("images")
        ));
    }
}
