//! Pictures made from an analysis: the photo with one class's CAM laid over it, the heat map
//! alone, or the photo untouched, optionally with the CAM bounding box. Shared by the `cam`
//! command and the UI's render worker.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::model::Analysis;
use crate::model::cam::{self, BBOX_THRESHOLD, BBox, Colormap, Heat};
use crate::model::preprocess::{Region, resize_bilinear};

/// What the picture shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// The photo with the heat map blended over it.
    #[default]
    Overlay,
    /// The photo alone.
    Original,
    /// The heat map alone.
    Heat,
    /// The top classes' overlays side by side, in rank order, the photo in the last tile.
    Grid,
}

impl View {
    /// The next view in the order the UI cycles through.
    pub fn next(self) -> Self {
        match self {
            View::Overlay => View::Original,
            View::Original => View::Heat,
            View::Heat => View::Grid,
            View::Grid => View::Overlay,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            View::Overlay => "overlay",
            View::Original => "original",
            View::Heat => "heat map",
            View::Grid => "top-5 grid",
        }
    }
}

/// How to draw the CAM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    pub view: View,
    pub colormap: Colormap,
    /// Weight of the heat map in the blend, 0..1.
    pub alpha: f32,
    /// Draw the CAM paper's bounding box.
    pub bbox: bool,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            view: View::Overlay,
            colormap: Colormap::Jet,
            alpha: 0.5,
            bbox: false,
        }
    }
}

/// The heat map of CAM `index` of `analysis` at `size`, for an original image of
/// `original` size (the analysis' region is in original pixels).
pub fn heat(
    analysis: &Analysis,
    index: usize,
    original: (u32, u32),
    size: (u32, u32),
) -> Option<Heat> {
    let grid = analysis.cams.get(index)?;
    let sx = size.0 as f32 / original.0.max(1) as f32;
    let sy = size.1 as f32 / original.1.max(1) as f32;
    let r = analysis.region;
    let region = Region {
        x0: r.x0 * sx,
        y0: r.y0 * sy,
        x1: r.x1 * sx,
        y1: r.y1 * sy,
    };
    Some(cam::upsample(grid, region, size.0, size.1))
}

/// The CAM bounding box of class `index`, in original-image pixels.
pub fn bbox(analysis: &Analysis, index: usize, original: (u32, u32)) -> Option<BBox> {
    cam::bbox(&heat(analysis, index, original, original)?, BBOX_THRESHOLD)
}

/// Draws `photo` (the original image, possibly already scaled to the display size) with
/// the CAM of class `index` in `style`. The CAM is upsampled to `photo`'s size directly,
/// so a downscaled photo costs only its own pixels.
pub fn render(
    photo: &RgbImage,
    original: (u32, u32),
    analysis: Option<&Analysis>,
    index: usize,
    style: Style,
) -> RgbImage {
    let size = photo.dimensions();
    if let (View::Grid, Some(analysis)) = (style.view, analysis) {
        return grid(photo, original, analysis, index, style);
    }
    let Some(heat) = analysis.and_then(|a| heat(a, index, original, size)) else {
        return photo.clone();
    };
    let mut out = match style.view {
        View::Overlay | View::Grid => cam::blend(photo, &heat, style.colormap, style.alpha),
        View::Original => photo.clone(),
        View::Heat => cam::colorize(&heat, style.colormap),
    };
    if style.bbox
        && let Some(b) = cam::bbox(&heat, BBOX_THRESHOLD)
    {
        let thickness = (size.0.min(size.1) / 150).max(2);
        cam::draw_bbox(&mut out, b, Rgb([0, 255, 0]), thickness);
    }
    out
}

/// The colour of truth boxes: magenta, which none of the colormaps uses and the CAM box
/// (green) is not.
pub const TRUTH_COLOUR: Rgb<u8> = Rgb([255, 0, 255]);

