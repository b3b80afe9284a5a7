//! Where each pane goes: the one layout used for drawing, mouse hits and the picture's size.

use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::widgets::Block;

use super::App;
use crate::analysis::TOP_K;
use crate::ui::status::{MIN_HEIGHT, MIN_WIDTH};

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

impl App {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_screens_have_no_layout() {
        assert!(Panes::of(Rect::new(0, 0, 59, 40), TOP_K).is_none());
        assert!(Panes::of(Rect::new(0, 0, 120, 14), TOP_K).is_none());
        let p = Panes::of(Rect::new(0, 0, 120, 40), TOP_K).unwrap();
        assert!(p.image.width > p.files.width && p.image.height > p.predictions.height);
    }
}
