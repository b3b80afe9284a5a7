//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016), with m = 4 or 2.
//!
//! Why: the 3×3 convolutions are 45 % of ResNet-50's multiply-adds. F(4×4, 3×3) computes
//! each 4×4 output tile from a 6×6 input tile with 36 multiplies per channel pair instead of
//! 144: the input tile and the filter are each transformed (Bᵀ d B, G g Gᵀ), multiplied
//! element-wise — which, summed over input channels, is 36 independent GEMMs of
//! tiles × C_in by C_in × C_out — and the product is transformed back (Aᵀ m A).
//! F(2×2, 3×3) needs 16 multiplies per 4 outputs (2.25× fewer than direct) and its
//! transformed weights take 16/9 of the direct ones' memory, against 36/9 for F(4×4): layer
//! 4 (7×7 pixels, 9 MB of direct weights per layer) uses it, as F(4×4)'s 37 MB per layer
//! would make it a stream from memory for four tiles of work.
//!
//! The filters are transformed once, at load, in f64. Input and output transforms are loops
//! over channels (contiguous in NHWC, so they vectorise), the GEMMs use the packed
//! micro-kernel. Interpolation points 0, ±1, ±2 (the standard choice): after all sixteen
//! Winograd layers the logits of the twelve reference inputs stay within 2.1e-5 of the
//! reference (the golden tests allow 1e-4).
//!
//! The transforms are compiled twice: for AVX2 + FMA (8 channels a vector), chosen at run
//! time, and for the baseline x86-64 the binary targets (SSE2, 4 a vector); the `unsafe`
//! here is that choice.
#![allow(unsafe_code)]

use super::activation::{Activation, Lhs, narrow};
use super::matrix::WeightMatrix;
use super::packed_gemm::{Epilogue, Format, kernel_available};
use super::parallel;
use super::scratch;

/// Tiles per pass at most: one 224² image's layer 1 (14 × 14) in one go, its transformed
/// tiles (196 × 36 × 64 channels, 1.8 MB) within L3.
const TILES_PER_PASS: usize = 256;
/// The largest input tile side (F(4×4, 3×3)'s).
const MAX_TILE: usize = 6;

/// The output tile size m of F(m×m, 3×3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileSize {
    /// F(4×4, 3×3): 6×6 input tiles, 36 GEMMs, 4× fewer multiplies than direct.
    Four,
    /// F(2×2, 3×3): 4×4 input tiles, 16 GEMMs, 2.25× fewer multiplies.
    Two,
}

impl TileSize {
    /// Output tile side m.
    const fn out(self) -> usize {
        match self {
            Self::Four => 4,
            Self::Two => 2,
        }
    }

    /// Input tile side m + 2.
    const fn tile(self) -> usize {
        self.out() + 2
    }
}

/// A 3×3, stride 1, padding 1 convolution with folded batch norm, in the Winograd domain.
#[derive(Debug, Clone)]
pub struct Winograd {
    size: TileSize,
    /// U_ξ = (G g Gᵀ)_ξ as a C_in × C_out matrix, one per transformed position ξ.
    transformed: Vec<WeightMatrix>,
    bias: Vec<f32>,
    /// Zeros for the GEMM epilogue: the bias is added after the output transform.
    zeros: Vec<f32>,
    in_c: usize,
    out_c: usize,
}

impl Winograd {
    /// Transforms an O × I × 3 × 3 weight (row-major), its matrices stored in `format`.
    pub fn new(
        weight: &[f32],
        scale: &[f64],
        (out_c, in_c): (usize, usize),
        bias: Vec<f32>,
        size: TileSize,
        format: Format,
    ) -> Self {
        assert_eq!(weight.len(), out_c * in_c * 9, "weight size");
        assert_eq!(scale.len(), out_c, "scale size");
        let tile = size.tile();
        // All matrices, u[ξ][c][o], in one allocation.
        let plane = in_c * out_c;
        let mut u = vec![0f32; tile * tile * plane];
        // Output channels innermost: each of the matrices is written sequentially.
        for c in 0..in_c {
            for o in 0..out_c {
                let g = &weight[(o * in_c + c) * 9..][..9];
                let g: [f64; 9] = std::array::from_fn(|i| f64::from(g[i]));
                // G g (tile × 3), then (G g) Gᵀ (tile × tile).
                let columns: [[f64; MAX_TILE]; 3] =
                    std::array::from_fn(|col| filter_1d(size, [g[col], g[3 + col], g[6 + col]]));
                for row in 0..tile {
                    let g_row = std::array::from_fn(|col| columns[col][row]);
                    for (col, v) in filter_1d(size, g_row)[..tile].iter().enumerate() {
                        u[(row * tile + col) * plane + c * out_c + o] = (*v * scale[o]) as f32;
                    }
                }
            }
        }
        let transformed = u
            .chunks_exact(plane)
            .map(|m| WeightMatrix::from_rows(format, m, in_c, out_c))
            .collect();
        Self {
            size,
            transformed,
            bias,
            zeros: vec![0.0; out_c],
            in_c,
            out_c,
        }
    }

