//! Layout changes and pooling for the channels-last (NHWC) fast path, as candle custom ops.
//!
//! Why not `permute(..).contiguous()` and `mean`: candle copies a permuted tensor one strided
//! element at a time and reduces over non-trailing axes the same way; at 224² the two layout
//! changes and the global average pool took ≈ 1.1 ms of a ≈ 36 ms forward pass, against
//! ≈ 0.05 ms here. The `unsafe` here calls the pool compiled for AVX2 where the CPU has it.

#![allow(unsafe_code)]

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor, bail};

use super::activation::{Activation, narrow};
use super::fastconv::{Dims4, IntoStorage, Values, values4};
use super::packed_gemm::kernel_available;
use super::parallel;

/// N × C × H × W → N × H × W × C (contiguous).
#[cfg(test)]
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    to_channels_last_as(x, DType::F32)
}

/// [`to_channels_last`] of an f32 tensor, stored as `dtype` (f32, or bf16 for a bfloat16
/// model's activations: rounded as it is moved, no pass of its own).
pub fn to_channels_last_as(x: &Tensor, dtype: DType) -> Result<Tensor> {
    // A view (a batch narrowed from a larger one) is made dense first.
    x.contiguous()?.apply_op1_no_bwd(&Transpose {
        to_last: true,
        bf16: dtype == DType::BF16,
    })
}

/// N × H × W × C → N × C × H × W (contiguous), f32 (bfloat16 activations are widened).
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&Transpose {
        to_last: false,
        bf16: false,
    })
}

/// The mean over H and W of an N × H × W × C tensor (f32 or bf16): N × C in f32.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&GlobalAvgPool)
}

/// A layout change: to channels-last (or back), into f32 or bfloat16.
struct Transpose {
    to_last: bool,
    bf16: bool,
}

impl CustomOp1 for Transpose {
    fn name(&self) -> &'static str {
        match self.to_last {
            true => "camview-to-channels-last",
            false => "camview-to-channels-first",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (n, d1, d2, d3)) = values4(storage, layout)?;
        // Each image is a matrix of `rows` × `cols` to transpose.
        let ((rows, cols), shape) = match self.to_last {
            true => ((d1, d2 * d3), (n, d2, d3, d1)),
            false => ((d1 * d2, d3), (n, d3, d1, d2)),
        };
        let storage = match (x, self.bf16) {
            (Values::F32(x), false) => transposed::<_, f32>(x, rows, cols).into_storage(),
            (Values::F32(x), true) => transposed::<_, u16>(x, rows, cols).into_storage(),
            (Values::Bf16(x), false) => transposed::<_, f32>(x, rows, cols).into_storage(),
            (Values::Bf16(x), true) => transposed::<_, u16>(x, rows, cols).into_storage(),
        };
        Ok((storage, Shape::from(shape)))
    }
}

/// Each image of `x` (rows × cols) transposed, converted to `U`. Parallel over the output's
/// rows (the input's columns), so one image uses every thread: the input's 3 × 224² and the
/// features' 7² × 2048 took 110–150 µs and 90–110 µs of a pass on one thread.
fn transposed<T: Activation, U: Activation>(x: &[T], rows: usize, cols: usize) -> Vec<U> {
    let mut out = vec![U::ZERO; x.len()];
    if x.is_empty() {
        return out;
    }
    // Columns per task: a few tasks a thread, whole transpose blocks.
    let per_task = cols
        .div_ceil(4 * rayon::current_num_threads())
        .next_multiple_of(TRANSPOSE_BLOCK);
    for (dst, src) in out.chunks_mut(rows * cols).zip(x.chunks(rows * cols)) {
        parallel::for_each_chunk_mut_init(dst, per_task * rows, Vec::new, |wide, i, dst| {
            let columns = i * per_task..i * per_task + dst.len() / rows;
            match U::as_f32_mut(dst) {
                Some(dst) => transpose(src, dst, rows, cols, columns),
                // Into bfloat16: transposed in f32, then rounded in one vectorised pass.
                None => {
                    wide.resize(dst.len(), 0.0);
                    transpose(src, wide, rows, cols, columns);
                    narrow(wide, dst);
                }
            }
        });
    }
    out
}

