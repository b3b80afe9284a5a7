//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Why: the 3×3 convolutions are 45 % of ResNet-50's multiply-adds. F(4×4, 3×3) computes
//! each 4×4 output tile from a 6×6 input tile with 36 multiplies per channel pair instead of
//! 144: the input tile and the filter are each transformed (Bᵀ d B, G g Gᵀ), multiplied
//! element-wise — which, summed over input channels, is 36 independent GEMMs of
//! tiles × C_in by C_in × C_out — and the product is transformed back (Aᵀ m A).
//!
//! The filters are transformed once, at load, in f64. Input and output transforms are loops
//! over channels (contiguous in NHWC, so they vectorise), the GEMMs use the packed
//! micro-kernel. Interpolation points 0, ±1, ±2 (the standard choice): after all thirteen
//! Winograd layers the logits stay within 1.3e-5 of the reference (the golden tests allow
//! 1e-4), no further off than the direct path.

use rayon::prelude::*;

use super::packed_gemm::{Epilogue, PackedMatrix};
use super::scratch;

/// Output tile side (m) and input tile side (m + r − 1).
const OUT: usize = 4;
const TILE: usize = 6;
/// Transformed positions per tile: 36 GEMMs.
const POINTS: usize = TILE * TILE;
/// Tiles per pass at most: one 224² image's layer 1 (14 × 14) in one go, its transformed
/// tiles (196 × 36 × 64 channels, 1.8 MB) within L3.
const TILES_PER_PASS: usize = 256;

/// A 3×3, stride 1, padding 1 convolution with folded batch norm, in the Winograd domain.
#[derive(Debug, Clone)]
pub struct Winograd {
    /// U_ξ = (G g Gᵀ)_ξ as a C_in × C_out matrix, one per transformed position ξ.
    transformed: Vec<PackedMatrix>,
    bias: Vec<f32>,
    /// Zeros for the GEMM epilogue: the bias is added after the output transform.
    zeros: Vec<f32>,
    in_c: usize,
    out_c: usize,
}