    /// Number of output tiles for a batch of `n` images of `h` × `w`.
    pub fn tiles(&self, n: usize, h: usize, w: usize) -> usize {
        let m = self.size.out();
        n * h.div_ceil(m) * w.div_ceil(m)
    }

    /// conv(x) + bias (+ `residual`), then ReLU if `relu`; `x` is N × H × W × C_in (NHWC),
    /// the result and `residual` N × H × W × C_out.
    pub fn forward<T: Activation>(
        &self,
        x: &[T],
        (n, h, w, c): (usize, usize, usize, usize),
        residual: Option<&[T]>,
        relu: bool,
    ) -> Vec<T> {
        assert_eq!(c, self.in_c, "input channels");
        assert_eq!(x.len(), n * h * w * c, "input size");
        if let Some(r) = residual {
            assert_eq!(r.len(), n * h * w * self.out_c, "residual size");
        }
        let m = self.size.out();
        let (tiles_y, tiles_x) = (h.div_ceil(m), w.div_ceil(m));
        let out_c = self.out_c;
        let mut out = vec![T::ZERO; n * h * w * out_c];
        // Large inputs (a big image, a batch) go through in passes of whole tile rows, so the
        // transformed tiles stay in cache between the three steps instead of making a round
        // trip to memory (and the buffers stay a few MB). A pass may span images: small
        // images of a batch then share one pass of GEMMs, which reads the weights once for
        // all of them (layer 3 at 224²: 16 tiles per image).
        let rows_per_pass = (TILES_PER_PASS / tiles_x).max(1);
        let zeros = vec![T::ZERO; c];
        let mut rest = &mut out[..];
        let mut done = 0;
        for first in (0..n * tiles_y).step_by(rows_per_pass) {
            let tile_rows = first..(first + rows_per_pass).min(n * tiles_y);
            // The image rows these tile rows cover: m each, fewer at an image's bottom edge.
            let bands: Vec<usize> = tile_rows
                .clone()
                .map(|g| (h - g % tiles_y * m).min(m) * w * out_c)
                .collect();
            let len = bands.iter().sum();
            let (pass_out, later) = rest.split_at_mut(len);
            rest = later;
            let pass_residual = residual.map(|r| &r[done..][..len]);
            done += len;
            let finish = Finish {
                residual: pass_residual,
                relu,
            };
            self.pass(x, (h, w), tile_rows, &bands, &zeros, pass_out, finish);
        }
        out
    }

