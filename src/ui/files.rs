//! The file pane: one folder's sub-folders and images (natural order, filtered by name) as
//! the listing thread ([`crate::background::listing`]) read them, and the drawing of that
//! list with the selection, cache marks and counts.

use std::path::{Path, PathBuf};

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};

pub use crate::background::listing::{Entry, EntryKind, ListRequest, Listing};
use crate::text::printable;

/// The listing of the current folder and where the user is in it.
#[derive(Debug, Clone)]
pub struct FileList {
    /// The folder given on the command line: the user never goes above it.
    pub root: PathBuf,
    pub dir: PathBuf,
    pub entries: Vec<Entry>,
    /// Why the folder could not be read, if it could not.
    pub error: Option<String>,
    /// The name filter; `typing` while the user edits it.
    pub filter: String,
    pub typing: bool,
    /// Indices into `entries` that pass the filter, in order.
    pub visible: Vec<usize>,
    /// Index into `visible`.
    pub selected: usize,
    /// The entries are a whole dataset's images, not one folder's.
    pub flat: bool,
    /// Which entries show, in what order, before the name filter (the dataset review's
    /// narrowing and sort); `None`: all, as listed.
    arranged: Option<Vec<usize>>,
    /// First visible row shown (kept by [`FileList::scroll_into_view`]).
    pub offset: usize,
    /// The listing asked of the [`Lister`] and not yet applied.
    pending: Option<Pending>,
    /// The last ticket handed out.
    ticket: u64,
}

/// A listing on its way.
#[derive(Debug, Clone)]
struct Pending {
    ticket: u64,
    /// The entry to select once it arrives (the folder just left); otherwise the selection
    /// stays on the same path if it is still there.
    select: Option<PathBuf>,
}