const TRANSPOSE_BLOCK: usize = 16;

/// Rows `columns` of the transpose (cols × rows) of `src` (rows × cols), both row-major,
/// into `dst`, in square blocks so that reads and writes both stay within a few cache lines.
fn transpose<T: Activation>(
    src: &[T],
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    columns: std::ops::Range<usize>,
) {
    let first = columns.start;
    for r0 in (0..rows).step_by(TRANSPOSE_BLOCK) {
        for c0 in columns.clone().step_by(TRANSPOSE_BLOCK) {
            for r in r0..(r0 + TRANSPOSE_BLOCK).min(rows) {
                for c in c0..(c0 + TRANSPOSE_BLOCK).min(columns.end) {
                    dst[(c - first) * rows + r] = src[r * cols + c].to_f32();
                }
            }
        }
    }
}

struct GlobalAvgPool;

impl CustomOp1 for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "camview-global-avg-pool"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (n, h, w, c)) = values4(storage, layout)?;
        if h * w == 0 {
            bail!("global average pool of an empty {h}×{w} map");
        }
        let out = match x {
            Values::F32(x) => mean_pixel(x, n, c),
            Values::Bf16(x) => mean_pixel(x, n, c),
        };
        Ok((CpuStorage::F32(out), Shape::from((n, c))))
    }
}

/// Each of the `n` images' mean pixel (of `c` channels), in f32.
fn mean_pixel<T: Activation>(x: &[T], n: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * c];
    let pixels = x.len() / (n * c).max(1);
    for (image, sums) in x.chunks_exact(pixels * c).zip(out.chunks_exact_mut(c)) {
        // Summed in f32 pixel by pixel, as candle's `mean` does: ≤ 49 terms at 224².
        for pixel in image.chunks_exact(c) {
            sums.iter_mut()
                .zip(pixel)
                .for_each(|(s, v)| *s += v.to_f32());
        }
        let scale = 1.0 / pixels as f32;
        sums.iter_mut().for_each(|s| *s *= scale);
    }
    out
}

/// Max pooling 3×3, stride 2, padding 1 (ResNet's stem pool) over an NHWC tensor; padded taps
/// are ignored, as with torchvision's −∞ padding.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    x.apply_op1_no_bwd(&MaxPool)
}

struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "camview-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (n, h, w, c)) = values4(storage, layout)?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let storage = match x {
            Values::F32(x) => max_pool(x, (n, h, w, c)).into_storage(),
            Values::Bf16(x) => max_pool(x, (n, h, w, c)).into_storage(),
        };
        Ok((storage, Shape::from((n, oh, ow, c))))
    }
}

fn max_pool<T: Activation>(x: &[T], (n, h, w, c): Dims4) -> Vec<T> {
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![T::ZERO; n * oh * ow * c];
    parallel::for_each_chunk_mut(&mut out, ow * c, |row, out| {
        #[cfg(target_arch = "x86_64")]
        if T::BF16 && kernel_available() {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { max_pool_row_avx2(x, (h, w, c), row, out) };
        }
        max_pool_row(x, (h, w, c), row, out);
    });
    out
}

/// [`max_pool_row`] compiled for AVX2, for bfloat16: widened in registers, 8 lanes a compare
/// (on the baseline's 4 lanes it took 180–230 µs of a 224² pass, OpenVINO's 122). The f32
/// pool runs as well without (with, it took 2.9 × as long).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn max_pool_row_avx2<T: Activation>(
    x: &[T],
    dims: (usize, usize, usize),
    row: usize,
    out: &mut [T],
) {
    max_pool_row(x, dims, row, out);
}

