//! Image in, tensor out: bounded decoding with EXIF orientation, the three resize modes, and
//! normalisation, as a model's [`Preprocessing`] says (ImageNet's unless its folder says
//! otherwise).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};
use rayon::prelude::*;

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

/// Pillow's resampling filters that models are trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    /// A triangle filter (torchvision's default, and camview's before model folders).
    #[default]
    Bilinear,
    /// Keys' cubic with a = −0.5 (timm's and transformers' usual choice).
    Bicubic,
}

impl Interpolation {
    /// From the names timm (`bicubic`) and Pillow's enum values transformers records
    /// (`2` bilinear, `3` bicubic) use; `None` for any other filter.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "bilinear" | "linear" | "2" => Some(Self::Bilinear),
            "bicubic" | "cubic" | "3" => Some(Self::Bicubic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
        }
    }
}

/// How the libraries round the resized size and the crop's offset, which moves the input by
/// a pixel: each model is matched to the transform it was evaluated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rounding {
    /// camview's own for ImageNet ResNet-50 (and its golden files): the longer side rounded
    /// to nearest, the crop offset `round(margin / 2)` half to even.
    #[default]
    Nearest,
    /// torchvision's `Resize` and `CenterCrop` (timm's eval transform): the longer side
    /// truncated, the offset `round(margin / 2)`.
    Torchvision,
    /// transformers' image processors: the longer side truncated, the offset `margin // 2`.
    Transformers,
}

/// What a model expects of its input: the preprocessing it was trained and evaluated with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Preprocessing {
    /// Channel means (RGB, on 0..1 values).
    pub mean: [f64; 3],
    /// Channel standard deviations (RGB, on 0..1 values).
    pub std: [f64; 3],
    pub interpolation: Interpolation,
    /// `center` mode resizes the shorter side to `input_size / crop_pct` (truncated), then
    /// crops `input_size` × `input_size` from the middle.
    pub crop_pct: f64,
    /// The side the network was trained on (`full` resizes the shorter side to it, `squash`
    /// both sides).
    pub input_size: u32,
    /// transformers' ConvNextImageProcessor from 384 px up: `center` mode resizes both sides to
    /// `input_size`, without a crop. Left out of the serialised form when false, so the store's
    /// key of every other model stays what it was.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub center_squashes: bool,
    pub rounding: Rounding,
}

impl Default for Preprocessing {
    /// ImageNet ResNet-50's, as camview has always applied it.
    fn default() -> Self {
        Self {
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            interpolation: Interpolation::Bilinear,
            crop_pct: f64::from(TRAIN_SIDE) / f64::from(CENTER_RESIZE),
            input_size: TRAIN_SIDE,
            center_squashes: false,
            rounding: Rounding::Nearest,
        }
    }
}

impl Preprocessing {
    /// The shorter side `center` mode resizes to before its crop.
    pub fn center_resize(&self) -> u32 {
        // timm and transformers both take `int(size / crop_pct)`; a crop_pct outside (0, 1]
        // would crop nothing or more than the image.
        let crop_pct = if self.crop_pct > 0.0 && self.crop_pct <= 1.0 {
            self.crop_pct
        } else {
            1.0
        };
        ((f64::from(self.input_size) / crop_pct) + 1e-9).floor() as u32
    }

    /// One line for `model info`: `mean [..], std [..], bicubic, crop 0.875 of 224`.
    pub fn summary(&self) -> String {
        let three = |v: [f64; 3]| format!("[{}, {}, {}]", v[0], v[1], v[2]);
        if self.center_squashes {
            return format!(
                "mean {}, std {}, {}, input {side} px, center: resized to {side} × {side} \
                 without a crop",
                three(self.mean),
                three(self.std),
                self.interpolation.name(),
                side = self.input_size,
            );
        }
        format!(
            "mean {}, std {}, {}, input {} px, center crop {} (shorter side to {})",
            three(self.mean),
            three(self.std),
            self.interpolation.name(),
            self.input_size,
            self.crop_pct,
            self.center_resize()
        )
    }
}

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

