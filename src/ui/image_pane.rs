//! The image pane: the selected photo with its CAM, centred and fitted, or why it is not
//! there (a folder, still loading, a file that cannot be decoded).

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use ratatui_image::Image;

use super::app::{App, spinner};
use super::files::EntryKind;
use crate::overlay::View;

pub fn draw(app: &App, area: Rect, buf: &mut Buffer) {
    let title = match &app.current {
        Some(current) => {
            let class = match app.style.view {
                View::Original => String::new(),
                View::Grid => " — CAMs of the top 5, photo last".to_string(),
                View::Overlay | View::Heat => app
                    .analysis()
                    .and_then(|a| a.top.get(app.class))
                    .map(|p| format!(" — CAM of {}", p.label))
                    .unwrap_or_default(),
            };
            format!(" {}{class} ", current.name)
        }
        None => " Image ".to_string(),
    };
    let block = Block::bordered().title(Line::from(title).bold());
    let inner = block.inner(area);
    block.render(area, buf);

    let Some(current) = &app.current else {
        let hint = match app.files.selected() {
            Some(e) if e.kind == EntryKind::Folder => {
                format!("{}/ is a folder: Enter opens it", e.name)
            }
            _ => "No image selected".to_string(),
        };
        message(&hint, Color::DarkGray, inner, buf);
        return;
    };
    if let Some(error) = &current.image_error {
        message(
            &format!("Cannot show this image:\n{error}"),
            Color::Red,
            inner,
            buf,
        );
        return;
    }
    if app.help {
        // Sixel and kitty pictures are painted by the terminal above the text cells, so they
        // would show through the help; leave the pane empty while it is open.
        return;
    }
    match (app.picture(), picture_at(app, inner)) {
        (Some(picture), Some(at)) => Image::new(&picture.protocol).render(at, buf),
        // The pane shrank; a smaller picture is on its way.
        (Some(_), None) => message(
            &format!("{} resizing…", spinner(app.ticks)),
            Color::DarkGray,
            inner,
            buf,
        ),
        (None, _) => message(
            &format!("{} loading {}…", spinner(app.ticks), current.name),
            Color::DarkGray,
            inner,
            buf,
        ),
    }
}

/// Where the picture is drawn inside the pane's `inner` area, if it is: centred, while it
/// fits (after the pane shrinks a smaller one is on its way) and the help is closed.
pub fn picture_at(app: &App, inner: Rect) -> Option<Rect> {
    if app.help || app.current.as_ref()?.image_error.is_some() {
        return None;
    }
    let size = app.picture()?.protocol.size();
    if size.width > inner.width || size.height > inner.height {
        return None;
    }
    Some(Rect {
        x: inner.x + (inner.width - size.width) / 2,
        y: inner.y + (inner.height - size.height) / 2,
        width: size.width,
        height: size.height,
    })
}

/// `text` centred vertically, wrapped.
fn message(text: &str, color: Color, area: Rect, buf: &mut Buffer) {
    let lines = text.lines().count() as u16;
    let top = area.height.saturating_sub(lines) / 2;
    let area = Rect {
        y: area.y + top,
        height: area.height - top,
        ..area
    };
    Paragraph::new(text.to_string())
        .fg(color)
        .alignment(Alignment::Center)
        .wrap(Wrap { trim: false })
        .render(area, buf);
}
