//! The status line (file, pixel size, inference time, device, graphics protocol, errors, the
//! last save) and the screen shown when the terminal is too small.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

/// The smallest terminal the layout works in.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 15;

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
    pub notice: Option<&'a Result<String, String>>,
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
            Some(Ok(done)) => {
                spans.push(sep());
                spans.push(Span::raw(done.clone()).fg(Color::Green));
            }
            Some(Err(why)) => {
                spans.push(sep());
                spans.push(Span::raw(why.clone()).fg(Color::Red));
            }
            None => {}
        }
        draw_with_hint(Line::from(spans), area, buf);
    }
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