/// Draws `boxes` (truth boxes in the pixels of a photo of size `original`, `x0 ≤ x < x1`)
/// over `picture`, which shows that photo at its own size.
pub fn draw_truth_boxes(picture: &mut RgbImage, original: (u32, u32), boxes: &[BBox]) {
    let size = picture.dimensions();
    let thickness = (size.0.min(size.1) / 150).max(2);
    for b in boxes {
        cam::draw_bbox(picture, b.scaled(original, size), TRUTH_COLOUR, thickness);
    }
}

/// Tiles in the grid view: the top five classes and the photo.
const GRID_TILES: u32 = 6;
/// Black between tiles, in pixels.
const GRID_GAP: u32 = 2;
/// The colour that frames the tile of the class chosen in the table.
const CHOSEN: Rgb<u8> = Rgb([255, 255, 255]);

/// The grid view on a canvas of `photo`'s size: the overlay of each top class in rank order
/// (left to right, then down), numbered, the tile of class `chosen` framed, and the photo
/// itself in the last tile (see [`grid_layout`]).
fn grid(
    photo: &RgbImage,
    original: (u32, u32),
    analysis: &Analysis,
    chosen: usize,
    style: Style,
) -> RgbImage {
    let (width, height) = photo.dimensions();
    let GridLayout { cols, tile, origin } = grid_layout((width, height));
    let small = scale(photo, tile);
    let overlay = Style {
        view: View::Overlay,
        ..style
    };
    let mut canvas = RgbImage::new(width, height);
    let classes = analysis.cams.len().min(GRID_TILES as usize - 1);
    for slot in 0..GRID_TILES {
        let (col, row) = (slot % cols, slot / cols);
        let at = (
            i64::from(origin.0 + col * (tile.0 + GRID_GAP)),
            i64::from(origin.1 + row * (tile.1 + GRID_GAP)),
        );
        let class = slot as usize;
        let mut picture = if class < classes {
            render(&small, original, Some(analysis), class, overlay)
        } else if slot == GRID_TILES - 1 {
            small.clone()
        } else {
            continue;
        };
        if class < classes {
            draw_number(&mut picture, class + 1);
            if class == chosen {
                let frame = BBox {
                    x0: 0,
                    y0: 0,
                    x1: tile.0,
                    y1: tile.1,
                };
                cam::draw_bbox(
                    &mut picture,
                    frame,
                    CHOSEN,
                    (tile.0.min(tile.1) / 60).max(2),
                );
            }
        }
        image::imageops::replace(&mut canvas, &picture, at.0, at.1);
    }
    canvas
}

/// Where the grid's tiles go on a canvas of a photo's `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GridLayout {
    cols: u32,
    /// Each tile's size: the photo's aspect ratio.
    tile: (u32, u32),
    /// The first tile's top-left corner: the block of tiles is centred.
    origin: (u32, u32),
}

/// 3 × 2 or 2 × 3 tiles, whichever gives them more pixels.
fn grid_layout((width, height): (u32, u32)) -> GridLayout {
    let layout = |cols: u32, rows: u32| {
        let room = (
            width.saturating_sub(GRID_GAP * (cols - 1)) / cols,
            height.saturating_sub(GRID_GAP * (rows - 1)) / rows,
        );
        let tile = fitted_size((width, height), room);
        let block = (
            cols * tile.0 + (cols - 1) * GRID_GAP,
            rows * tile.1 + (rows - 1) * GRID_GAP,
        );
        GridLayout {
            cols,
            tile,
            origin: (
                width.saturating_sub(block.0) / 2,
                height.saturating_sub(block.1) / 2,
            ),
        }
    };
    let (wide, tall) = (layout(3, 2), layout(2, 3));
    if tall.tile.0 * tall.tile.1 > wide.tile.0 * wide.tile.1 {
        tall
    } else {
        wide
    }
}

/// Digits 1–5 as 3 × 5 bitmaps, rows top to bottom, bit 2 the left column.
const DIGITS: [[u8; 5]; 5] = [
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
];