impl FileList {
    /// An empty list of `root`; [`FileList::reload`] asks for its entries.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            dir: root.to_path_buf(),
            entries: Vec::new(),
            error: None,
            filter: String::new(),
            typing: false,
            visible: Vec::new(),
            selected: 0,
            flat: false,
            arranged: None,
            offset: 0,
            pending: None,
            ticket: 0,
        }
    }

    /// Shows `entries` (a dataset's images, below the root) as one list, arranged; the
    /// selection stays on the same path when it is there.
    pub fn show_flat(&mut self, entries: Vec<Entry>, arranged: Vec<usize>) {
        let was = self.selected().map(|e| e.path.clone());
        self.dir = self.root.clone();
        self.entries = entries;
        self.error = None;
        self.pending = None;
        self.flat = true;
        self.arranged = Some(arranged);
        self.visible = self.passing_filter();
        self.selected = was
            .and_then(|p| self.visible.iter().position(|&i| self.entries[i].path == p))
            .unwrap_or(0);
    }

    /// Changes which entries show and in what order, keeping the selection when it stays.
    pub fn arrange(&mut self, arranged: Vec<usize>) {
        self.arranged = Some(arranged);
        self.apply_filter();
    }

    /// Leaves the flat list for the folder of the selected image, selecting it there: the
    /// request for that folder's listing.
    pub fn show_folders(&mut self) -> ListRequest {
        let selected = self.selected().map(|e| e.path.clone());
        let dir = selected
            .as_deref()
            .and_then(Path::parent)
            .filter(|d| d.starts_with(&self.root))
            .map_or_else(|| self.root.clone(), Path::to_path_buf);
        self.flat = false;
        self.arranged = None;
        self.change_to(dir, selected)
    }

    /// Selects `path` once the listing on its way arrives (when it is there).
    pub fn select_on_arrival(&mut self, path: PathBuf) {
        if let Some(pending) = &mut self.pending {
            pending.select = Some(path);
        }
    }

    /// Asks for the current folder again. The entries shown stay until the answer comes
    /// ([`FileList::apply`]), and the selection then stays on the same path.
    pub fn reload(&mut self) -> ListRequest {
        self.request(None)
    }

    /// True while a listing is on its way.
    pub fn loading(&self) -> bool {
        self.pending.is_some()
    }

    /// Takes in a listing; false (and nothing changes) unless it answers the latest request.
    pub fn apply(&mut self, listing: Listing) -> bool {
        let Some(pending) = self.pending.take_if(|p| p.ticket == listing.ticket) else {
            return false;
        };
        let keep = pending
            .select
            .or_else(|| self.selected().map(|e| e.path.clone()));
        match listing.result {
            Ok(entries) => {
                self.entries = entries;
                self.error = None;
            }
            Err(e) => {
                self.entries.clear();
                self.error = Some(printable(std::ffi::OsStr::new(&e.to_string())));
            }
        }
        self.visible = self.passing_filter();
        self.selected = keep
            .and_then(|p| self.visible.iter().position(|&i| self.entries[i].path == p))
            .unwrap_or(0);
        true
    }

    /// Records a new listing of `dir` as the one awaited.
    fn request(&mut self, select: Option<PathBuf>) -> ListRequest {
        self.ticket += 1;
        self.pending = Some(Pending {
            ticket: self.ticket,
            select,
        });
        ListRequest {
            ticket: self.ticket,
            dir: self.dir.clone(),
        }
    }

    /// Moves to `dir`: its entries are unknown until its listing arrives.
    fn change_to(&mut self, dir: PathBuf, select: Option<PathBuf>) -> ListRequest {
        self.dir = dir;
        self.entries.clear();
        self.error = None;
        self.clear_filter();
        self.selected = 0;
        self.offset = 0;
        self.request(select)
    }

    /// The selected entry, if any.
    pub fn selected(&self) -> Option<&Entry> {
        self.visible
            .get(self.selected)
            .and_then(|&i| self.entries.get(i))
    }

    /// Moves the selection by `delta` rows, clamped to the list.
    pub fn move_by(&mut self, delta: isize) {
        let last = self.visible.len().saturating_sub(1);
        self.selected = self.selected.saturating_add_signed(delta).min(last);
    }

    pub fn select(&mut self, index: usize) {
        self.selected = index.min(self.visible.len().saturating_sub(1));
    }

    /// Enters the selected folder: the request for its listing, if there is a folder.
    pub fn enter(&mut self) -> Option<ListRequest> {
        let dir = self
            .selected()
            .filter(|e| e.kind == EntryKind::Folder)?
            .path
            .clone();
        Some(self.change_to(dir, None))
    }

    /// Goes to the parent folder (never above the root): the request for its listing, which
    /// selects the folder we left once it arrives.
    pub fn leave(&mut self) -> Option<ListRequest> {
        if self.dir == self.root {
            return None;
        }
        let parent = self.dir.parent()?.to_path_buf();
        let left = self.dir.clone();
        Some(self.change_to(parent, Some(left)))
    }

    /// Sets the filter text and keeps the selected entry selected when it still passes.
    pub fn set_filter(&mut self, filter: String) {
        self.filter = filter;
        self.apply_filter();
    }

    pub fn clear_filter(&mut self) {
        self.typing = false;
        self.set_filter(String::new());
    }

    fn apply_filter(&mut self) {
        let was = self.selected().map(|e| e.path.clone());
        self.visible = self.passing_filter();
        self.selected = was
            .and_then(|p| self.visible.iter().position(|&i| self.entries[i].path == p))
            .unwrap_or(0);
    }

    /// Indices of the entries that pass the filter, in order.
    fn passing_filter(&self) -> Vec<usize> {
        let needle = self.filter.to_lowercase();
        let passes = |i: usize| needle.is_empty() || self.entries[i].lower.contains(&needle);
        match &self.arranged {
            Some(order) => order
                .iter()
                .copied()
                .filter(|&i| i < self.entries.len() && passes(i))
                .collect(),
            None => (0..self.entries.len()).filter(|&i| passes(i)).collect(),
        }
    }

    /// Adjusts the scroll offset so the selection is one of `rows` shown rows.
    pub fn scroll_into_view(&mut self, rows: usize) {
        let rows = rows.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(self.visible.len().saturating_sub(rows));
    }

    /// The images around the selection, nearest first (for prefetching).
    pub fn neighbours(&self, reach: usize) -> Vec<&Entry> {
        let mut out = Vec::new();
        for d in 1..=reach {
            for i in [self.selected.checked_add(d), self.selected.checked_sub(d)]
                .into_iter()
                .flatten()
            {
                if let Some(e) = self.visible.get(i).map(|&i| &self.entries[i])
                    && e.kind == EntryKind::Image
                {
                    out.push(e);
                }
            }
        }
        out
    }

    /// The folder as shown in the title: the root as given, then the path below it.
    pub fn title(&self) -> String {
        let root = printable(self.root.as_os_str());
        match self.dir.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => {
                format!("{root}/{}", printable(rel.as_os_str()))
            }
            _ => root,
        }
    }
}