    /// One pass over the tiles of global tile rows `tile_rows` (image `g / tiles_y`, row
    /// `g % tiles_y`): transform, multiply, transform back into `out`, the image rows those
    /// tiles cover, cut into one band per tile row (`bands`: their lengths); `finish`'s
    /// residual covers the same rows.
    #[allow(clippy::too_many_arguments)]
    fn pass<T: Activation>(
        &self,
        x: &[T],
        (h, w): (usize, usize),
        tile_rows: std::ops::Range<usize>,
        bands: &[usize],
        zeros: &[T],
        out: &mut [T],
        finish: Finish<'_, T>,
    ) {
        let (c, out_c) = (self.in_c, self.out_c);
        let (m, points) = (self.size.out(), self.size.tile().pow(2));
        let (tiles_y, tiles_x) = (h.div_ceil(m), w.div_ceil(m));
        let tiles = tile_rows.len() * tiles_x;

        // V, tile-major: [tile][ξ][c], so each tile's transform writes one contiguous run.
        // With bfloat16 activations V is stored as bfloat16 too (half the bytes; the product
        // would round it anyway), each tile transformed in f32 and rounded once.
        let len = tiles * points * c;
        let mut v = scratch::take(if T::BF16 { len.div_ceil(2) } else { len });
        if T::BF16 {
            parallel::for_each_chunk_mut_init(
                &mut v.as_bits_mut()[..len],
                points * c,
                || (vec![0f32; points * c], vec![0f32; points * c]),
                |(half, wide), t, v| {
                    let g = tile_rows.start + t / tiles_x;
                    let (b, ty, tx) = (g / tiles_y, g % tiles_y, t % tiles_x);
                    let corner = (ty * m, tx * m);
                    self.transform_input(x, (b, h, w), corner, zeros, half, wide);
                    narrow(wide, v);
                },
            );
        } else {
            parallel::for_each_chunk_mut_init(
                &mut v,
                points * c,
                || vec![0f32; points * c],
                |half, t, v| {
                    let g = tile_rows.start + t / tiles_x;
                    let (b, ty, tx) = (g / tiles_y, g % tiles_y, t % tiles_x);
                    let corner = (ty * m, tx * m);
                    self.transform_input(x, (b, h, w), corner, zeros, half, v);
                },
            );
        }

        // M_ξ = V_ξ · U_ξ, position-major: [ξ][tile][o].
        let mut product = scratch::take(points * tiles * out_c);
        parallel::for_each_chunk_mut(&mut product, tiles * out_c, |xi, product| {
            let epilogue = Epilogue {
                bias: &self.zeros,
                residual: None,
                relu: false,
            };
            let lhs = match T::BF16 {
                true => Lhs::Bf16(&v.as_bits()[xi * c..len]),
                false => Lhs::F32(&v[xi * c..]),
            };
            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the product stores only
            // initialised values (every one of them).
            let product =
                unsafe { &mut *(std::ptr::from_mut(product) as *mut [std::mem::MaybeUninit<f32>]) };
            self.transformed[xi].product(lhs, points * c, product, epilogue, 1);
        });

        // Back to pixels, one row of tiles (up to m image rows) per task.
        let (mut rest, mut start) = (out, 0);
        let bands: Vec<(&mut [T], Option<&[T]>)> = bands
            .iter()
            .map(|&len| {
                let (band, later) = std::mem::take(&mut rest).split_at_mut(len);
                rest = later;
                let residual = finish.residual.map(|r| &r[start..][..len]);
                start += len;
                (band, residual)
            })
            .collect();
        parallel::for_each_item_init(
            bands,
            || vec![0f32; (self.size.tile() + 1) * m * out_c],
            |half, row, (band, residual)| {
                let mut rows: Vec<&mut [T]> = band.chunks_mut(w * out_c).collect();
                let residual: Vec<&[T]> = residual
                    .map(|r| r.chunks(w * out_c).collect())
                    .unwrap_or_default();
                for tx in 0..tiles_x {
                    let at = (tiles, row * tiles_x + tx, tx * m);
                    self.transform_output(&product, at, half, &mut rows, &residual, finish.relu);
                }
            },
        );
    }

