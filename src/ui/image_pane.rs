//! The image pane: the selected photo with its CAM, centred and fitted, or why it is not
//! there (a folder, still loading, a file that cannot be decoded).

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Rect};
use ratatui::style::{Color, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Widget, Wrap};
use ratatui_image::Image;
use ratatui_image::protocol::Protocol;

/// What the image pane shows: the App's state reduced to this pane's needs.
pub struct ImagePane<'a> {
    pub title: String,
    pub body: ImageBody<'a>,
    /// The spinner's frame, for what is in progress.
    pub spinner: char,
}

/// The pane's content.
pub enum ImageBody<'a> {
    /// Nothing to show: why (a folder is selected, or nothing).
    Hint(String),
    /// The photo cannot be shown.
    Error(&'a str),
    /// The help is open. Sixel and kitty pictures are painted by the terminal above the text
    /// cells, so they would show through it: the pane stays empty.
    Hidden,
    /// The picture, encoded for the terminal.
    Picture(&'a Protocol),
    /// This file's picture is on its way.
    Loading(&'a str),
}

impl ImagePane<'_> {
    pub fn draw(&self, area: Rect, buf: &mut Buffer) {
        let block = Block::bordered().title(Line::from(self.title.as_str()).bold());
        let inner = block.inner(area);
        block.render(area, buf);
        let spin = self.spinner;
        match &self.body {
            ImageBody::Hint(hint) => message(hint, Color::DarkGray, inner, buf),
            ImageBody::Error(error) => message(
                &format!("Cannot show this image:\n{error}"),
                Color::Red,
                inner,
                buf,
            ),
            ImageBody::Hidden => {}
            ImageBody::Picture(picture) => match self.picture_at(inner) {
                Some(at) => Image::new(picture).render(at, buf),
                // The pane shrank; a smaller picture is on its way.
                None => message(&format!("{spin} resizing…"), Color::DarkGray, inner, buf),
            },
            ImageBody::Loading(name) => {
                message(
                    &format!("{spin} loading {name}…"),
                    Color::DarkGray,
                    inner,
                    buf,
                );
            }
        }
    }

    /// Where the picture is drawn inside the pane's `inner` area, if it is: centred, while
    /// it fits (after the pane shrinks a smaller one is on its way).
    pub fn picture_at(&self, inner: Rect) -> Option<Rect> {
        let ImageBody::Picture(picture) = &self.body else {
            return None;
        };
        let size = picture.size();
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
