//! The status line (file, pixel size, inference time, device, graphics protocol, errors, the
//! last save) and the screen shown when the terminal is too small.

use std::path::Path;

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::background::inference::SweepProgress;
use crate::scoring::IOU_HIT;

/// The smallest terminal the layout works in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;

/// A message on the status line until the next key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something done (a save), in green.
    Done(String),
    /// Something wrong or missing, in red.
    Problem(String),
}

/// What the status line shows: the App's state reduced to this line's needs.
#[derive(Debug)]
pub struct StatusLine<'a> {
    /// The selected image's name.
    pub name: Option<&'a str>,
    /// Its size, once its picture is in.
    pub pixels: Option<(u32, u32)>,
    /// How long its analysis took.
    pub elapsed_ms: Option<u128>,
    /// The device, or where the model stands.
    pub device: &'a str,
    pub protocol: &'a str,
    /// Why the image cannot be shown or analysed.
    pub error: Option<&'a str>,
    /// The outcome of the last save, until the next key.
    pub notice: Option<&'a Notice>,
    /// The IoU of the shown CAM box with the truth box, in a dataset with boxes.
    pub iou: Option<f64>,
    /// The background sweep, in a dataset.
    pub sweep: Option<SweepProgress>,
    /// The maps of a method other than CAM, while they are made (`Score-CAM 312/2048`), or
    /// why they could not be.
    pub maps: Option<Notice>,
}

impl StatusLine<'_> {
    pub fn draw(&self, area: Rect, buf: &mut Buffer) {
        let sep = || Span::raw(" │ ").fg(Color::DarkGray);
        let mut spans = Vec::new();
        if let Some(name) = self.name {
            spans.push(Span::raw(name.to_string()).bold());
        }
        if let Some((w, h)) = self.pixels {
            spans.push(sep());
            spans.push(Span::raw(format!("{w}×{h} px")));
        }
        if let Some(ms) = self.elapsed_ms {
            spans.push(sep());
            spans.push(Span::raw(format!("{ms} ms")));
        }
        if let Some(iou) = self.iou {
            spans.push(sep());
            spans.push(Span::raw(format!("IoU {iou:.2}")).fg(if iou >= IOU_HIT {
                Color::Green
            } else {
                Color::Red
            }));
        }
        if let Some(sweep) = self.sweep.filter(|s| s.done < s.total) {
            spans.push(sep());
            spans.push(Span::raw(sweep_text(sweep)).fg(Color::Cyan));
        }
        match &self.maps {
            Some(Notice::Done(progress)) => {
                spans.push(sep());
                spans.push(Span::raw(progress.clone()).fg(Color::Cyan));
            }
            Some(Notice::Problem(why)) => {
                spans.push(sep());
                spans.push(Span::raw(why.clone()).fg(Color::Red));
            }
            None => {}
        }
        for part in [self.device, self.protocol] {
            if !spans.is_empty() {
                spans.push(sep());
            }
            spans.push(Span::raw(part.to_string()));
        }
        if let Some(error) = self.error {
            spans.push(sep());
            spans.push(Span::raw(format!("error: {error}")).fg(Color::Red));
        }
        match self.notice {
            Some(Notice::Done(done)) => {
                spans.push(sep());
                spans.push(Span::raw(done.clone()).fg(Color::Green));
            }
            Some(Notice::Problem(why)) => {
                spans.push(sep());
                spans.push(Span::raw(why.clone()).fg(Color::Red));
            }
            None => {}
        }
        draw_with_hint(Line::from(spans), area, buf);
    }
}

/// The sweep's progress: `sweep 120/5000 · 18.3 images/s · ETA 4:27`.
fn sweep_text(s: SweepProgress) -> String {
    let mut text = format!("sweep {}/{}", s.done, s.total);
    if let Some(rate) = s.per_second.filter(|r| *r > 0.0) {
        let left = ((s.total - s.done) as f64 / rate).round() as u64;
        let eta = if left >= 3600 {
            format!("{}:{:02}:{:02}", left / 3600, left / 60 % 60, left % 60)
        } else {
            format!("{}:{:02}", left / 60, left % 60)
        };
        text.push_str(&format!(" · {rate:.1} images/s · ETA {eta}"));
    }
    text
}

/// The status, with the key hint on the right when the line has room for both.
fn draw_with_hint(status: Line<'_>, area: Rect, buf: &mut Buffer) {
    let hint = Line::from(" ? help  q quit ")
        .fg(Color::DarkGray)
        .right_aligned();
    // The hint gives way to the status when the line is short.
    let fits = status.width() + hint.width() <= usize::from(area.width);
    status.render(area, buf);
    if fits {
        let width = hint.width() as u16;
        let right = Rect {
            x: area.right() - width,
            width,
            ..area
        };
        hint.render(right, buf);
    }
}

/// The whole screen when it cannot hold the layout.
pub fn draw_too_small(area: Rect, buf: &mut Buffer) {
    let text = format!(
        "Terminal too small: {}×{}\nneeds at least {MIN_WIDTH}×{MIN_HEIGHT}\n(q quits)",
        area.width, area.height
    );
    let top = area.height.saturating_sub(3) / 2;
    let area = Rect {
        y: area.y + top,
        height: area.height - top,
        ..area
    };
    Paragraph::new(text)
        .fg(Color::Yellow)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: false })
        .render(area, buf);
}

/// The path as the status line shows it: relative to the working directory when inside it.
pub fn shown_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
