//! The predictions pane: the top-5 table (rank, label, probability as number and bar) with
//! the class whose CAM is shown highlighted, or the model's progress, or how to get weights.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Widget, Wrap};

use crate::model::Analysis;
use crate::model::cam_methods::CamMethod;
use crate::overlay::Style;

/// What the predictions pane shows: the App's state reduced to this pane's needs.
#[derive(Debug)]
pub struct PredictionsPane<'a> {
    /// The picture settings, shown in the border.
    pub style: Style,
    /// The maps' method, shown in the border when it is not CAM.
    pub method: CamMethod,
    /// The spinner's frame, for what is in progress.
    pub spinner: char,
    pub body: PredictionsBody<'a>,
}

/// The pane's content.
#[derive(Debug)]
pub enum PredictionsBody<'a> {
    /// No model: why, and what to do.
    Unavailable(&'a str),
    /// Weights are being fetched (first run).
    Fetching {
        phase: &'a str,
        done: u64,
        total: Option<u64>,
    },
    LoadingModel,
    NoImage,
    Analysing(&'a str),
    Failed(&'a str),
    /// The first `rows` of the top classes, the one whose CAM is shown highlighted, the
    /// true class (in a dataset) marked.
    Table {
        analysis: &'a Analysis,
        rows: usize,
        shown: usize,
        truth: Option<usize>,
    },
}

impl PredictionsPane<'_> {
    pub fn draw(&self, area: Rect, buf: &mut Buffer) {
        let style = self.style;
        let method = match self.method {
            CamMethod::Cam => String::new(),
            method => format!(" · {}", method.name()),
        };
        let mut settings = format!(
            " {}{method} · {} · α {:.1}",
            style.view.name(),
            style.colormap.name(),
            style.alpha
        );
        if style.bbox {
            settings.push_str(" · box");
        }
        settings.push(' ');
        let title = Line::from(" Predictions ").bold();
        let mut block = Block::bordered();
        // The settings share the top border with the title when there is room for both.
        if title.width() + settings.chars().count() + 2 <= usize::from(area.width) {
            block = block.title(Line::from(settings).right_aligned().fg(Color::DarkGray));
        }
        let block = block.title(title);
        let inner = block.inner(area);
        block.render(area, buf);

        let spin = self.spinner;
        let lines = match &self.body {
            PredictionsBody::Unavailable(why) => vec![
                Line::styled(format!("No model: {why}"), Color::Yellow),
                Line::from("Browsing still works; predictions and CAMs need the weights."),
            ],
            PredictionsBody::Fetching { phase, done, total } => {
                fetching(spin, phase, *done, *total, inner.width)
            }
            PredictionsBody::LoadingModel => vec![Line::from(format!("{spin} Loading the model…"))],
            PredictionsBody::NoImage => vec![Line::styled(
                "Select an image to see what the network looks at.",
                Color::DarkGray,
            )],
            PredictionsBody::Analysing(name) => {
                vec![Line::from(format!("{spin} Analysing {name}…"))]
            }
            PredictionsBody::Failed(e) => {
                vec![Line::styled(format!("Cannot analyse: {e}"), Color::Red)]
            }
            PredictionsBody::Table {
                analysis,
                rows,
                shown,
                truth,
            } => {
                return table(analysis, *rows, *shown, *truth, inner, buf);
            }
        };
        paragraph(lines, inner, buf);
    }
}

fn table(
    analysis: &Analysis,
    rows: usize,
    shown: usize,
    truth: Option<usize>,
    area: Rect,
    buf: &mut Buffer,
) {
    // Labels come first: the bar gets what is left beyond 20 cells for them, if that is
    // enough to read.
    const LABEL_MIN: u16 = 20;
    let fixed = 3 + 11 + 3; // rank, probability, column gaps
    let spare = area.width.saturating_sub(fixed + LABEL_MIN);
    let bar_width = match (area.width / 3).min(30).min(spare) {
        w if w < 4 => 0,
        w => w,
    };
    // The marker and the rank: a pinned true class may rank far below the top 5.
    let rank_width = analysis
        .top
        .iter()
        .take(rows)
        .map(|p| p.rank.to_string().len() as u16 + 1)
        .max()
        .unwrap_or(2)
        .max(3);
    let rows = analysis.top.iter().take(rows).enumerate().map(|(i, p)| {
        let marker = if i == shown { "▶" } else { " " };
        let is_truth = Some(p.index) == truth;
        let label = if is_truth {
            Line::from(vec![
                Span::raw(p.label.clone()),
                Span::styled(" ← true class", Color::Green),
            ])
        } else {
            Line::from(p.label.clone())
        };
        let row = Row::new(vec![
            Cell::from(format!("{marker}{}", p.rank)),
            Cell::from(label),
            Cell::from(Line::from(format!("{:6.2} %", p.prob * 100.0)).right_aligned()),
            Cell::from(Span::styled(bar(p.prob, bar_width), Color::Cyan)),
        ]);
        if i == shown {
            row.style(
                ratatui::style::Style::new()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD),
            )
        } else if is_truth {
            row.style(ratatui::style::Style::new().fg(Color::Green))
        } else {
            row
        }
    });
    let header = Row::new(["  #", "Class", "Probability", ""]).fg(Color::DarkGray);
    Table::new(
        rows,
        [
            Constraint::Length(rank_width),
            Constraint::Fill(1),
            Constraint::Length(11),
            Constraint::Length(bar_width),
        ],
    )
    .header(header)
    .render(area, buf);
}

/// A bar of `width` cells, filled to `fraction` in eighths of a cell.
pub fn bar(fraction: f32, width: u16) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * f32::from(width) * 8.0).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(PARTS[eighths % 8]);
    }
    s
}

fn fetching(
    spin: char,
    phase: &str,
    done: u64,
    total: Option<u64>,
    width: u16,
) -> Vec<Line<'static>> {
    let mb = |b: u64| b as f64 / 1e6;
    let amount = match total {
        Some(t) => format!(
            "{:.1} / {:.1} MB {}",
            mb(done),
            mb(t),
            bar(done as f32 / t.max(1) as f32, (width / 3).max(5))
        ),
        // Phases without a byte count (verifying, importing) have nothing to show.
        None if done == 0 => String::new(),
        None => format!("{:.1} MB", mb(done)),
    };
    vec![
        Line::from(format!(
            "{spin} No weights yet: downloading them (first run only)…"
        )),
        Line::from(format!("  {phase}")),
        Line::from(format!("  {amount}")),
    ]
}

fn paragraph(lines: Vec<Line<'static>>, area: Rect, buf: &mut Buffer) {
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(area, buf);
}
