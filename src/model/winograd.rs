//! 3×3 stride-1 convolutions by Winograd's minimal filtering F(4×4, 3×3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", CVPR 2016).
//!
//! Why: the 3×3 convolutions are 45 % of ResNet-50's multiply-adds. F(4×4, 3×3) computes
//! each 4×4 output tile from a 6×6 input tile with 36 multiplies per channel pair instead of
//! 144: the input tile and the filter are each transformed (Bᵀ d B, G g Gᵀ), multiplied
//! element-wise — which, summed over input channels, is 36 independent GEMMs of
//! tiles × C_in by C_in × C_out — and the product is transformed back (Aᵀ m A).
//!
//! The filters are transformed once, at load, in f64. Input and output transforms work on
//! eight channels at a time (NHWC keeps them contiguous), the GEMMs use the packed
//! micro-kernel. Interpolation points 0, ±1, ±2 (the standard choice): in f32 the result
//! stays within ~1e-5 relative of a direct convolution (the golden tests hold it to 1e-4 on
//! the logits after all sixteen 3×3 layers).

use rayon::prelude::*;

use super::packed_gemm::{Epilogue, PackedMatrix};
use super::scratch;

/// Output tile side (m) and input tile side (m + r − 1).
const OUT: usize = 4;
const TILE: usize = 6;
/// Transformed positions per tile: 36 GEMMs.
const POINTS: usize = TILE * TILE;
/// Channels transformed together (one AVX vector's worth; plain arrays the compiler
/// vectorises).
const LANES: usize = 8;

type Lane = [f32; LANES];

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
    /// is unavailable or the channel counts are not whole vectors.
    pub fn new(weight: &[f32], out_c: usize, in_c: usize, bias: Vec<f32>) -> Option<Self> {
        assert_eq!(weight.len(), out_c * in_c * 9, "weight size");
        if !in_c.is_multiple_of(LANES) {
            return None;
        }
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
                        u[(row * TILE + col) * plane + c * out_c + o] = *v as f32;
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
        let tiles = n * tiles_y * tiles_x;
        let out_c = self.out_c;

        // V, tile-major: [tile][ξ][c], so each tile's transform writes one contiguous run.
        let mut v = scratch::take(tiles * POINTS * c);
        v.par_chunks_mut(POINTS * c).enumerate().for_each(|(t, v)| {
            let (b, ty, tx) = (
                t / (tiles_y * tiles_x),
                (t / tiles_x) % tiles_y,
                t % tiles_x,
            );
            self.transform_input(x, (b, h, w), (ty * OUT, tx * OUT), v);
        });

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
        let mut out = vec![0f32; n * h * w * out_c];
        out.par_chunks_mut(h * w * out_c)
            .enumerate()
            .for_each(|(b, image)| {
                image
                    .par_chunks_mut(OUT * w * out_c)
                    .enumerate()
                    .for_each(|(ty, band)| {
                        let mut rows: Vec<&mut [f32]> = band.chunks_mut(w * out_c).collect();
                        for tx in 0..tiles_x {
                            let t = (b * tiles_y + ty) * tiles_x + tx;
                            self.transform_output(&m, tiles, t, tx * OUT, &mut rows, relu);
                        }
                    });
            });
        out
    }

    /// Bᵀ d B for the 6×6 input tile whose output corner is (y0, x0) (input corner one pixel
    /// up and left: padding 1), into `v` = [ξ][c].
    fn transform_input(
        &self,
        x: &[f32],
        (b, h, w): (usize, usize, usize),
        (y0, x0): (usize, usize),
        v: &mut [f32],
    ) {
        let c = self.in_c;
        // The input pixel of tile position (i, j), if it is inside the image.
        let pixel = |i: usize, j: usize| -> Option<usize> {
            let y = (y0 + i).checked_sub(1).filter(|&y| y < h)?;
            let x = (x0 + j).checked_sub(1).filter(|&x| x < w)?;
            Some(((b * h + y) * w + x) * c)
        };
        let offsets: [[Option<usize>; TILE]; TILE] =
            std::array::from_fn(|i| std::array::from_fn(|j| pixel(i, j)));
        for c0 in (0..c).step_by(LANES) {
            let d: [[Lane; TILE]; TILE] = std::array::from_fn(|i| {
                std::array::from_fn(|j| match offsets[i][j] {
                    Some(at) => x[at + c0..at + c0 + LANES].try_into().unwrap(),
                    None => [0.0; LANES],
                })
            });
            // Columns then rows: t = Bᵀ d, then V = t B.
            let columns: [[Lane; TILE]; TILE] =
                std::array::from_fn(|j| input_1d(std::array::from_fn(|i| d[i][j])));
            let t: [[Lane; TILE]; TILE] =
                std::array::from_fn(|i| std::array::from_fn(|j| columns[j][i]));
            for (i, row) in t.iter().enumerate() {
                for (j, value) in input_1d(*row).iter().enumerate() {
                    v[(i * TILE + j) * c + c0..][..LANES].copy_from_slice(value);
                }
            }
        }
    }

    /// Aᵀ M A + bias (and ReLU) for tile `t`, written into the output `rows` (up to 4 rows
    /// of the image, each W × C_out) at column `x0`.
    fn transform_output(
        &self,
        m: &[f32],
        tiles: usize,
        t: usize,
        x0: usize,
        rows: &mut [&mut [f32]],
        relu: bool,
    ) {
        let out_c = self.out_c;
        let width = rows[0].len() / out_c;
        let cols = OUT.min(width - x0);
        for o0 in (0..out_c).step_by(LANES) {
            let at = |xi: usize| -> Lane {
                m[(xi * tiles + t) * out_c + o0..][..LANES]
                    .try_into()
                    .unwrap()
            };
            let columns: [[Lane; OUT]; TILE] =
                std::array::from_fn(|j| output_1d(std::array::from_fn(|i| at(i * TILE + j))));
            let s: [[Lane; TILE]; OUT] =
                std::array::from_fn(|i| std::array::from_fn(|j| columns[j][i]));
            let bias: Lane = self.bias[o0..o0 + LANES].try_into().unwrap();
            for (i, row) in rows.iter_mut().enumerate() {
                let y = output_1d(s[i]);
                for (j, value) in y.iter().enumerate().take(cols) {
                    let dst = &mut row[(x0 + j) * out_c + o0..][..LANES];
                    for l in 0..LANES {
                        let v = value[l] + bias[l];
                        dst[l] = if relu { v.max(0.0) } else { v };
                    }
                }
            }
        }
    }
}