    /// Bᵀ d B for the input tile whose output corner is (y0, x0) (input corner one pixel up
    /// and left: padding 1), into `v` = [ξ][c]. `half` holds Bᵀ d in between.
    fn transform_input<T: Activation>(
        &self,
        x: &[T],
        image: (usize, usize, usize),
        corner: (usize, usize),
        zeros: &[T],
        half: &mut [f32],
        v: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        if kernel_available() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.transform_input_avx2(x, image, corner, zeros, half, v) };
        }
        self.transform_input_body(x, image, corner, zeros, half, v);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn transform_input_avx2<T: Activation>(
        &self,
        x: &[T],
        image: (usize, usize, usize),
        corner: (usize, usize),
        zeros: &[T],
        half: &mut [f32],
        v: &mut [f32],
    ) {
        self.transform_input_body(x, image, corner, zeros, half, v);
    }

    #[inline(always)]
    fn transform_input_body<T: Activation>(
        &self,
        x: &[T],
        (b, h, w): (usize, usize, usize),
        (y0, x0): (usize, usize),
        zeros: &[T],
        half: &mut [f32],
        v: &mut [f32],
    ) {
        let (c, tile) = (self.in_c, self.size.tile());
        // The input pixel at tile position (i, j): zeros outside the image.
        let pixel = |i: usize, j: usize| -> &[T] {
            let y = (y0 + i).checked_sub(1).filter(|&y| y < h);
            let x_ = (x0 + j).checked_sub(1).filter(|&x| x < w);
            match (y, x_) {
                (Some(y), Some(x_)) => &x[((b * h + y) * w + x_) * c..][..c],
                _ => zeros,
            }
        };
        // Columns: half[j][r] = (Bᵀ d[·][j])[r].
        for (j, block) in half.chunks_exact_mut(tile * c).enumerate() {
            let src = std::array::from_fn(|i| if i < tile { pixel(i, j) } else { zeros });
            input_1d(self.size, src, split(block, c));
        }
        // Rows: V[r][s] = (Bᵀ half[r][·])[s].
        let unused: &[f32] = &[];
        for (r, block) in v.chunks_exact_mut(tile * c).enumerate() {
            let src = std::array::from_fn(|j| {
                if j < tile {
                    &half[(j * tile + r) * c..][..c]
                } else {
                    unused
                }
            });
            input_1d(self.size, src, split(block, c));
        }
    }

    /// Aᵀ M A + bias (+ the `residual` rows, if not empty; then ReLU if `relu`) for tile `t`
    /// of `tiles`, written into the output `rows` (up to m rows of the image, each
    /// W × C_out) from column `x0`. `half` holds Aᵀ M and the tile before it is cropped.
    fn transform_output<T: Activation>(
        &self,
        product: &[f32],
        at: (usize, usize, usize),
        half: &mut [f32],
        rows: &mut [&mut [T]],
        residual: &[&[T]],
        relu: bool,
    ) {
        #[cfg(target_arch = "x86_64")]
        if kernel_available() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { self.transform_output_avx2(product, at, half, rows, residual, relu) };
        }
        self.transform_output_body(product, at, half, rows, residual, relu);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn transform_output_avx2<T: Activation>(
        &self,
        product: &[f32],
        at: (usize, usize, usize),
        half: &mut [f32],
        rows: &mut [&mut [T]],
        residual: &[&[T]],
        relu: bool,
    ) {
        self.transform_output_body(product, at, half, rows, residual, relu);
    }

    #[inline(always)]
    fn transform_output_body<T: Activation>(
        &self,
        product: &[f32],
        (tiles, t, x0): (usize, usize, usize),
        half: &mut [f32],
        rows: &mut [&mut [T]],
        residual: &[&[T]],
        relu: bool,
    ) {
        let o = self.out_c;
        let (m, tile) = (self.size.out(), self.size.tile());
        let width = rows[0].len() / o;
        let cols = m.min(width - x0);
        let (half, cropped) = half.split_at_mut(tile * m * o);
        let unused: &[f32] = &[];
        // Columns: half[j][r] = (Aᵀ M[·][j])[r].
        for (j, block) in half.chunks_exact_mut(m * o).enumerate() {
            let src = std::array::from_fn(|i| {
                if i < tile {
                    &product[((i * tile + j) * tiles + t) * o..][..o]
                } else {
                    unused
                }
            });
            output_1d(self.size, src, split(block, o));
        }
        for (r, row) in rows.iter_mut().enumerate() {
            let src = std::array::from_fn(|j| {
                if j < tile {
                    &half[(j * m + r) * o..][..o]
                } else {
                    unused
                }
            });
            let span = x0 * o..(x0 + cols) * o;
            let shortcut = residual.get(r).map(|s| &s[span.clone()]);
            let Some(row) = T::as_f32_mut(&mut row[span.clone()]) else {
                // bfloat16: the tile row in f32, finished, then rounded into the image.
                output_1d(self.size, src, split(cropped, o));
                let values = &mut cropped[..cols * o];
                if let Some(shortcut) = shortcut {
                    for (y, s) in values.iter_mut().zip(shortcut) {
                        *y += s.to_f32();
                    }
                }
                self.finish_pixels(values, relu);
                narrow(values, &mut row[span]);
                continue;
            };
            // A whole tile row goes straight to the image; an edge tile's via `cropped`.
            if cols == m {
                output_1d(self.size, src, split(row, o));
            } else {
                output_1d(self.size, src, split(cropped, o));
                row.copy_from_slice(&cropped[..cols * o]);
            }
            if let Some(shortcut) = shortcut.and_then(T::as_f32) {
                for (y, &s) in row.iter_mut().zip(shortcut) {
                    *y += s;
                }
            }
            self.finish_pixels(row, relu);
        }
    }

    /// + bias, then ReLU if `relu`, over whole pixels of C_out values.
    #[inline(always)]
    fn finish_pixels(&self, values: &mut [f32], relu: bool) {
        for pixel in values.chunks_exact_mut(self.out_c) {
            for (y, &bias) in pixel.iter_mut().zip(&self.bias) {
                let v = *y + bias;
                *y = if relu { v.max(0.0) } else { v };
            }
        }
    }
}

