//! Image in, tensor out: bounded decoding with EXIF orientation, the three resize modes, and
//! ImageNet normalisation.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage, imageops::FilterType};

/// ImageNet channel means (RGB, on 0..1 values).
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB, on 0..1 values).
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// The side the network was trained on.
pub const TRAIN_SIDE: u32 = 224;
/// `center` mode resizes the shorter side to this before cropping 224 (torchvision eval).
const CENTER_RESIZE: u32 = 256;
/// In `full` mode the longer side is capped at this many pixels (6 × 224), so a panorama
/// cannot ask for an unbounded forward pass; its shorter side shrinks to keep the aspect.
pub const FULL_MAX_SIDE: u32 = 1344;
/// Largest image dimension we decode.
const MAX_DIMENSION: u32 = 16_384;
/// Largest allocation a decoder may make (a decompression bomb fails here, not in the OOM killer).
const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// How an image becomes the network's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Keep the aspect ratio, shorter side → 224, no crop: the CAM covers the whole photo.
    #[default]
    Full,
    /// Stretch to 224 × 224.
    Squash,
    /// Shorter side → 256, centre crop 224 × 224 (torchvision's evaluation transform).
    Center,
}

/// Why an image could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is empty (0 bytes)")]
    Empty { path: PathBuf },
    #[error("cannot decode {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error("{path} is {width}×{height}; the smallest usable image is 1×1")]
    Degenerate {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

/// Decodes `path` (JPEG, PNG, WebP, GIF first frame, BMP, TIFF) to RGB with its EXIF
/// orientation applied, refusing images whose decoding would exceed the memory bound.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let decode_err = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(open_err)?.len() == 0 {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
        });
    }
    let reader = ImageReader::open(path)
        .map_err(open_err)?
        .with_guessed_format()
        .map_err(open_err)?;
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    decoder.set_limits(decode_limits()).map_err(decode_err)?;
    let orientation = decoder.orientation().map_err(decode_err)?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Degenerate {
            path: path.to_path_buf(),
            width: img.width(),
            height: img.height(),
        });
    }
    Ok(img.into_rgb8())
}

fn decode_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    limits
}

/// The part of the original image, in its pixels, that the network input shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// A network input and how it maps back onto the original image.
#[derive(Debug)]
pub struct Prepared {
    /// 1 × 3 × H × W, normalised RGB.
    pub tensor: Tensor,
    /// Size of the original (oriented) image.
    pub original: (u32, u32),
    /// Size of the network input (width, height).
    pub input: (u32, u32),
    /// Where the input sits in the original image (all of it, except in `center` mode).
    pub region: Region,
}

/// Input size for an image of `width` × `height` in `mode`, before any crop.
pub fn resized_size(width: u32, height: u32, mode: ResizeMode) -> (u32, u32) {
    let shorter_to = |target: u32| {
        let (w, h) = (f64::from(width), f64::from(height));
        let scale = f64::from(target) / w.min(h);
        let scale = scale
            .min(f64::from(FULL_MAX_SIDE) / w.max(h).max(1.0))
            .max(0.0);
        let side = |v: f64| ((v * scale).round() as u32).max(1);
        (side(w), side(h))
    };
    match mode {
        ResizeMode::Squash => (TRAIN_SIDE, TRAIN_SIDE),
        ResizeMode::Full => shorter_to(TRAIN_SIDE),
        ResizeMode::Center => shorter_to(CENTER_RESIZE),
    }
}

/// Resizes, crops and normalises `img` into the network's input.
pub fn prepare(img: &RgbImage, mode: ResizeMode, device: &Device) -> candle_core::Result<Prepared> {
    let (w, h) = img.dimensions();
    let (rw, rh) = resized_size(w, h, mode);
    let resized = image::imageops::resize(img, rw, rh, FilterType::Triangle);
    let full = Region {
        x0: 0.0,
        y0: 0.0,
        x1: w as f32,
        y1: h as f32,
    };
    let (input, region) = match mode {
        ResizeMode::Full | ResizeMode::Squash => (resized, full),
        ResizeMode::Center => {
            let side = TRAIN_SIDE.min(rw).min(rh);
            // torchvision's CenterCrop rounds the offset to the nearest pixel.
            let left = ((f64::from(rw - side)) / 2.0).round() as u32;
            let top = ((f64::from(rh - side)) / 2.0).round() as u32;
            let crop = image::imageops::crop_imm(&resized, left, top, side, side).to_image();
            let (sx, sy) = (w as f32 / rw as f32, h as f32 / rh as f32);
            let region = Region {
                x0: left as f32 * sx,
                y0: top as f32 * sy,
                x1: (left + side) as f32 * sx,
                y1: (top + side) as f32 * sy,
            };
            (crop, region)
        }
    };
    let tensor = normalise(&input, device)?;
    Ok(Prepared {
        tensor,
        original: (w, h),
        input: input.dimensions(),
        region,
    })
}

/// RGB bytes → 1 × 3 × H × W, (x/255 − mean)/std.
pub fn normalise(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = f64::from(px[c]) / 255.0;
            data[c * plane + i] = ((v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]) as f32;
        }
    }
    Tensor::from_vec(data, (1, 3, h as usize, w as usize), device)
}
