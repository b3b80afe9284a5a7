//! The help overlay: every key, drawn over the screen until the next key press.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

/// (keys, what they do), in the order shown.
pub const KEYS: [(&str, &str); 18] = [
    ("↑ ↓  j k", "select the previous / next file"),
    ("PgUp PgDn", "move a page"),
    ("g G  Home End", "first / last file"),
    ("Enter → l", "open the selected folder"),
    ("Backspace ← h", "go up (not above the starting folder)"),
    ("/", "filter names as you type (Enter keeps it)"),
    (
        "Esc",
        "clear the filter (or the confusion shown), else quit",
    ),
    (
        "r",
        "re-read the folder (or the dataset's images and labels)",
    ),
    ("mouse", "click selects a file or class, wheel scrolls"),
    ("1 – 6", "show the CAM of that row of the table"),
    ("Tab  Shift-Tab", "next / previous class"),
    ("v", "cycle view: overlay, original, heat map, top-5 grid"),
    ("c", "cycle colormap: jet, turbo, viridis, inferno"),
    ("+ -", "more / less heat map in the blend"),
    ("b", "toggle the CAM box (green) and truth boxes (magenta)"),
    ("s", "save the picture at full size as PNG"),
    ("?", "toggle this help"),
    ("q  Ctrl-C", "quit"),
];

/// The keys of a labelled folder (a dataset), and its marks.
pub const DATASET_KEYS: [(&str, &str); 9] = [
    ("m", "show all → top-1 misses → top-1 hits"),
    ("o", "order: name → confidence ↑ → loss ↓ → margin ↑"),
    ("n N", "next / previous top-1 miss"),
    ("t", "show the true class's CAM"),
    ("d", "summary: per-class accuracy, confusions (Enter)"),
    ("f", "the flat list of all images, or their folders"),
    ("", ""),
    ("✓ 5 ✗", "top-1 right · in the top 5 · wrong"),
    ("· ! –", "not analysed yet · failed · no label"),
];

/// The marks outside a dataset.
const FOLDER_MARKS: [(&str, &str); 1] = [("✓", "marks files whose result is cached")];

/// Draws the help over `area`: the dataset's keys too when `dataset`.
pub fn draw(dataset: bool, area: Rect, buf: &mut Buffer) {
    let extra: &[(&str, &str)] = if dataset {
        &DATASET_KEYS
    } else {
        &FOLDER_MARKS
    };
    let keys: Vec<(&str, &str)> = KEYS
        .iter()
        .chain(&[("", "")])
        .chain(extra)
        .chain(&[("", ""), ("", "any key closes this help")])
        .copied()
        .collect();
    let width = keys
        .iter()
        .map(|(_, d)| 16 + d.chars().count() as u16)
        .max()
        .unwrap_or(40)
        + 4;
    let height = keys.len() as u16 + 2;
    let [popup] = Layout::horizontal([Constraint::Length(width.min(area.width))])
        .flex(Flex::Center)
        .areas(area);
    let [popup] = Layout::vertical([Constraint::Length(height.min(area.height))])
        .flex(Flex::Center)
        .areas(popup);
    Clear.render(popup, buf);
    let lines: Vec<Line> = keys
        .iter()
        .map(|(k, d)| {
            Line::from(vec![
                Span::raw(format!(" {k:<15}")).fg(Color::Yellow).bold(),
                Span::raw(*d),
            ])
        })
        .collect();
    Paragraph::new(lines)
        .block(
            Block::bordered()
                .title(Line::from(" Keys ").bold())
                .border_style(Color::Cyan),
        )
        .render(popup, buf);
}