/// How the pane is dressed beyond its entries.
pub struct Look<'a> {
    /// Replaces the folder in the top border (the dataset review's counts).
    pub title: Option<String>,
    /// Goes before the count in the bottom border (what the list is narrowed to).
    pub subtitle: Option<String>,
    /// The one-cell mark before each entry.
    pub mark: &'a dyn Fn(&Entry) -> Span<'static>,
}

/// Draws the list into `area`: a bordered block titled with the folder, one row per entry,
/// the filter (when set) at the bottom.
pub fn draw(list: &FileList, look: &Look, area: Rect, buf: &mut Buffer) {
    let folders = list
        .visible
        .iter()
        .filter(|&&i| list.entries[i].kind == EntryKind::Folder)
        .count();
    let images = list.visible.len() - folders;
    let count = match (folders, images) {
        _ if list.loading() && list.entries.is_empty() => "reading…".to_string(),
        (0, n) => plural(n, "image"),
        (f, n) => format!("{}, {}", plural(f, "folder"), plural(n, "image")),
    };
    let title = look.title.clone().unwrap_or_else(|| list.title());
    let mut block = Block::bordered()
        .title(Line::from(format!(" {title} ")).bold())
        .title_bottom(Line::from(format!(" {count} ")).right_aligned());
    if let Some(subtitle) = &look.subtitle {
        // Left, so a long one is cut at its end, not its start.
        block = block.title_bottom(Line::from(format!(" {subtitle} ")).left_aligned());
    }
    if list.typing || !list.filter.is_empty() {
        let cursor = if list.typing { "▏" } else { "" };
        block = block.title_bottom(Line::from(vec![
            Span::raw(" /"),
            Span::styled(format!("{}{cursor} ", list.filter), Color::Yellow),
        ]));
    }
    let inner = block.inner(area);
    block.render(area, buf);

    if let Some(error) = &list.error {
        // A folder that cannot be read has no entries: the reason, wrapped to show whole in
        // the narrow pane.
        Paragraph::new(format!("Cannot read this folder: {error}"))
            .fg(Color::Red)
            .wrap(Wrap { trim: true })
            .render(inner, buf);
        return;
    }
    let rows = usize::from(inner.height);
    let mut lines = Vec::with_capacity(rows);
    if list.visible.is_empty() {
        let why = if list.loading() {
            "reading the folder…"
        } else if !list.filter.is_empty() {
            "nothing matches the filter"
        } else if list.flat {
            "no image is in this view yet"
        } else {
            "no images here"
        };
        lines.push(Line::styled(why, Color::DarkGray));
    }
    for (row, &i) in list.visible.iter().enumerate().skip(list.offset).take(rows) {
        let entry = &list.entries[i];
        let selected = row == list.selected;
        let name_style = match entry.kind {
            EntryKind::Folder => Style::new().fg(Color::Blue).bold(),
            EntryKind::Image => Style::new(),
        };
        let suffix = if entry.kind == EntryKind::Folder {
            "/"
        } else {
            ""
        };
        let mut name = Span::styled(format!("{}{suffix}", entry.name), name_style);
        if selected {
            name = name.patch_style(Modifier::REVERSED);
        }
        let line = Line::from(vec![
            (look.mark)(entry),
            Span::raw(if selected { "▶ " } else { "  " }),
            name,
        ]);
        lines.push(line);
    }
    Paragraph::new(lines).render(inner, buf);
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