/// The size `load_rgb` would give `path` (EXIF orientation applied), read from its header
/// without decoding the pixels.
pub fn oriented_size(path: &Path) -> Result<(u32, u32), ImageError> {
    let open_err = |source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    };
    let decode_err = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = ImageReader::open(path)
        .map_err(open_err)?
        .with_guessed_format()
        .map_err(open_err)?
        .into_decoder()
        .map_err(decode_err)?;
    let (width, height) = decoder.dimensions();
    use image::metadata::Orientation::{Rotate90, Rotate90FlipH, Rotate270, Rotate270FlipH};
    Ok(match decoder.orientation().map_err(decode_err)? {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => (height, width),
        _ => (width, height),
    })
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
    /// Size of the network input (width, height).
    pub input: (u32, u32),
    /// Where the input sits in the original image (all of it, except in `center` mode).
    pub region: Region,
}

/// Input size for an image of `width` × `height` in `mode`, before any crop, for ImageNet
/// ResNet-50.
pub fn resized_size(width: u32, height: u32, mode: ResizeMode) -> (u32, u32) {
    resized_size_for(width, height, mode, &Preprocessing::default())
}

/// Input size for an image of `width` × `height` in `mode`, before any crop, for a model
/// preprocessed as `pre` says.
pub fn resized_size_for(
    width: u32,
    height: u32,
    mode: ResizeMode,
    pre: &Preprocessing,
) -> (u32, u32) {
    let shorter_to = |target: u32, rounding: Rounding| {
        let (w, h) = (f64::from(width), f64::from(height));
        let capped = f64::from(FULL_MAX_SIDE) / w.max(h).max(1.0);
        let scale = (f64::from(target) / w.min(h)).min(capped).max(0.0);
        let side = |v: f64| ((v * scale).round() as u32).max(1);
        if rounding == Rounding::Nearest || scale == capped {
            return (side(w), side(h));
        }
        // torchvision and transformers: the shorter side exactly, the longer
        // `int(size * long / short)`.
        let long = |long: f64, short: f64| ((f64::from(target) * long / short) as u32).max(1);
        if width <= height {
            (target, long(h, w))
        } else {
            (long(w, h), target)
        }
    };
    match mode {
        ResizeMode::Squash => (pre.input_size, pre.input_size),
        ResizeMode::Full => shorter_to(pre.input_size, Rounding::Nearest),
        ResizeMode::Center if pre.center_squashes => (pre.input_size, pre.input_size),
        ResizeMode::Center => shorter_to(pre.center_resize(), pre.rounding),
    }
}

/// Resizes, crops and normalises `img` into ImageNet ResNet-50's input.
pub fn prepare(img: &RgbImage, mode: ResizeMode, device: &Device) -> candle_core::Result<Prepared> {
    prepare_for(img, mode, &Preprocessing::default(), device)
}

/// Resizes, crops and normalises `img` into the input of a model preprocessed as `pre` says.
pub fn prepare_for(
    img: &RgbImage,
    mode: ResizeMode,
    pre: &Preprocessing,
    device: &Device,
) -> candle_core::Result<Prepared> {
    let (input, region) = network_pixels_for(img, mode, pre);
    let tensor = normalise_with(&input, pre.mean, pre.std, device)?;
    Ok(Prepared {
        tensor,
        input: input.dimensions(),
        region,
    })
}

/// The pixels ImageNet ResNet-50 sees, before normalisation, and where they sit in `img`: the
/// same as torchvision's transforms on a PIL image (`Resize` with PIL's bilinear filter, then
/// `CenterCrop` in `center` mode).
pub fn network_pixels(img: &RgbImage, mode: ResizeMode) -> (RgbImage, Region) {
    network_pixels_for(img, mode, &Preprocessing::default())
}

