//! The browser's state and its one way of changing: [`App::update`] takes an event (a key,
//! a worker's result, a tick) and records the work to ask of the workers as [`Command`]s.
//! Nothing here touches the terminal, so whole sessions are testable in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Position, Rect, Size};
use ratatui::style::Color;
use ratatui::text::Span;
use ratatui::widgets::{Block, Widget};

use super::files::{Entry, EntryKind, FileList, ListRequest, Listing};
use super::image_pane::{ImageBody, ImagePane};
use super::keys::{self, Action, Context};
use super::predictions::{PredictionsBody, PredictionsPane};
use super::render::{RenderEvent, RenderRequest, Rendered};
use super::review::{LoadedDataset, Mark, Review};
use super::save::{self, SaveRequest};
use super::status::StatusLine;
use super::{help, status};
use crate::model::Analysis;
use crate::model::cam::BBox;
use crate::overlay::{Style, View};
use crate::scoring::{self, Verdict};
use crate::text::printable;
use crate::worker::{Analysed, ImageKey, ModelStatus, Request, TOP_K, WorkerEvent};

/// Everything the event loop feeds into [`App::update`].
#[derive(Debug)]
pub enum AppEvent {
    /// A key, mouse or resize event from the terminal.
    Input(Event),
    /// News from the inference worker.
    Worker(WorkerEvent),
    /// A picture from the render thread.
    Render(RenderEvent),
    /// A folder's entries from the listing thread.
    Listed(Listing),
    /// Where a saved picture went, or why it could not be saved.
    Saved(Result<PathBuf, String>),
    /// The folder's ground truth, read in the background: the folder is then reviewed as
    /// a dataset (or why its labels could not be read).
    Dataset(Result<Box<LoadedDataset>, String>),
    /// Time passes (animates the spinner while something is in progress).
    Tick,
    /// The graphics protocol the terminal was found to speak, for the status line.
    Protocol(String),
    /// Where `s` writes from now on.
    SaveDir(PathBuf),
    /// Select this file once its folder's listing arrives (`camview FILE`).
    SelectOnArrival(PathBuf),
}

/// Work the event loop hands to the background threads.
#[derive(Debug, Clone)]
pub enum Command {
    /// Read a folder.
    List(ListRequest),
    Infer(Request),
    Render(RenderRequest),
    /// Pictures to make ahead of time (the neighbours of the one shown).
    Prepare(Vec<RenderRequest>),
    /// Write the picture shown as a PNG.
    Save(SaveRequest),
    /// Read the folder's ground truth again (answered by [`AppEvent::Dataset`]).
    ReadDataset,
}

pub use super::status::{MIN_HEIGHT, MIN_WIDTH};

/// Where each pane goes on a screen of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panes {
    pub files: Rect,
    pub image: Rect,
    pub predictions: Rect,
    pub status: Rect,
}