/// Output row `row` (of all images' rows) of the 3×3/2 max pool of `x` (H × W × C images).
#[inline(always)]
fn max_pool_row<T: Activation>(
    x: &[T],
    (h, w, c): (usize, usize, usize),
    row: usize,
    out: &mut [T],
) {
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let (b, oy) = (row / oh, row % oh);
    let rows = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
    for ox in 0..ow {
        let pixel = &mut out[ox * c..(ox + 1) * c];
        let cols = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w);
        // The window's first tap starts the maximum (a window always has one): no −∞
        // fill. `if v > o` is one `maxps`, where `f32::max`'s NaN rule costs two more
        // instructions a vector.
        let tap = |iy: usize, ix: usize| &x[((b * h + iy) * w + ix) * c..][..c];
        pixel.copy_from_slice(tap(rows.start, cols.start));
        for iy in rows.clone() {
            for ix in cols.clone() {
                for (o, &v) in pixel.iter_mut().zip(tap(iy, ix)) {
                    *o = if v.to_f32() > o.to_f32() { v } else { *o };
                }
            }
        }
    }
}

/// Average pooling 2×2, stride 2, ceil mode, padding not counted (timm's `avg_down`
/// shortcut) over an NHWC tensor: a window cut by the image's edge averages what it covers.
pub fn avg_pool_2x2_s2_ceil(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1_no_bwd(&AvgPool)
}

struct AvgPool;

impl CustomOp1 for AvgPool {
    fn name(&self) -> &'static str {
        "camview-avg-pool-2x2-s2-ceil"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, (n, h, w, c)) = values4(storage, layout)?;
        let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
        let storage = match x {
            Values::F32(x) => avg_pool(x, (n, h, w, c)).into_storage(),
            Values::Bf16(x) => avg_pool(x, (n, h, w, c)).into_storage(),
        };
        Ok((storage, Shape::from((n, oh, ow, c))))
    }
}

