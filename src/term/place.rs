//! Where a picture goes on the screen and how it is encoded for the terminal's protocol,
//! shared by the browser's image pane and `camview cam`.

use image::{DynamicImage, RgbImage};
use ratatui::layout::Size;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol;
use ratatui_image::protocol::halfblocks::Halfblocks;
use ratatui_image::{FontSize, Resize};

use super::Graphics;
use crate::overlay::fitted_size;

/// Where a picture goes when fitted into `room` cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The cells it covers.
    pub cells: Size,
    /// The size to scale it to before [`encode`]: the font's pixels over those cells, or for
    /// half blocks two pixels per cell (scaling to the font's pixels would only have them
    /// scaled down again, at ~20× the cost).
    pub pixels: (u32, u32),
}

/// The placement of a picture of `original` pixels, as large as `room` cells and the
/// terminal's largest picture allow.
pub fn placement(graphics: &Graphics, original: (u32, u32), room: Size) -> Placement {
    let picker = &graphics.picker;
    let font = picker.font_size();
    let mut bound = pixel_bound(room, font);
    if let Some((width, height)) = graphics.max_pixels {
        bound = (bound.0.min(width), bound.1.min(height));
    }
    let full = fitted_size(original, bound);
    let cells = Size::new(
        full.0
            .div_ceil(u32::from(font.width))
            .min(u32::from(room.width)) as u16,
        full.1
            .div_ceil(u32::from(font.height))
            .min(u32::from(room.height)) as u16,
    );
    let pixels = if picker.protocol_type() == ProtocolType::Halfblocks {
        (u32::from(cells.width), 2 * u32::from(cells.height))
    } else {
        full
    };
    Placement { cells, pixels }
}

/// The picture could not be encoded for the terminal's protocol.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the picture for the terminal")]
pub struct EncodeError(#[source] ratatui_image::errors::Errors);

/// Encodes `picture`, already scaled to its [`Placement`]'s pixels, for `picker`'s protocol
/// in `cells` (the encoders only ever shrink a picture).
pub fn encode(picker: &Picker, picture: RgbImage, cells: Size) -> Result<Protocol, EncodeError> {
    let picture = DynamicImage::ImageRgb8(picture);
    let protocol = if picker.protocol_type() == ProtocolType::Halfblocks {
        Halfblocks::new(picture, cells).map(Protocol::Halfblocks)
    } else {
        picker.new_protocol(picture, cells, Resize::Fit(None))
    };
    protocol.map_err(EncodeError)
}

/// The largest picture, in pixels, that `cells` can show.
pub fn pixel_bound(cells: Size, font: FontSize) -> (u32, u32) {
    (
        (u32::from(cells.width) * u32::from(font.width)).max(1),
        (u32::from(cells.height) * u32::from(font.height)).max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pictures_stay_within_the_largest_the_terminal_shows() {
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(ProtocolType::Sixel);
        let font = picker.font_size();
        assert_eq!((font.width, font.height), (10, 20));
        let room = Size::new(120, 43);
        let free = placement(&Graphics::from(picker.clone()), (451, 300), room);
        assert_eq!(free.pixels, (1200, 798));
        assert_eq!(free.cells, Size::new(120, 40));
        let xterm = Graphics {
            picker,
            max_pixels: Some((1000, 1000)),
        };
        let capped = placement(&xterm, (451, 300), room);
        assert_eq!(capped.pixels, (1000, 665));
        assert_eq!(capped.cells, Size::new(100, 34));
    }

    #[test]
    fn half_blocks_are_scaled_to_two_pixels_per_cell() {
        let graphics = Graphics::from(Picker::halfblocks());
        let placed = placement(&graphics, (451, 300), Size::new(100, 28));
        assert_eq!(placed.cells, Size::new(85, 28));
        assert_eq!(placed.pixels, (85, 56));
    }

    #[test]
    fn pixel_bound_is_cells_times_font() {
        let b = pixel_bound(Size::new(80, 30), FontSize::new(10, 20));
        assert_eq!(b, (800, 600));
    }
}