/// [`network_pixels`] for a model preprocessed as `pre` says: its filter, input size and crop
/// fraction.
pub fn network_pixels_for(
    img: &RgbImage,
    mode: ResizeMode,
    pre: &Preprocessing,
) -> (RgbImage, Region) {
    let (w, h) = img.dimensions();
    let (rw, rh) = resized_size_for(w, h, mode, pre);
    let resized = resize(img, rw, rh, pre.interpolation);
    let full = Region {
        x0: 0.0,
        y0: 0.0,
        x1: w as f32,
        y1: h as f32,
    };
    match mode {
        ResizeMode::Full | ResizeMode::Squash => (resized, full),
        ResizeMode::Center if pre.center_squashes => (resized, full),
        ResizeMode::Center => {
            let side = pre.input_size.min(rw).min(rh);
            let offset = |margin: u32| match pre.rounding {
                Rounding::Transformers => margin / 2,
                Rounding::Nearest | Rounding::Torchvision => centre_offset(margin),
            };
            let (left, top) = (offset(rw - side), offset(rh - side));
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
    }
}

/// torchvision's `CenterCrop` offset, `int(round(margin / 2))`: Python rounds half to even,
/// so a margin of 161 gives 80, not 81 (a one-pixel shift moves probabilities by up to 0.04).
fn centre_offset(margin: u32) -> u32 {
    let half = margin / 2;
    if margin % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Resizes exactly as Pillow's `Image.resize(size, BILINEAR)` does: the resampling that
/// torchvision's `Resize` applies to PIL images, with which the model's accuracy was measured.
/// A triangle filter widened by the scale when shrinking (so it antialiases), one pass per
/// axis, weights in 22-bit fixed point and a rounding to bytes between the passes; every
/// step follows Pillow's `Resample.c`, so the bytes come out the same.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize(img, width, height, Interpolation::Bilinear)
}

/// Resizes exactly as Pillow's `Image.resize(size, filter)` does, for its bilinear and
/// bicubic filters (see [`resize_bilinear`]; bicubic is Keys' cubic with a = −0.5 over two
/// input pixels each side, widened the same way when shrinking).
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Interpolation) -> RgbImage {
    let (w, h) = img.dimensions();
    if (w, h) == (width, height) {
        return img.clone();
    }
    let (w, h, width, height) = (w as usize, h as usize, width as usize, height as usize);
    let mut pixels: Vec<u8> = img.as_raw().clone();
    if width != w {
        let taps = Taps::new(w, width, filter);
        let mut out = vec![0u8; width * h * 3];
        out.par_chunks_mut(width * 3)
            .zip(pixels.par_chunks(w * 3))
            .for_each(|(dst, src)| {
                for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                    let (first, weights) = taps.of(x);
                    let mut sum = [ROUNDING; 3];
                    for (tap, &weight) in src[first * 3..].chunks_exact(3).zip(weights) {
                        for c in 0..3 {
                            sum[c] += i32::from(tap[c]) * weight;
                        }
                    }
                    for c in 0..3 {
                        px[c] = to_byte(sum[c]);
                    }
                }
            });
        pixels = out;
    }
    if height != h {
        let taps = Taps::new(h, height, filter);
        let row = width * 3;
        let mut out = vec![0u8; row * height];
        out.par_chunks_mut(row).enumerate().for_each(|(y, dst)| {
            let (first, weights) = taps.of(y);
            let mut sum = vec![ROUNDING; row];
            for (tap, &weight) in pixels[first * row..].chunks_exact(row).zip(weights) {
                for (s, &v) in sum.iter_mut().zip(tap) {
                    *s += i32::from(v) * weight;
                }
            }
            for (d, s) in dst.iter_mut().zip(sum) {
                *d = to_byte(s);
            }
        });
        pixels = out;
    }
    RgbImage::from_raw(width as u32, height as u32, pixels).expect("width × height × 3 bytes")
}

/// Pillow's fixed-point precision for 8-bit images: weights are scaled by 2^22.
const WEIGHT_BITS: u32 = 22;

/// For each output position along one axis, the first input position it reads and the
/// fixed-point weights of the inputs from there (Pillow's `precompute_coeffs` and
/// `normalize_coeffs_8bpc`).
struct Taps {
    first: Vec<usize>,
    weights: Vec<i32>,
    /// The stride of `weights`: the most inputs any output reads.
    span: usize,
    count: Vec<usize>,
}