/// Writes the rank `n` (1–5) in the tile's top-left corner: white on a black box, a cell per
/// bitmap pixel, sized to the tile.
fn draw_number(tile: &mut RgbImage, n: usize) {
    let Some(glyph) = n.checked_sub(1).and_then(|i| DIGITS.get(i)) else {
        return;
    };
    let (w, h) = tile.dimensions();
    let px = (w.min(h) / 40).max(1);
    let (box_w, box_h) = (5 * px, 7 * px);
    for y in 0..box_h.min(h) {
        for x in 0..box_w.min(w) {
            let (gx, gy) = ((x / px).wrapping_sub(1), (y / px).wrapping_sub(1));
            let on = gx < 3 && gy < 5 && glyph[gy as usize] & (0b100 >> gx) != 0;
            tile.put_pixel(
                x,
                y,
                if on {
                    Rgb([255, 255, 255])
                } else {
                    Rgb([0, 0, 0])
                },
            );
        }
    }
}

/// The size of `size` scaled to fill `bound` as far as its aspect ratio allows (at least
/// 1 × 1, never past `bound`): small photos are enlarged too, so a pane or tile is used
/// whatever the photo's size. The one fitting rule of camview's pictures.
pub fn fitted_size(size: (u32, u32), bound: (u32, u32)) -> (u32, u32) {
    let (w, h) = (f64::from(size.0.max(1)), f64::from(size.1.max(1)));
    let s = (f64::from(bound.0) / w).min(f64::from(bound.1) / h);
    (
        ((w * s).round() as u32).clamp(1, bound.0.max(1)),
        ((h * s).round() as u32).clamp(1, bound.1.max(1)),
    )
}

/// `img` at exactly `size`, with the same bilinear resampling as the network's input.
pub fn scale(img: &RgbImage, size: (u32, u32)) -> RgbImage {
    let (width, height) = size;
    resize_bilinear(img, width.max(1), height.max(1))
}

