//! A convolution's weight matrix in whichever form this CPU multiplies fastest: packed panels
//! for the AVX2 micro-kernel ([`super::packed_gemm`]), or row-major for the `gemm` crate (the
//! GEMM candle itself uses) on every other CPU, ARM included. Direct and Winograd layers both
//! multiply through it, so the portable path keeps Winograd's 2.25–4 × fewer multiplies.
//!
//! The `gemm` crate's API takes raw pointers, hence the `unsafe` here: the slices it receives
//! are bounds-checked first, and the column bands that share one destination write disjoint
//! elements.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::activation::{Activation, Lhs};
use super::packed_gemm::{Epilogue, Format, PackedMatrix, SharedMut};
use super::parallel;

/// A `depth` × `width` weight matrix.
#[derive(Debug, Clone)]
pub enum WeightMatrix {
    /// Pre-packed for the AVX2 micro-kernel.
    Panels(PackedMatrix),
    /// Row-major, for the `gemm` crate.
    RowMajor { values: Vec<f32>, width: usize },
}

impl WeightMatrix {
    /// The matrix whose element (k, col) is `at(k, col)`, packed in `format` when the
    /// micro-kernel runs (else row-major f32).
    pub fn from_fn(
        format: Format,
        depth: usize,
        width: usize,
        at: impl Fn(usize, usize) -> f32,
    ) -> Self {
        match PackedMatrix::from_fn_in(format, depth, width, &at) {
            Some(panels) => Self::Panels(panels),
            None => Self::RowMajor {
                values: (0..depth * width)
                    .map(|i| at(i / width, i % width))
                    .collect(),
                width,
            },
        }
    }

    /// The matrix of the row-major `values` (`depth` × `width`).
    pub fn from_rows(format: Format, values: &[f32], depth: usize, width: usize) -> Self {
        assert_eq!(values.len(), depth * width, "matrix size");
        Self::from_fn(format, depth, width, |k, col| values[k * width + col])
    }

    pub fn width(&self) -> usize {
        match self {
            Self::Panels(panels) => panels.width(),
            Self::RowMajor { width, .. } => *width,
        }
    }

    pub fn depth(&self) -> usize {
        match self {
            Self::Panels(panels) => panels.depth(),
            Self::RowMajor { values, width } => values.len() / width,
        }
    }

    /// [`Self::multiply_into`] for either kind of activation (see [`PackedMatrix::product`]).
    /// The portable path computes in f32 and rounds bfloat16 outputs once at the end.
    pub fn product<T: Activation>(
        &self,
        lhs: Lhs<'_>,
        lhs_stride: usize,
        out: &mut [MaybeUninit<T>],
        epilogue: Epilogue<'_, T>,
        column_bands: usize,
    ) {
        if let Self::Panels(panels) = self {
            return panels.product(lhs, lhs_stride, out, epilogue, column_bands);
        }
        let widened;
        let lhs = match lhs {
            Lhs::F32(values) => values,
            Lhs::Bf16(bits) => {
                widened = bits.iter().map(|&b| b.to_f32()).collect::<Vec<f32>>();
                &widened
            }
        };
        let residual = epilogue
            .residual
            .map(|r| r.iter().map(|v| v.to_f32()).collect::<Vec<f32>>());
        let mut sums = vec![MaybeUninit::new(0f32); out.len()];
        let epilogue = Epilogue {
            bias: epilogue.bias,
            residual: residual.as_deref(),
            relu: epilogue.relu,
        };
        self.multiply_into(lhs, lhs_stride, &mut sums, epilogue, column_bands);
        for (o, s) in out.iter_mut().zip(&sums) {
            // SAFETY: `multiply_into` wrote every value.
            o.write(T::from_f32(unsafe { s.assume_init() }));
        }
    }

