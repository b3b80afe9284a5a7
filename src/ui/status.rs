//! The status line (file, pixel size, inference time, device, graphics protocol, errors, the
//! last save) and the screen shown when the terminal is too small.

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::app::{AnalysisState, App, MIN_HEIGHT, MIN_WIDTH};
use crate::worker::ModelStatus;

pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    let sep = || Span::raw(" │ ").fg(Color::DarkGray);
    let mut spans = Vec::new();
    if let Some(current) = &app.current {
        spans.push(Span::raw(current.name.clone()).bold());
        if let Some(picture) = app.picture() {
            let (w, h) = picture.original;
            spans.push(sep());
            spans.push(Span::raw(format!("{w}×{h} px")));
        }
        if let AnalysisState::Done(a) = &current.analysis {
            spans.push(sep());
            spans.push(Span::raw(format!("{} ms", a.elapsed.as_millis())));
        }
    }
    let device = match &app.model {
        ModelStatus::Ready { device } => device.as_str(),
        ModelStatus::Unavailable(_) => "no model",
        _ => "model loading",
    };
    for part in [device, app.protocol.as_str()] {
        if !spans.is_empty() {
            spans.push(sep());
        }
        spans.push(Span::raw(part.to_string()));
    }
    let error = app.current.as_ref().and_then(|c| {
        c.image_error.clone().or(match &c.analysis {
            AnalysisState::Failed(e) => Some(e.clone()),
            _ => None,
        })
    });
    if let Some(error) = error {
        spans.push(sep());
        spans.push(Span::raw(format!("error: {error}")).fg(Color::Red));
    }
    match &app.notice {
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
    let status = Line::from(spans);
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