/// What the output transform applies after the bias.
#[derive(Clone, Copy)]
struct Finish<'a, T> {
    /// Added to the output, same layout (the rows of this pass).
    residual: Option<&'a [T]>,
    relu: bool,
}

/// `block` cut into runs of `len` values: as many as it holds (up to [`MAX_TILE`]), then
/// empty ones.
fn split(block: &mut [f32], len: usize) -> [&mut [f32]; MAX_TILE] {
    let mut runs = block.chunks_exact_mut(len);
    std::array::from_fn(|_| runs.next().unwrap_or_default())
}

/// Bᵀ d for one tile column (six input vectors for F(4×4), four for F(2×2); unused entries
/// are ignored), element-wise over the channels.
#[inline(always)]
fn input_1d<T: Activation>(size: TileSize, d: [&[T]; MAX_TILE], v: [&mut [f32]; MAX_TILE]) {
    let n = v[0].len();
    let [d0, d1, d2, d3, d4, d5] = d;
    let [v0, v1, v2, v3, v4, v5] = v;
    match size {
        TileSize::Four => {
            let (d0, d1, d2, d3, d4, d5) =
                (&d0[..n], &d1[..n], &d2[..n], &d3[..n], &d4[..n], &d5[..n]);
            let (v0, v1, v2, v3, v4, v5) = (
                &mut v0[..n],
                &mut v1[..n],
                &mut v2[..n],
                &mut v3[..n],
                &mut v4[..n],
                &mut v5[..n],
            );
            for i in 0..n {
                v0[i] = 4.0 * d0[i].to_f32() - 5.0 * d2[i].to_f32() + d4[i].to_f32();
                v1[i] = -4.0 * (d1[i].to_f32() + d2[i].to_f32()) + d3[i].to_f32() + d4[i].to_f32();
                v2[i] = 4.0 * (d1[i].to_f32() - d2[i].to_f32()) - d3[i].to_f32() + d4[i].to_f32();
                v3[i] = 2.0 * (d3[i].to_f32() - d1[i].to_f32()) - d2[i].to_f32() + d4[i].to_f32();
                v4[i] = 2.0 * (d1[i].to_f32() - d3[i].to_f32()) - d2[i].to_f32() + d4[i].to_f32();
                v5[i] = 4.0 * d1[i].to_f32() - 5.0 * d3[i].to_f32() + d5[i].to_f32();
            }
        }
        TileSize::Two => {
            let (d0, d1, d2, d3) = (&d0[..n], &d1[..n], &d2[..n], &d3[..n]);
            let (v0, v1, v2, v3) = (&mut v0[..n], &mut v1[..n], &mut v2[..n], &mut v3[..n]);
            for i in 0..n {
                v0[i] = d0[i].to_f32() - d2[i].to_f32();
                v1[i] = d1[i].to_f32() + d2[i].to_f32();
                v2[i] = d2[i].to_f32() - d1[i].to_f32();
                v3[i] = d1[i].to_f32() - d3[i].to_f32();
            }
        }
    }
}

/// Aᵀ m for one tile column (six product vectors for F(4×4), four for F(2×2)): m output
/// vectors.
#[inline(always)]
fn output_1d(size: TileSize, m: [&[f32]; MAX_TILE], y: [&mut [f32]; MAX_TILE]) {
    let n = y[0].len();
    let [m0, m1, m2, m3, m4, m5] = m;
    let [y0, y1, y2, y3, ..] = y;
    match size {
        TileSize::Four => {
            let (m0, m1, m2, m3, m4, m5) =
                (&m0[..n], &m1[..n], &m2[..n], &m3[..n], &m4[..n], &m5[..n]);
            let (y0, y1, y2, y3) = (&mut y0[..n], &mut y1[..n], &mut y2[..n], &mut y3[..n]);
            for i in 0..n {
                y0[i] = m0[i] + m1[i] + m2[i] + m3[i] + m4[i];
                y1[i] = m1[i] - m2[i] + 2.0 * (m3[i] - m4[i]);
                y2[i] = m1[i] + m2[i] + 4.0 * (m3[i] + m4[i]);
                y3[i] = m1[i] - m2[i] + 8.0 * (m3[i] - m4[i]) + m5[i];
            }
        }
        TileSize::Two => {
            let (m0, m1, m2, m3) = (&m0[..n], &m1[..n], &m2[..n], &m3[..n]);
            let (y0, y1) = (&mut y0[..n], &mut y1[..n]);
            for i in 0..n {
                y0[i] = m0[i] + m1[i] + m2[i];
                y1[i] = m1[i] - m2[i] - m3[i];
            }
        }
    }
}