/// Bᵀ d for one column of six input values (per lane).
#[inline(always)]
fn input_1d(d: [Lane; TILE]) -> [Lane; TILE] {
    let lane = |f: &dyn Fn(usize) -> f32| -> Lane { std::array::from_fn(f) };
    [
        lane(&|l| 4.0 * d[0][l] - 5.0 * d[2][l] + d[4][l]),
        lane(&|l| -4.0 * (d[1][l] + d[2][l]) + d[3][l] + d[4][l]),
        lane(&|l| 4.0 * (d[1][l] - d[2][l]) - d[3][l] + d[4][l]),
        lane(&|l| 2.0 * (d[3][l] - d[1][l]) - d[2][l] + d[4][l]),
        lane(&|l| 2.0 * (d[1][l] - d[3][l]) - d[2][l] + d[4][l]),
        lane(&|l| 4.0 * d[1][l] - 5.0 * d[3][l] + d[5][l]),
    ]
}

/// Aᵀ m for one column of six products (per lane): four outputs.
#[inline(always)]
fn output_1d(m: [Lane; TILE]) -> [Lane; OUT] {
    let lane = |f: &dyn Fn(usize) -> f32| -> Lane { std::array::from_fn(f) };
    [
        lane(&|l| m[0][l] + m[1][l] + m[2][l] + m[3][l] + m[4][l]),
        lane(&|l| m[1][l] - m[2][l] + 2.0 * (m[3][l] - m[4][l])),
        lane(&|l| m[1][l] + m[2][l] + 4.0 * (m[3][l] + m[4][l])),
        lane(&|l| m[1][l] - m[2][l] + 8.0 * (m[3][l] - m[4][l]) + m[5][l]),
    ]
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

    fn noise(count: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

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
        ]
        .iter()
        .enumerate()
        {
            let seed = i as u32 * 10;
            let x = noise(n * h * w * c, seed + 1);
            let weight = noise(o * c * 9, seed + 2);
            let bias = noise(o, seed + 3);
            let wino = Winograd::new(&weight, o, c, bias.clone()).unwrap();
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