fn avg_pool<T: Activation>(x: &[T], (n, h, w, c): Dims4) -> Vec<T> {
    let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
    let mut out = vec![T::ZERO; n * oh * ow * c];
    parallel::for_each_chunk_mut_init(
        &mut out,
        ow * c,
        || vec![0f32; c],
        |sums, row, out| {
            let (b, oy) = (row / oh, row % oh);
            let ys = 2 * oy..(2 * oy + 2).min(h);
            for ox in 0..ow {
                let xs = 2 * ox..(2 * ox + 2).min(w);
                sums.fill(0.0);
                for iy in ys.clone() {
                    for ix in xs.clone() {
                        let src = &x[((b * h + iy) * w + ix) * c..][..c];
                        sums.iter_mut().zip(src).for_each(|(s, v)| *s += v.to_f32());
                    }
                }
                let scale = 1.0 / (ys.len() * xs.len()) as f32;
                for (o, s) in out[ox * c..(ox + 1) * c].iter_mut().zip(sums.iter()) {
                    *o = T::from_f32(s * scale);
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_data::{max_abs_diff, noise_tensor as tensor};

    #[test]
    fn layout_changes_match_candle_permute() {
        // Sizes that are and are not multiples of the transpose block, and a batch.
        for (i, shape) in [
            [1, 3, 224, 224],
            [2, 5, 7, 33],
            [1, 2048, 7, 7],
            [3, 1, 2, 17],
        ]
        .iter()
        .enumerate()
        {
            let nchw = tensor(shape, i as u32 + 1);
            // A strided view as well as a dense tensor.
            let view = nchw.narrow(3, 0, shape[3] - 1).unwrap();
            assert_eq!(
                max_abs_diff(
                    &to_channels_last(&view).unwrap(),
                    &view.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
                ),
                0.0,
                "{shape:?} view"
            );
            let want = nchw.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            let nhwc = to_channels_last(&nchw).unwrap();
            assert_eq!(nhwc.dims(), want.dims(), "{shape:?}");
            assert_eq!(max_abs_diff(&nhwc, &want), 0.0, "{shape:?}");
            let back = to_channels_first(&nhwc).unwrap();
            assert_eq!(back.dims(), nchw.dims(), "{shape:?}");
            assert_eq!(max_abs_diff(&back, &nchw), 0.0, "{shape:?}");
        }
    }

    #[test]
    fn global_avg_pool_matches_candle_mean() {
        for (i, shape) in [[1, 7, 7, 2048], [2, 3, 5, 8], [1, 1, 1, 4]]
            .iter()
            .enumerate()
        {
            let x = tensor(shape, i as u32 + 10);
            let got = global_avg_pool(&x).unwrap();
            let want = x.mean((1, 2)).unwrap();
            assert_eq!(got.dims(), want.dims(), "{shape:?}");
            assert!(max_abs_diff(&got, &want) < 1e-6, "{shape:?}");
        }
    }

    #[test]
    fn max_pool_matches_a_naive_pool_with_minus_infinity_padding() {
        for (h, w) in [(8, 8), (9, 7), (1, 1), (2, 5)] {
            let (n, c) = (2, 4);
            let x = tensor(&[n, h, w, c], (h * w) as u32);
            let got = max_pool_3x3_s2(&x).unwrap();
            let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
            assert_eq!(got.dims(), &[n, oh, ow, c], "{h}x{w}");
            let x = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for b in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut want = f32::NEG_INFINITY;
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (iy, ix) =
                                        ((2 * oy + dy) as isize - 1, (2 * ox + dx) as isize - 1);
                                    if (0..h as isize).contains(&iy)
                                        && (0..w as isize).contains(&ix)
                                    {
                                        want = want.max(
                                            x[((b * h + iy as usize) * w + ix as usize) * c + ch],
                                        );
                                    }
                                }
                            }
                            assert_eq!(got[((b * oh + oy) * ow + ox) * c + ch], want, "{h}x{w}");
                        }
                    }
                }
            }
        }
    }

    /// Each op on bfloat16 activations gives what it gives on their f32 values, rounded to
    /// bfloat16 where its output is bfloat16 (the pools' sums are f32, rounded once).
    #[test]
    fn bf16_activations_give_the_f32_results_rounded() {
        use crate::model::kernels::packed_gemm::{from_bf16, to_bf16};
        let bits = |t: &Tensor| -> Vec<u16> {
            let values = t.flatten_all().unwrap().to_vec1::<half::bf16>().unwrap();
            values.iter().map(|v| v.to_bits()).collect()
        };
        let rounded = |t: &Tensor| -> Vec<u16> {
            let values = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            values.into_iter().map(to_bf16).collect()
        };
        let nchw = tensor(&[2, 3, 9, 7], 40);
        let nhwc = to_channels_last_as(&nchw, DType::BF16).unwrap();
        assert_eq!(nhwc.dtype(), DType::BF16);
        assert_eq!(bits(&nhwc), rounded(&to_channels_last(&nchw).unwrap()));
        // The same values in f32, to compare each op against.
        let wide: Vec<f32> = bits(&nhwc).into_iter().map(from_bf16).collect();
        let wide = Tensor::from_vec(wide, nhwc.dims(), &candle_core::Device::Cpu).unwrap();
        assert_eq!(
            bits(&max_pool_3x3_s2(&nhwc).unwrap()),
            rounded(&max_pool_3x3_s2(&wide).unwrap())
        );
        assert_eq!(
            bits(&avg_pool_2x2_s2_ceil(&nhwc).unwrap()),
            rounded(&avg_pool_2x2_s2_ceil(&wide).unwrap())
        );
        assert_eq!(
            max_abs_diff(
                &global_avg_pool(&nhwc).unwrap(),
                &global_avg_pool(&wide).unwrap()
            ),
            0.0
        );
        assert_eq!(
            max_abs_diff(
                &to_channels_first(&nhwc).unwrap(),
                &to_channels_first(&wide).unwrap()
            ),
            0.0
        );
    }

    #[test]
    fn avg_pool_averages_what_each_window_covers() {
        // 3 × 3 → 2 × 2: the right column and bottom row windows are cut by the edge.
        let x = Tensor::from_vec(
            (1..=9).map(|v| v as f32).collect::<Vec<_>>(),
            (1, 3, 3, 1),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let got = avg_pool_2x2_s2_ceil(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(got, [3.0, 4.5, 7.5, 9.0]);
    }
}