impl Winograd {
    /// Transforms an O × I × 3 × 3 weight (row-major); `None` where the packed micro-kernel
    /// is unavailable or C_out is not whole panels.
    pub fn new(
        weight: &[f32],
        scale: &[f64],
        out_c: usize,
        in_c: usize,
        bias: Vec<f32>,
    ) -> Option<Self> {
        assert_eq!(weight.len(), out_c * in_c * 9, "weight size");
        assert_eq!(scale.len(), out_c, "scale size");
        // All 36 matrices, u[ξ][c][o], in one allocation.
        let plane = in_c * out_c;
        let mut u = vec![0f32; POINTS * plane];
        // Output channels innermost: each of the 36 matrices is written sequentially.
        for c in 0..in_c {
            for o in 0..out_c {
                let g = &weight[(o * in_c + c) * 9..][..9];
                let g: [f64; 9] = std::array::from_fn(|i| f64::from(g[i]));
                // G g (6 × 3), then (G g) Gᵀ (6 × 6).
                let columns: [[f64; TILE]; 3] =
                    std::array::from_fn(|col| filter_1d([g[col], g[3 + col], g[6 + col]]));
                for row in 0..TILE {
                    let transformed = filter_1d(std::array::from_fn(|col| columns[col][row]));
                    for (col, v) in transformed.iter().enumerate() {
                        u[(row * TILE + col) * plane + c * out_c + o] = (*v * scale[o]) as f32;
                    }
                }
            }
        }
        let transformed = u
            .chunks_exact(plane)
            .map(|m| PackedMatrix::pack(m, in_c, out_c))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            transformed,
            bias,
            zeros: vec![0.0; out_c],
            in_c,
            out_c,
        })
    }

    /// Number of 4×4 output tiles for a batch of `n` images of `h` × `w`.
    pub fn tiles(n: usize, h: usize, w: usize) -> usize {
        n * h.div_ceil(OUT) * w.div_ceil(OUT)
    }

    /// conv(x) + bias, then ReLU if `relu`; `x` is N × H × W × C_in (NHWC), the result
    /// N × H × W × C_out.
    pub fn forward(
        &self,
        x: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        relu: bool,
    ) -> Vec<f32> {
        assert_eq!(c, self.in_c, "input channels");
        assert_eq!(x.len(), n * h * w * c, "input size");
        let (tiles_y, tiles_x) = (h.div_ceil(OUT), w.div_ceil(OUT));
        let out_c = self.out_c;
        let mut out = vec![0f32; n * h * w * out_c];
        // Large inputs (a big image, a batch) go through in passes of whole tile rows, so the
        // transformed tiles stay in cache between the three steps instead of making a round
        // trip to memory (and the buffers stay a few MB). A pass may span images: small
        // images of a batch then share one pass of GEMMs, which reads the weights once for
        // all of them (layer 3 at 224²: 16 tiles per image).
        let rows_per_pass = (TILES_PER_PASS / tiles_x).max(1);
        let zeros = vec![0f32; c];
        let mut rest = &mut out[..];
        for first in (0..n * tiles_y).step_by(rows_per_pass) {
            let tile_rows = first..(first + rows_per_pass).min(n * tiles_y);
            // The image rows these tile rows cover: 4 each, fewer at an image's bottom edge.
            let bands: Vec<usize> = tile_rows
                .clone()
                .map(|g| (h - g % tiles_y * OUT).min(OUT) * w * out_c)
                .collect();
            let (pass_out, later) = rest.split_at_mut(bands.iter().sum());
            rest = later;
            self.pass(x, (h, w), tile_rows, &bands, &zeros, pass_out, relu);
        }
        out
    }

    /// One pass over the tiles of global tile rows `tile_rows` (image `g / tiles_y`, row
    /// `g % tiles_y`): transform, multiply, transform back into `out`, the image rows those
    /// tiles cover, cut into one band per tile row (`bands`: their lengths).
    #[allow(clippy::too_many_arguments)]
    fn pass(
        &self,
        x: &[f32],
        (h, w): (usize, usize),
        tile_rows: std::ops::Range<usize>,
        bands: &[usize],
        zeros: &[f32],
        out: &mut [f32],
        relu: bool,
    ) {
        let (c, out_c) = (self.in_c, self.out_c);
        let (tiles_y, tiles_x) = (h.div_ceil(OUT), w.div_ceil(OUT));
        let tiles = tile_rows.len() * tiles_x;

        // V, tile-major: [tile][ξ][c], so each tile's transform writes one contiguous run.
        let mut v = scratch::take(tiles * POINTS * c);
        v.par_chunks_mut(POINTS * c).enumerate().for_each_init(
            || vec![0f32; POINTS * c],
            |half, (t, v)| {
                let g = tile_rows.start + t / tiles_x;
                let (b, ty, tx) = (g / tiles_y, g % tiles_y, t % tiles_x);
                let corner = (ty * OUT, tx * OUT);
                self.transform_input(x, (b, h, w), corner, zeros, half, v);
            },
        );

        // M_ξ = V_ξ · U_ξ, position-major: [ξ][tile][o].
        let mut m = scratch::take(POINTS * tiles * out_c);
        m.par_chunks_mut(tiles * out_c)
            .enumerate()
            .for_each(|(xi, m)| {
                let epilogue = Epilogue {
                    bias: &self.zeros,
                    residual: None,
                    relu: false,
                };
                self.transformed[xi].multiply(&v[xi * c..], POINTS * c, m, epilogue, 1);
            });

        // Back to pixels, one row of tiles (up to 4 image rows) per task.
        let mut rest = out;
        let bands: Vec<&mut [f32]> = bands
            .iter()
            .map(|&len| {
                let (band, later) = std::mem::take(&mut rest).split_at_mut(len);
                rest = later;
                band
            })
            .collect();
        bands.into_par_iter().enumerate().for_each_init(
            || vec![0f32; (TILE + 1) * OUT * out_c],
            |half, (row, band)| {
                let mut rows: Vec<&mut [f32]> = band.chunks_mut(w * out_c).collect();
                for tx in 0..tiles_x {
                    let at = (tiles, row * tiles_x + tx, tx * OUT);
                    self.transform_output(&m, at, half, &mut rows, relu);
                }
            },
        );
    }

    /// Bᵀ d B for the 6×6 input tile whose output corner is (y0, x0) (input corner one pixel
    /// up and left: padding 1), into `v` = [ξ][c]. `half` holds Bᵀ d in between.
    fn transform_input(
        &self,
        x: &[f32],
        (b, h, w): (usize, usize, usize),
        (y0, x0): (usize, usize),
        zeros: &[f32],
        half: &mut [f32],
        v: &mut [f32],
    ) {
        let c = self.in_c;
        // The input pixel at tile position (i, j): zeros outside the image.
        let pixel = |i: usize, j: usize| -> &[f32] {
            let y = (y0 + i).checked_sub(1).filter(|&y| y < h);
            let x_ = (x0 + j).checked_sub(1).filter(|&x| x < w);
            match (y, x_) {
                (Some(y), Some(x_)) => &x[((b * h + y) * w + x_) * c..][..c],
                _ => zeros,
            }
        };
        // Columns: half[j][r] = (Bᵀ d[·][j])[r].
        for (j, block) in half.chunks_exact_mut(TILE * c).enumerate() {
            input_1d(std::array::from_fn(|i| pixel(i, j)), split(block, c));
        }
        // Rows: V[r][s] = (Bᵀ half[r][·])[s].
        for (r, block) in v.chunks_exact_mut(TILE * c).enumerate() {
            let src = std::array::from_fn(|j| &half[(j * TILE + r) * c..][..c]);
            input_1d(src, split(block, c));
        }
    }

    /// Aᵀ M A + bias (and ReLU) for tile `t` of `tiles`, written into the output `rows` (up
    /// to 4 rows of the image, each W × C_out) from column `x0`. `half` holds Aᵀ M and the
    /// tile before it is cropped.
    fn transform_output(
        &self,
        m: &[f32],
        (tiles, t, x0): (usize, usize, usize),
        half: &mut [f32],
        rows: &mut [&mut [f32]],
        relu: bool,
    ) {
        let o = self.out_c;
        let width = rows[0].len() / o;
        let cols = OUT.min(width - x0);
        let (half, tile) = half.split_at_mut(TILE * OUT * o);
        // Columns: half[j][r] = (Aᵀ M[·][j])[r].
        for (j, block) in half.chunks_exact_mut(OUT * o).enumerate() {
            let src = std::array::from_fn(|i| &m[((i * TILE + j) * tiles + t) * o..][..o]);
            output_1d(src, split(block, o));
        }
        for (r, row) in rows.iter_mut().enumerate() {
            let src = std::array::from_fn(|j| &half[(j * OUT + r) * o..][..o]);
            // A whole tile row goes straight to the image; an edge tile's via `tile`.
            let span = x0 * o..(x0 + cols) * o;
            if cols == OUT {
                output_1d(src, split(&mut row[span.clone()], o));
            } else {
                output_1d(src, split(tile, o));
                row[span.clone()].copy_from_slice(&tile[..cols * o]);
            }
            for pixel in row[span].chunks_exact_mut(o) {
                for (y, &bias) in pixel.iter_mut().zip(&self.bias) {
                    let v = *y + bias;
                    *y = if relu { v.max(0.0) } else { v };
                }
            }
        }
    }
}