impl Taps {
    fn new(input: usize, output: usize, filter: Interpolation) -> Self {
        let scale = input as f64 / output as f64;
        let filter_scale = scale.max(1.0);
        // The triangle reaches one input pixel each side, the cubic two, widened when
        // shrinking.
        let (reach, kernel): (f64, fn(f64) -> f64) = match filter {
            Interpolation::Bilinear => (1.0, triangle),
            Interpolation::Bicubic => (2.0, cubic),
        };
        let support = reach * filter_scale;
        let span = support.ceil() as usize * 2 + 1;
        let mut first = Vec::with_capacity(output);
        let mut count = Vec::with_capacity(output);
        let mut weights = vec![0i32; output * span];
        let mut real = vec![0f64; span];
        for (out, fixed) in weights.chunks_exact_mut(span).enumerate() {
            let centre = (out as f64 + 0.5) * scale;
            // C's float-to-int conversions truncate toward zero, as `as` does.
            let lo = ((centre - support + 0.5) as i64).max(0) as usize;
            let hi = ((centre + support + 0.5) as i64).min(input as i64) as usize;
            let n = hi.saturating_sub(lo);
            let mut total = 0.0;
            for (x, w) in real[..n].iter_mut().enumerate() {
                // Times the reciprocal, as Pillow computes it (a division can differ in the
                // last bit).
                *w = kernel(((x + lo) as f64 - centre + 0.5) * (1.0 / filter_scale));
                total += *w;
            }
            for (w, f) in real[..n].iter().zip(fixed.iter_mut()) {
                let w = if total == 0.0 { *w } else { w / total };
                let scaled = w * f64::from(1u32 << WEIGHT_BITS);
                *f = if w < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                };
            }
            first.push(lo);
            count.push(n);
        }
        Self {
            first,
            weights,
            span,
            count,
        }
    }

    fn of(&self, out: usize) -> (usize, &[i32]) {
        let start = out * self.span;
        (
            self.first[out],
            &self.weights[start..start + self.count[out]],
        )
    }
}

/// Pillow's `bilinear_filter`.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `bicubic_filter`: Keys' cubic convolution with a = −0.5.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Half of the last bit, so that the shift in [`to_byte`] rounds.
const ROUNDING: i32 = 1 << (WEIGHT_BITS - 1);

/// A fixed-point weighted sum as a byte, clipped as Pillow's `clip8` does.
fn to_byte(sum: i32) -> u8 {
    (sum >> WEIGHT_BITS).clamp(0, 255) as u8
}

/// RGB bytes → 1 × 3 × H × W, (x/255 − mean)/std with ImageNet's mean and std.
pub fn normalise(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    normalise_with(img, IMAGENET_MEAN, IMAGENET_STD, device)
}

/// RGB bytes → 1 × 3 × H × W, (x/255 − mean)/std.
pub fn normalise_with(
    img: &RgbImage,
    mean: [f64; 3],
    std: [f64; 3],
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = f64::from(px[c]) / 255.0;
            data[c * plane + i] = ((v - mean[c]) / std[c]) as f32;
        }
    }
    Tensor::from_vec(data, (1, 3, h as usize, w as usize), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_centre_crop_rounds_half_to_even_as_python_does() {
        // int(round(m / 2)) for margins 0..=7: 0, 0, 1, 2, 2, 2, 3, 4.
        let offsets: Vec<u32> = (0..8).map(centre_offset).collect();
        assert_eq!(offsets, [0, 0, 1, 2, 2, 2, 3, 4]);
        assert_eq!(centre_offset(161), 80, "chelsea at 385 × 256");
    }

    #[test]
    fn resizing_keeps_a_flat_image_flat_and_halves_a_ramp_as_pillow_does() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([200, 17, 99]));
        for (w, h) in [(5, 3), (37, 23), (100, 61), (1, 1)] {
            let out = resize_bilinear(&flat, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 17, 99]), "{w}×{h}");
        }
        // A ramp halved, as Pillow does it (the border taps renormalised).
        let ramp = RgbImage::from_fn(8, 1, |x, _| image::Rgb([(x * 30) as u8; 3]));
        let half = resize_bilinear(&ramp, 4, 1);
        let values: Vec<u8> = half.pixels().map(|p| p.0[0]).collect();
        assert_eq!(values, [21, 75, 135, 189], "Pillow's answer");
    }
}