/// Writes `picture` as a PNG at `path`, atomically (a reader never sees half a file).
pub fn write_png(picture: &RgbImage, path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture
        .write_to(&mut bytes, image::ImageFormat::Png)
        .context("cannot encode PNG")?;
    crate::model::weights::write_atomically(path, bytes.get_ref())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Map `index` of `analysis` at the network input's size, scaled to 0..1 (upsampled as
/// pytorch-grad-cam does: OpenCV's bilinear, then min–max), written to `to` as a float32 .npy
/// of shape (height, width) — what WSOL tools (wsolevaluation's `CamDataset`) read. Folders
/// are made as needed; the file appears whole or not at all.
pub fn write_map_npy(to: &Path, analysis: &Analysis, index: usize) -> std::io::Result<()> {
    use npyz::WriterBuilder;

    let grid = analysis.cams.get(index).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the analysis has no such map",
        )
    })?;
    let (width, height) = analysis.input;
    let map = crate::model::faithfulness::upsample_like_opencv(
        &grid.normalised(),
        grid.width,
        grid.height,
        width as usize,
        height as usize,
    );
    let mut bytes = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(&[u64::from(height), u64::from(width)])
        .writer(&mut bytes)
        .begin_nd()?;
    writer.extend(map)?;
    writer.finish()?;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::model::weights::write_atomically(to, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Prediction;
    use crate::model::cam::CamGrid;

    #[test]
    fn fitting_fills_the_bound_keeping_the_aspect_ratio() {
        assert_eq!(fitted_size((300, 200), (900, 900)), (900, 600), "enlarged");
        assert_eq!(fitted_size((4000, 1000), (800, 800)), (800, 200), "shrunk");
        assert_eq!(fitted_size((300, 200), (300, 200)), (300, 200));
        assert_eq!(fitted_size((640, 427), (212, 212)), (212, 141));
        assert_eq!(
            fitted_size((10_000, 1), (50, 50)),
            (50, 1),
            "never below 1 pixel"
        );
        assert_eq!(fitted_size((0, 0), (0, 7)), (1, 1));
    }

    /// Five classes whose CAMs are hot in different cells of a 2 × 2 grid.
    fn analysis() -> Analysis {
        let cams = (0..5)
            .map(|i| CamGrid {
                width: 2,
                height: 2,
                values: (0..4).map(|c| if c == i % 4 { 1.0 } else { 0.0 }).collect(),
            })
            .collect();
        let top = (0..5)
            .map(|i| Prediction {
                rank: i + 1,
                index: i,
                label: format!("class {i}"),
                prob: 0.1,
            })
            .collect();
        Analysis {
            top,
            cams,
            input: (64, 64),
            region: Region {
                x0: 0.0,
                y0: 0.0,
                x1: 300.0,
                y1: 200.0,
            },
            elapsed: Default::default(),
        }
    }

    fn grid_style() -> Style {
        Style {
            view: View::Grid,
            ..Style::default()
        }
    }

    #[test]
    fn the_grid_shows_each_class_in_rank_order_and_the_photo_last() {
        let photo = RgbImage::from_fn(300, 200, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let a = analysis();
        let chosen = 2;
        let grid = render(&photo, (300, 200), Some(&a), chosen, grid_style());
        assert_eq!(
            grid.dimensions(),
            (300, 200),
            "the canvas is the photo's size"
        );
        // A landscape photo: 3 × 2 tiles of (300 − 4) / 3 × (200 − 2) / 2, aspect kept, the
        // block of 298 × 132 centred.
        let layout = grid_layout((300, 200));
        let tile = layout.tile;
        assert_eq!((layout.cols, tile, layout.origin), (3, (98, 65), (1, 34)));
        let small = scale(&photo, tile);
        let tile_at = |slot: u32| {
            let x = layout.origin.0 + (slot % 3) * (tile.0 + GRID_GAP);
            let y = layout.origin.1 + (slot / 3) * (tile.1 + GRID_GAP);
            image::imageops::crop_imm(&grid, x, y, tile.0, tile.1).to_image()
        };
        let overlay = Style::default();
        for class in 0..5 {
            let mut want = render(&small, (300, 200), Some(&a), class, overlay);
            draw_number(&mut want, class + 1);
            let got = tile_at(class as u32);
            if class == chosen {
                // Framed: the frame is white, the inside is the overlay.
                assert_eq!(*got.get_pixel(tile.0 / 2, 0), CHOSEN);
                assert_eq!(
                    got.get_pixel(tile.0 / 2, tile.1 / 2),
                    want.get_pixel(tile.0 / 2, tile.1 / 2)
                );
            } else {
                assert!(got == want, "tile {class} is the overlay of class {class}");
            }
        }
        assert!(tile_at(5) == small, "the last tile is the photo");
        // The tiles differ: each class's map is hot somewhere else.
        assert!(tile_at(0) != tile_at(1));
    }

    #[test]
    fn a_portrait_photo_gets_two_columns_and_tiny_canvases_do_not_panic() {
        let photo = RgbImage::from_pixel(120, 300, Rgb([10, 20, 30]));
        let grid = render(&photo, (120, 300), Some(&analysis()), 0, grid_style());
        assert_eq!(grid.dimensions(), (120, 300));
        // 2 × 3: the photo tile sits in the third row, second column.
        let layout = grid_layout((120, 300));
        let tile = layout.tile;
        assert_eq!(layout.cols, 2);
        let x = layout.origin.0 + tile.0 + GRID_GAP;
        let y = layout.origin.1 + 2 * (tile.1 + GRID_GAP);
        assert_eq!(
            *grid.get_pixel(x + tile.0 / 2, y + tile.1 / 2),
            Rgb([10, 20, 30])
        );
        for size in [(1, 1), (3, 2), (7, 1)] {
            let photo = RgbImage::new(size.0, size.1);
            let grid = render(&photo, size, Some(&analysis()), 4, grid_style());
            assert_eq!(grid.dimensions(), size);
        }
    }

    #[test]
    fn without_an_analysis_the_grid_is_the_photo() {
        let photo = RgbImage::from_pixel(30, 20, Rgb([1, 2, 3]));
        assert!(render(&photo, (30, 20), None, 0, grid_style()) == photo);
    }
}
