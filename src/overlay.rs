//! Pictures made from an analysis: the photo with one class's CAM laid over it, the heat map
//! alone, or the photo untouched, optionally with the CAM bounding box. Shared by the `cam`
//! command and the UI's render worker.

use image::{Rgb, RgbImage, imageops::FilterType};

use crate::model::Analysis;
use crate::model::cam::{self, BBOX_THRESHOLD, BBox, Colormap, Heat};
use crate::model::preprocess::Region;

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
}

impl View {
    /// The next view in the order the UI cycles through.
    pub fn next(self) -> Self {
        match self {
            View::Overlay => View::Original,
            View::Original => View::Heat,
            View::Heat => View::Overlay,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            View::Overlay => "overlay",
            View::Original => "original",
            View::Heat => "heat map",
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
    let Some(heat) = analysis.and_then(|a| heat(a, index, original, size)) else {
        return photo.clone();
    };
    let mut out = match style.view {
        View::Overlay => cam::blend(photo, &heat, style.colormap, style.alpha),
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

/// `img` scaled to fit inside `max` keeping its aspect ratio (never enlarged).
pub fn fit(img: &RgbImage, max: (u32, u32)) -> RgbImage {
    let (w, h) = img.dimensions();
    if w <= max.0 && h <= max.1 {
        return img.clone();
    }
    let scale = (f64::from(max.0) / f64::from(w)).min(f64::from(max.1) / f64::from(h));
    let nw = ((f64::from(w) * scale).round() as u32).max(1);
    let nh = ((f64::from(h) * scale).round() as u32).max(1);
    image::imageops::resize(img, nw, nh, FilterType::Triangle)
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