/// G g for one column of three filter taps: the first m + 2 values.
fn filter_1d(size: TileSize, g: [f64; 3]) -> [f64; MAX_TILE] {
    match size {
        TileSize::Four => [
            g[0] / 4.0,
            -(g[0] + g[1] + g[2]) / 6.0,
            -(g[0] - g[1] + g[2]) / 6.0,
            g[0] / 24.0 + g[1] / 12.0 + g[2] / 6.0,
            g[0] / 24.0 - g[1] / 12.0 + g[2] / 6.0,
            g[2],
        ],
        TileSize::Two => [
            g[0],
            (g[0] + g[1] + g[2]) / 2.0,
            (g[0] - g[1] + g[2]) / 2.0,
            g[2],
            0.0,
            0.0,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_data::noise;

    /// Direct 3×3 / stride 1 / padding 1 convolution in f64, NHWC.
    fn direct(
        x: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        weight: &[f32],
        bias: &[f32],
        residual: Option<&[f32]>,
        relu: bool,
    ) -> Vec<f64> {
        let o_n = bias.len();
        let mut out = vec![0f64; n * h * w * o_n];
        for b in 0..n {
            for y in 0..h {
                for xx in 0..w {
                    for o in 0..o_n {
                        let mut acc = f64::from(bias[o]);
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = ((y + ky) as isize - 1, (xx + kx) as isize - 1);
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for ch in 0..c {
                                    let xv = x[((b * h + iy as usize) * w + ix as usize) * c + ch];
                                    let wv = weight[((o * c + ch) * 3 + ky) * 3 + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        let at = ((b * h + y) * w + xx) * o_n + o;
                        acc += residual.map_or(0.0, |r| f64::from(r[at]));
                        out[at] = if relu { acc.max(0.0) } else { acc };
                    }
                }
            }
        }
        out
    }

    /// Against a direct convolution, on sizes that are and are not whole tiles, a batch, and
    /// a 1×1 image (every tap but the centre in the padding).
    #[test]
    fn winograd_matches_a_direct_convolution() {
        for (i, &(n, h, w, c, o)) in [
            (1, 8, 8, 8, 16),
            (2, 7, 9, 16, 32),
            (1, 1, 1, 8, 16),
            (1, 14, 14, 24, 48),
            // More tiles than one pass takes: two passes, the last one short.
            (1, 70, 66, 8, 16),
            // Passes that span images, one ending inside an image's short bottom tile row.
            (21, 14, 18, 8, 16),
            (3, 61, 50, 8, 16),
        ]
        .iter()
        .enumerate()
        {
            let seed = i as u32 * 10;
            let x = noise(n * h * w * c, seed + 1);
            let weight = noise(o * c * 9, seed + 2);
            let bias = noise(o, seed + 3);
            for (size, relu) in [
                (TileSize::Four, false),
                (TileSize::Four, true),
                (TileSize::Two, false),
                (TileSize::Two, true),
            ] {
                let scale = vec![1.0; o];
                let wino = Winograd::new(&weight, &scale, (o, c), bias.clone(), size, Format::F32);
                let got = wino.forward(&x, (n, h, w, c), None, relu);
                let want = direct(&x, (n, h, w, c), &weight, &bias, None, relu);
                assert_eq!(got.len(), want.len());
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "case {i}, {size:?} at {k}: {g} vs {w}"
                    );
                }
                let residual = noise(want.len(), seed + 4);
                let got = wino.forward(&x, (n, h, w, c), Some(&residual), relu);
                let want = direct(&x, (n, h, w, c), &weight, &bias, Some(&residual), relu);
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "case {i}, {size:?} with a residual at {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
