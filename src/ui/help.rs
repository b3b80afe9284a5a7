//! The help overlay: every key, drawn over the screen until the next key press.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::keys::{self, Context};

/// The marks of a dataset's files.
const DATASET_MARKS: [(&str, &str); 2] = [
    ("✓ 5 ✗", "top-1 right · in the top 5 · wrong"),
    ("· ! –", "not analysed yet · failed · no label"),
];

/// The marks outside a dataset.
const FOLDER_MARKS: [(&str, &str); 1] = [("✓", "marks files whose result is cached")];

/// Draws the help over `area`: the dataset's keys too when `dataset`.
pub fn draw(dataset: bool, area: Rect, buf: &mut Buffer) {
    let listed = |context| keys::of(context).map(|e| (e.keys, e.help));
    let mut keys: Vec<(&str, &str)> = listed(Context::Browser).collect();
    keys.push(("", ""));
    if dataset {
        keys.extend(listed(Context::Dataset));
        keys.push(("", ""));
        keys.extend(DATASET_MARKS);
    } else {
        keys.extend(FOLDER_MARKS);
    }
    keys.extend([("", ""), ("", "any key closes this help")]);
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