/// `block` cut into its first `N` runs of `len` values.
fn split<const N: usize>(block: &mut [f32], len: usize) -> [&mut [f32]; N] {
    let mut runs = block.chunks_exact_mut(len);
    std::array::from_fn(|_| runs.next().expect("block holds N runs"))
}

/// Bᵀ d for six input vectors (one tile column), element-wise over the channels.
#[inline(always)]
fn input_1d(d: [&[f32]; TILE], v: [&mut [f32]; TILE]) {
    let n = v[0].len();
    let [d0, d1, d2, d3, d4, d5] = d.map(|s| &s[..n]);
    let [v0, v1, v2, v3, v4, v5] = v.map(|s| &mut s[..n]);
    for i in 0..n {
        v0[i] = 4.0 * d0[i] - 5.0 * d2[i] + d4[i];
        v1[i] = -4.0 * (d1[i] + d2[i]) + d3[i] + d4[i];
        v2[i] = 4.0 * (d1[i] - d2[i]) - d3[i] + d4[i];
        v3[i] = 2.0 * (d3[i] - d1[i]) - d2[i] + d4[i];
        v4[i] = 2.0 * (d1[i] - d3[i]) - d2[i] + d4[i];
        v5[i] = 4.0 * d1[i] - 5.0 * d3[i] + d5[i];
    }
}

/// Aᵀ m for six product vectors (one tile column): four output vectors.
#[inline(always)]
fn output_1d(m: [&[f32]; TILE], y: [&mut [f32]; OUT]) {
    let n = y[0].len();
    let [m0, m1, m2, m3, m4, m5] = m.map(|s| &s[..n]);
    let [y0, y1, y2, y3] = y.map(|s| &mut s[..n]);
    for i in 0..n {
        y0[i] = m0[i] + m1[i] + m2[i] + m3[i] + m4[i];
        y1[i] = m1[i] - m2[i] + 2.0 * (m3[i] - m4[i]);
        y2[i] = m1[i] + m2[i] + 4.0 * (m3[i] + m4[i]);
        y3[i] = m1[i] - m2[i] + 8.0 * (m3[i] - m4[i]) + m5[i];
    }
}

/// G g for one column of three filter taps: six values.
fn filter_1d(g: [f64; 3]) -> [f64; TILE] {
    [
        g[0] / 4.0,
        -(g[0] + g[1] + g[2]) / 6.0,
        -(g[0] - g[1] + g[2]) / 6.0,
        g[0] / 24.0 + g[1] / 12.0 + g[2] / 6.0,
        g[0] / 24.0 - g[1] / 12.0 + g[2] / 6.0,
        g[2],
    ]
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
                        out[((b * h + y) * w + xx) * o_n + o] =
                            if relu { acc.max(0.0) } else { acc };
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
        if !super::super::packed_gemm::kernel_available() {
            eprintln!("skipped: no AVX2 + FMA on this CPU");
            return;
        }
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
            let wino = Winograd::new(&weight, &vec![1.0; o], o, c, bias.clone()).unwrap();
            for relu in [false, true] {
                let got = wino.forward(&x, (n, h, w, c), relu);
                let want = direct(&x, (n, h, w, c), &weight, &bias, relu);
                assert_eq!(got.len(), want.len());
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "case {i} at {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