impl Panes {
    /// The layout of `area` with room for `classes` rows in the predictions table, or `None`
    /// when it is too small to be usable. Callers go through [`App::layout`], so drawing,
    /// mouse hits and the picture's size agree on where everything is.
    pub fn of(area: Rect, classes: usize) -> Option<Self> {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            return None;
        }
        let [main, status] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
        let files_width = (u32::from(area.width) * 3 / 10).clamp(24, 40) as u16;
        let [files, right] =
            Layout::horizontal([Constraint::Length(files_width), Constraint::Fill(1)]).areas(main);
        // The rows, a header and the border.
        let table_height = classes as u16 + 3;
        let [image, predictions] =
            Layout::vertical([Constraint::Fill(1), Constraint::Length(table_height)]).areas(right);
        Some(Self {
            files,
            image,
            predictions,
            status,
        })
    }

    /// Rows of the file list (inside its border).
    pub fn file_rows(&self) -> Rect {
        Block::bordered().inner(self.files)
    }

    /// The cells the picture may cover (inside the image pane's border).
    pub fn picture(&self) -> Rect {
        Block::bordered().inner(self.image)
    }
}

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
    notice: Option<Result<String, String>>,
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
            || self.files.loading()
            || self.pending_render.is_some()
            || matches!(
                self.model,
                ModelStatus::Loading | ModelStatus::Fetching { .. }
            )
    }

    /// The layout of `area`, the one used for drawing, mouse hits and the picture's size: a
    /// dataset's table keeps a row for a true class ranked below the top 5 (on every image,
    /// so the picture does not jump from one image to the next).
    pub fn layout(&self, area: Rect) -> Option<Panes> {
        let classes = TOP_K + usize::from(self.review.is_some());
        Panes::of(area, classes)
    }

    /// The layout of the current screen.
    pub fn panes(&self) -> Option<Panes> {
        self.layout(Rect::from((Position::ORIGIN, self.size)))
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
            AppEvent::Saved(result) => {
                self.notice = Some(result.map(|path| format!("saved {}", save::shown_path(&path))));
            }
            AppEvent::Dataset(Ok(loaded)) => self.review_dataset(*loaded),
            AppEvent::Dataset(Err(e)) => {
                self.notice = Some(Err(format!("not reviewed as a dataset: {}", escaped(&e))));
            }
            AppEvent::Tick => self.ticks = self.ticks.wrapping_add(1),
            AppEvent::Protocol(name) => self.protocol = name,
            AppEvent::SaveDir(dir) => self.save_dir = dir,
            AppEvent::SelectOnArrival(path) => self.files.select_on_arrival(path),
        }
    }

    /// A key: looked up in the key table where it now has its meaning, then done.
    fn on_key(&mut self, key: KeyEvent) {
        self.notice = None;
        if let Some(action) = keys::action(key, self.key_contexts()) {
            self.perform(action, key);
        }
    }

    /// Where keys are looked up now, first to last: the help and the dataset summary take
    /// every key; while a filter is typed, keys it does not use keep their meaning.
    fn key_contexts(&self) -> &'static [Context] {
        let summary = self.review.as_ref().is_some_and(|r| r.summary.is_some());
        match (self.help, self.files.typing, summary) {
            (true, _, _) => &[Context::Help],
            (false, true, true) => &[Context::Filter, Context::Summary],
            (false, true, false) => &[Context::Filter, Context::Browser, Context::Dataset],
            (false, false, true) => &[Context::Summary],
            (false, false, false) => &[Context::Browser, Context::Dataset],
        }
    }

    fn perform(&mut self, action: Action, key: KeyEvent) {
        match action {
            Action::Quit => self.quit = true,
            Action::Escape => self.escape(),
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-self.page_rows()),
            Action::PageDown => self.move_selection(self.page_rows()),
            Action::First => self.select(0),
            Action::Last => self.select(usize::MAX),
            Action::OpenFolder => self.open_folder(),
            Action::LeaveFolder => self.go_up(),
            Action::StartFilter => self.files.typing = true,
            Action::Reload => self.reload(),
            Action::OpenHelp => self.help = true,
            Action::CloseHelp => self.help = false,
            Action::NextView => self.restyle(|s| s.view = s.view.next()),
            Action::NextColormap => self.restyle(|s| s.colormap = s.colormap.next()),
            Action::MoreHeat => self.restyle(|s| s.alpha = step_alpha(s.alpha, 1)),
            Action::LessHeat => self.restyle(|s| s.alpha = step_alpha(s.alpha, -1)),
            Action::ToggleBoxes => self.restyle(|s| s.bbox = !s.bbox),
            Action::Save => self.save(),
            Action::Row(row) => self.choose_class(row),
            Action::NextRow => self.cycle_class(1),
            Action::PreviousRow => self.cycle_class(-1),
            Action::ShowTrueClass => self.show_true_class(),
            Action::NextShow => self.rearrange(|r| {
                r.flat = true;
                r.show = r.show.next();
            }),
            Action::NextOrder => self.rearrange(|r| {
                r.flat = true;
                r.order = r.order.next();
            }),
            Action::NextMiss => self.jump_to_miss(1),
            Action::PreviousMiss => self.jump_to_miss(-1),
            Action::ToggleFlat => self.toggle_flat(),
            Action::OpenSummary => {
                if let Some(review) = &mut self.review {
                    review.summary = Some(0);
                }
            }
            Action::KeepFilter => self.files.typing = false,
            Action::DeleteChar => self.delete_filter_char(),
            Action::ClearFilter => self.clear_filter(),
            Action::Type => {
                if let KeyCode::Char(c) = key.code {
                    let filter = format!("{}{c}", self.files.filter);
                    self.files.set_filter(filter);
                    self.selection_changed();
                }
            }
            Action::PreviousConfusion
            | Action::NextConfusion
            | Action::NarrowToConfusion
            | Action::CloseSummary => self.in_summary(action),
        }
    }

    /// Esc: the filter goes first, then the confusion the list is narrowed to, then camview.
    fn escape(&mut self) {
        if !self.files.filter.is_empty() {
            self.clear_filter();
        } else if self.review.as_ref().is_some_and(|r| r.confusion.is_some()) {
            self.rearrange(|r| r.confusion = None);
        } else {
            self.quit = true;
        }
    }

    fn reload(&mut self) {
        if self.files.flat {
            // The dataset's images and labels, read again; the list stays meanwhile.
            self.commands.push(Command::ReadDataset);
        } else {
            // New files appear; a changed file has a new key, so it is analysed again.
            let listing = self.files.reload();
            self.commands.push(Command::List(listing));
        }
    }

    fn clear_filter(&mut self) {
        self.files.clear_filter();
        self.selection_changed();
    }

    /// Backspace in the filter; on an empty filter it stops the typing.
    fn delete_filter_char(&mut self) {
        let mut filter = self.files.filter.clone();
        if filter.pop().is_none() {
            self.files.typing = false;
        }
        self.files.set_filter(filter);
        self.selection_changed();
    }

    /// The dataset summary's keys: move among the confusions, narrow the list to the chosen
    /// one, or close it.
    fn in_summary(&mut self, action: Action) {
        let Some(review) = &mut self.review else {
            return;
        };
        let confusions = review.confusions();
        let at = review.summary.unwrap_or(0);
        match action {
            Action::PreviousConfusion => review.summary = Some(at.saturating_sub(1)),
            Action::NextConfusion => {
                review.summary = Some((at + 1).min(confusions.len().saturating_sub(1)));
            }
            Action::NarrowToConfusion => {
                if let Some(c) = confusions.get(at) {
                    let pair = (c.truth, c.predicted);
                    self.rearrange(|r| {
                        r.summary = None;
                        r.flat = true;
                        r.show = super::review::Show::All;
                        r.confusion = Some(pair);
                    });
                }
            }
            _ => review.summary = None,
        }
    }

    fn on_mouse(&mut self, mouse: MouseEvent) {
        let Some(panes) = self.panes().filter(|_| !self.help) else {
            return;
        };
        let at = Position::new(mouse.column, mouse.row);
        let rows = panes.file_rows();
        let table = Block::bordered().inner(panes.predictions);
        match mouse.kind {
            _ if self.review.as_ref().is_some_and(|r| r.summary.is_some()) => {}
            MouseEventKind::Down(MouseButton::Left) if rows.contains(at) => {
                let index = self.files.offset + usize::from(at.y - rows.y);
                if index < self.files.visible.len() {
                    self.select(index);
                }
            }
            // Row 0 of the table is its header.
            MouseEventKind::Down(MouseButton::Left) if table.contains(at) && at.y > table.y => {
                self.choose_class(usize::from(at.y - table.y - 1));
            }
            MouseEventKind::ScrollDown if panes.files.contains(at) => self.move_selection(1),
            MouseEventKind::ScrollUp if panes.files.contains(at) => self.move_selection(-1),
            _ => {}
        }
    }

    fn resize(&mut self, size: Size) {
        let before = self.panes().map(|p| p.picture());
        self.size = size;
        let after = self.panes();
        if let Some(p) = after {
            self.files
                .scroll_into_view(usize::from(p.file_rows().height));
        }
        if after.map(|p| p.picture()) != before {
            self.request_render();
        }
    }

    fn on_worker(&mut self, event: WorkerEvent) {
        match event {
            WorkerEvent::Model(status) => self.model = status,
            WorkerEvent::Note(note) => self.notice = Some(Err(note)),
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
    fn rearrange_for_results(&mut self) {
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
    fn take_result(&mut self, key: ImageKey, result: Result<Analysed, String>) -> bool {
        if let Some(review) = &mut self.review {
            review.record(&key.path, result.as_ref().map_err(|_| ()));
        }
        let is_current = self.current.as_ref().is_some_and(|c| c.key == key);
        let state = match result {
            Ok(analysed) => {
                let analysis = Arc::clone(&analysed.analysis);
                self.cache.insert(key.clone(), analysed);
                AnalysisState::Done(analysis)
            }
            Err(e) => {
                let e = escaped(&e);
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

    /// The folder's labels are in: the file pane becomes the flat list of its images, the
    /// background sweep starts, and results without the true class pinned are redone.
    fn review_dataset(&mut self, loaded: LoadedDataset) {
        // What the dataset's files gave but cannot be used: the first, and how many more
        // (`camview eval` prints them all).
        if let Some(first) = loaded.dataset.warnings.first() {
            let more = match loaded.dataset.warnings.len() - 1 {
                0 => String::new(),
                n => format!(" (and {n} more: `camview eval` lists them all)"),
            };
            self.notice = Some(Err(format!("{}{more}", escaped(first))));
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
    fn rearrange(&mut self, change: impl FnOnce(&mut Review)) {
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
    fn flat_list(&mut self, arranged: Vec<usize>) {
        let Some(review) = &self.review else {
            return;
        };
        self.files.show_flat(review.entries(), arranged);
        self.selection_changed();
    }

    /// `f`: the flat list of the dataset, or its folders.
    fn toggle_flat(&mut self) {
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
    fn jump_to_miss(&mut self, step: isize) {
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
            None => self.notice = Some(Err("no top-1 miss in this list (yet)".into())),
        }
    }

    /// `t`: the CAM of the true class.
    fn show_true_class(&mut self) {
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

    fn on_render(&mut self, event: RenderEvent) {
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
            Err(e) => current.image_error = Some(escaped(&e)),
        }
    }

    /// Once the shown picture is final, the render thread may make those of the images next
    /// to it that have their result, so moving there shows them at once.
    fn prepare_neighbours(&mut self) {
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
                let analysis = self.cache.get(&e.key)?;
                Some(self.render_request(0, &e.key, Some(&analysis.analysis), 0, picture))
            })
            .collect();
        if !requests.is_empty() {
            self.commands.push(Command::Prepare(requests));
        }
    }

    fn page_rows(&self) -> isize {
        self.panes()
            .map_or(10, |p| (p.file_rows().height.max(2) - 1) as isize)
    }

    fn open_folder(&mut self) {
        if let Some(listing) = self.files.enter() {
            self.commands.push(Command::List(listing));
            self.selection_changed();
        }
    }

    fn go_up(&mut self) {
        if let Some(listing) = self.files.leave() {
            self.commands.push(Command::List(listing));
            self.selection_changed();
        }
    }

    fn move_selection(&mut self, delta: isize) {
        let before = self.files.selected;
        self.files.move_by(delta);
        if self.files.selected != before {
            self.selection_changed();
        }
    }

    fn select(&mut self, index: usize) {
        let before = self.files.selected;
        self.files.select(index);
        if self.files.selected != before {
            self.selection_changed();
        }
    }

    /// The selection moved (or the list changed): show the new entry and ask for its result.
    fn selection_changed(&mut self) {
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

    /// After the selected image has its result, the worker may analyse its neighbours.
    fn prefetch_neighbours(&mut self) {
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

    /// Asks for the picture shown to be saved at full size (once its analysis is in).
    fn save(&mut self) {
        let request = self
            .current
            .as_ref()
            .zip(self.analysis())
            .map(|(current, analysis)| SaveRequest {
                photo: current.key.path.clone(),
                analysis: Arc::clone(analysis),
                class: self.class,
                style: self.style,
                dir: self.save_dir.clone(),
                truth_boxes: self.truth_boxes(&current.key.path),
            });
        match request {
            Some(request) => {
                let to = save::shown_path(&request.destination());
                self.notice = Some(Ok(format!("saving {to}…")));
                self.commands.push(Command::Save(request));
            }
            None => self.notice = Some(Err("nothing to save yet: no analysed image".into())),
        }
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
    fn image_pane(&self) -> ImagePane<'_> {
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
        let class = match self.style.view {
            View::Original => String::new(),
            View::Grid => " — CAMs of the top 5, photo last".to_string(),
            View::Overlay | View::Heat => self
                .analysis()
                .and_then(|a| a.top.get(self.class))
                .map(|p| format!(" — CAM of {}", p.label))
                .unwrap_or_default(),
        };
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

    /// The predictions pane's view of the state.
    fn predictions_pane(&self) -> PredictionsPane<'_> {
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
            spinner: spinner(self.ticks),
            body,
        }
    }

    /// The status line's view of the state.
    fn status_line(&self) -> StatusLine<'_> {
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
                ModelStatus::Ready { device } => device,
                ModelStatus::Unavailable(_) => "no model",
                _ => "model loading",
            },
            protocol: &self.protocol,
            error,
            notice: self.notice.as_ref(),
            iou: self.shown_iou(),
            sweep: self.review.as_ref().and_then(|r| r.progress),
        }
    }

    /// The picture of the selected image, when the render thread delivered one.
    pub fn picture(&self) -> Option<&Rendered> {
        let current = self.current.as_ref()?;
        self.shown
            .as_ref()
            .filter(|(key, _)| *key == current.key)
            .map(|(_, r)| r)
    }

    fn restyle(&mut self, change: impl FnOnce(&mut Style)) {
        change(&mut self.style);
        self.request_render();
    }

    /// How many of the analysis's classes the table shows (and the CAM can be chosen from):
    /// the top 5, and the true class pinned after them in a dataset.
    fn classes(&self) -> usize {
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

    fn choose_class(&mut self, class: usize) {
        let available = self.classes();
        if class < available && class != self.class {
            self.class = class;
            self.request_render();
        }
    }

    fn cycle_class(&mut self, step: isize) {
        let available = self.classes();
        if available > 0 {
            let next = (self.class as isize + step).rem_euclid(available as isize);
            self.choose_class(next as usize);
        }
    }

    /// Asks the render thread for the selected image as it should look now.
    fn request_render(&mut self) {
        let (Some(current), Some(panes)) = (&self.current, self.panes()) else {
            return;
        };
        let picture = panes.picture();
        if picture.is_empty() {
            return;
        }
        self.ticket += 1;
        self.pending_render = Some(self.ticket);
        let analysis = match &current.analysis {
            AnalysisState::Done(a) => Some(a),
            _ => None,
        };
        let request = self.render_request(self.ticket, &current.key, analysis, self.class, picture);
        self.commands.push(Command::Render(request));
    }

    /// What to ask of the render thread to show `key` now, on `picture` cells.
    fn render_request(
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

    /// The truth boxes of the image at `path` (of its true class), as CAM boxes are kept.
    fn truth_boxes(&self, path: &Path) -> Vec<BBox> {
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
    fn shown_iou(&self) -> Option<f64> {
        let current = self.current.as_ref()?;
        let analysed = self.cache.get(&current.key)?;
        let cam = analysed.box_of(self.class)?;
        scoring::best_iou(self.truth()?, Some(cam))
    }
}

impl App {
    /// The one-cell mark before a file: its verdict in a dataset, else whether its result
    /// is cached.
    fn mark(&self, entry: &Entry) -> Span<'static> {
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

/// A class's label, for the file pane's border.
fn label(class: usize) -> String {
    crate::model::labels::label(class)
}

/// Alpha moved by `steps` tenths, kept within 0..=1 and on the tenths.
fn step_alpha(alpha: f32, steps: i32) -> f32 {
    let tenths = ((alpha * 10.0).round() as i32 + steps).clamp(0, 10);
    tenths as f32 / 10.0
}

/// An error message made safe to draw, on one line (cause chains may span several).
fn escaped(message: &str) -> String {
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    printable(std::ffi::OsStr::new(&one_line))
}

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
        let look = super::files::Look {
            title: self.review.as_ref().filter(|r| r.flat).map(|r| {
                let c = r.counts();
                format!(
                    "top-1 {}/{} · top-5 {}/{}",
                    c.top1, c.labelled, c.top5, c.labelled
                )
            }),
            subtitle: self.review.as_ref().filter(|r| r.flat).map(|r| {
                let narrowed = match r.confusion {
                    Some((truth, predicted)) => format!("{} → {}", label(truth), label(predicted)),
                    None => r.show.name().to_string(),
                };
                format!("{narrowed} · {}", r.order.name())
            }),
            mark: &mark,
        };
        super::files::draw(&self.files, &look, panes.files, buf);
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
            super::summary::draw(review, selected, right, buf);
        }
        if self.help {
            help::draw(self.review.is_some(), area, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_steps_stay_in_range() {
        assert_eq!(step_alpha(0.5, 1), 0.6);
        assert_eq!(step_alpha(1.0, 1), 1.0);
        assert_eq!(step_alpha(0.0, -1), 0.0);
        assert_eq!(step_alpha(0.3, -1), 0.2);
    }

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

    #[test]
    fn small_screens_have_no_layout() {
        assert!(Panes::of(Rect::new(0, 0, 59, 40), TOP_K).is_none());
        assert!(Panes::of(Rect::new(0, 0, 120, 14), TOP_K).is_none());
        let p = Panes::of(Rect::new(0, 0, 120, 40), TOP_K).unwrap();
        assert!(p.image.width > p.files.width && p.image.height > p.predictions.height);
    }
}
