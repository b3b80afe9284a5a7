//! What picture is on the screen, and when moving it leaves pixels behind. Konsole keeps
//! sixel and iTerm2 pixels after text is written over their cells, so when a picture goes
//! away or shrinks, the screen must be erased and drawn again; everywhere else that erase
//! would only cost a flicker.

use ratatui::layout::Rect;
use ratatui_image::picker::{Picker, ProtocolType};

/// The area of the picture drawn last, for protocols whose pixels can outlive their cells.
#[derive(Debug, Clone)]
pub struct ShownPicture {
    keeps_pixels: bool,
    area: Option<Rect>,
}

impl ShownPicture {
    pub fn new(picker: &Picker) -> Self {
        Self {
            keeps_pixels: keeps_pixels(picker),
            area: None,
        }
    }

    /// Records that the next frame shows its picture at `area` (`None`: no picture); true
    /// when the picture shown so far must be erased first.
    pub fn moves_to(&mut self, area: Option<Rect>) -> bool {
        let before = std::mem::replace(&mut self.area, area);
        self.keeps_pixels && uncovers(before, area)
    }
}

/// True for protocols whose pictures some terminals keep on screen until the cells are
/// erased, even after text is written over them (Konsole does, for sixel and iTerm2). Kitty's
/// pictures here sit on placeholder characters and go with them; half blocks are text.
pub fn keeps_pixels(picker: &Picker) -> bool {
    matches!(
        picker.protocol_type(),
        ProtocolType::Sixel | ProtocolType::Iterm2
    )
}

/// True when a picture drawn at `before` is not wholly painted over by one at `now`.
fn uncovers(before: Option<Rect>, now: Option<Rect>) -> bool {
    match (before, now) {
        (Some(before), Some(now)) => now.union(before) != now,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picture_is_uncovered_when_it_goes_or_the_next_one_does_not_cover_it() {
        let square = Rect::new(40, 2, 30, 30);
        let wide = Rect::new(30, 6, 50, 20);
        let whole = Rect::new(30, 2, 50, 30);
        assert!(uncovers(Some(square), None), "help or a folder hides it");
        assert!(
            uncovers(Some(square), Some(wide)),
            "its top and bottom stay"
        );
        assert!(uncovers(Some(wide), Some(square)), "its sides stay");
        assert!(
            !uncovers(Some(square), Some(square)),
            "same place: painted over"
        );
        assert!(
            !uncovers(Some(square), Some(whole)),
            "a larger one covers it"
        );
        assert!(!uncovers(None, Some(square)));
        assert!(!uncovers(None, None));
    }

    #[test]
    fn only_pixel_keeping_protocols_erase_and_only_when_uncovered() {
        let (square, whole) = (Rect::new(40, 2, 30, 30), Rect::new(30, 2, 50, 30));
        let mut sixel_picker = Picker::halfblocks();
        sixel_picker.set_protocol_type(ProtocolType::Sixel);
        let mut sixel = ShownPicture::new(&sixel_picker);
        assert!(!sixel.moves_to(Some(whole)), "nothing was shown");
        assert!(sixel.moves_to(Some(square)), "it shrank");
        assert!(!sixel.moves_to(Some(square)));
        assert!(sixel.moves_to(None), "help covers it");
        let mut halfblocks = ShownPicture::new(&Picker::halfblocks());
        halfblocks.moves_to(Some(whole));
        assert!(!halfblocks.moves_to(None), "text goes with its cells");
    }
}