    /// `out` (rows × width) = epilogue(`lhs` · self), where `lhs` is rows × depth with rows
    /// `lhs_stride` apart, and the columns are cut into `column_bands` computed in parallel.
    /// Every value of `out` is written; it may start uninitialised.
    pub fn multiply_into(
        &self,
        lhs: &[f32],
        lhs_stride: usize,
        out: &mut [MaybeUninit<f32>],
        epilogue: Epilogue<'_>,
        column_bands: usize,
    ) {
        let values = match self {
            Self::Panels(panels) => {
                return panels.multiply_into(lhs, lhs_stride, out, epilogue, column_bands);
            }
            Self::RowMajor { values, .. } => values,
        };
        // The portable path reads its output back: initialise it first.
        out.fill(MaybeUninit::new(0.0));
        // SAFETY: every value was just initialised; `MaybeUninit<f32>` has `f32`'s layout.
        let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [f32]) };
        let (n, k) = (self.width(), self.depth());
        let m = out.len() / n;
        assert_eq!(out.len(), m * n, "destination is not whole rows");
        let lhs = Operand {
            values: lhs,
            row_stride: lhs_stride,
        };
        gemm_column_bands((m, n, k), lhs, values, out, column_bands);
        for (i, row) in out.chunks_exact_mut(n).enumerate() {
            let skip = epilogue.residual.map(|r| &r[i * n..(i + 1) * n]);
            for (j, v) in row.iter_mut().enumerate() {
                let mut y = *v + epilogue.bias[j];
                if let Some(s) = skip {
                    y += s[j];
                }
                *v = if epilogue.relu { y.max(0.0) } else { y };
            }
        }
    }
}

/// A row-major left operand whose rows may lie further apart than their length.
#[derive(Clone, Copy)]
struct Operand<'a> {
    values: &'a [f32],
    row_stride: usize,
}

/// `dst (m×n) += lhs (m×k) · rhs (k×n)`, `rhs` and `dst` row-major and dense, with the
/// columns cut into `bands` contiguous ranges computed in parallel, each by a single-threaded
/// `gemm` call.
fn gemm_column_bands(
    (m, n, k): (usize, usize, usize),
    lhs: Operand<'_>,
    rhs: &[f32],
    dst: &mut [f32],
    bands: usize,
) {
    assert!(
        lhs.row_stride >= k
            && (m == 0 || lhs.values.len() >= (m - 1) * lhs.row_stride + k)
            && rhs.len() >= k * n
            && dst.len() >= m * n,
        "GEMM operand too small"
    );
    if m == 0 {
        return;
    }
    // Bands of whole micro-kernel tiles (16 columns).
    let width = n.div_ceil(bands.max(1)).next_multiple_of(16);
    let starts: Vec<usize> = (0..n).step_by(width).collect();
    let dst = SharedMut(dst.as_mut_ptr());
    let band = |&first: &usize| {
        let cols = width.min(n - first);
        // SAFETY: the assert above bounds what the GEMM touches: lhs is m×k with row stride
        // `row_stride`; rhs columns first..first+cols of a k×n matrix with row stride n; dst
        // columns first..first+cols of an m×n matrix with row stride n; all with unit column
        // stride. Bands cover disjoint column ranges, so no two calls write the same element,
        // and `dst`'s exclusive borrow outlives the (blocking) parallel loop.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                dst.get().add(first),
                1,
                n as isize,
                false,
                lhs.values.as_ptr(),
                1,
                lhs.row_stride as isize,
                rhs.as_ptr().add(first),
                1,
                n as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    };
    if starts.len() > 1 {
        parallel::for_each(starts.len(), |i| band(&starts[i]));
    } else {
        starts.iter().for_each(band);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable product against a naive one, with strided rows, several column bands,
    /// a residual and ReLU.
    #[test]
    fn the_portable_product_matches_a_naive_product() {
        let (m, n, k, stride) = (7, 40, 13, 17);
        let value = |i: usize, salt: usize| ((i * 31 + salt * 17) % 23) as f32 / 7.0 - 1.5;
        let lhs: Vec<f32> = (0..m * stride).map(|i| value(i, 1)).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| value(i, 2)).collect();
        let bias: Vec<f32> = (0..n).map(|i| value(i, 3)).collect();
        let residual: Vec<f32> = (0..m * n).map(|i| value(i, 4)).collect();
        let matrix = WeightMatrix::RowMajor {
            values: rhs.clone(),
            width: n,
        };
        for bands in [1, 2, 3] {
            let mut out = vec![MaybeUninit::new(f32::NAN); m * n];
            let epilogue = Epilogue {
                bias: &bias,
                residual: Some(&residual),
                relu: true,
            };
            matrix.multiply_into(&lhs, stride, &mut out, epilogue, bands);
            for i in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|p| lhs[i * stride + p] * rhs[p * n + j]).sum();
                    let want = (dot + bias[j] + residual[i * n + j]).max(0.0);
                    // SAFETY: every value was written by the product.
                    let got = unsafe { out[i * n + j].assume_init() };
                    assert!((got - want).abs() < 1e-4, "{bands} bands, ({i}, {j})");
                }
            }
        }
    }
}
