//! What the fast path stores activations as between layers: f32, or — with a bfloat16 model —
//! bfloat16 (its 16 bits as `u16`, which is what `half::bf16` holds).
//!
//! Why bfloat16 activations: a bfloat16 product rounds its left operand to bfloat16 anyway,
//! so storing the activations that way loses nothing the product kept, and halves the bytes
//! every layer reads and writes. Measured per layer against OpenVINO (docs/performance.md),
//! camview's bf16 lost where layers are large in pixels and shallow in depth (the stem and
//! stage 1), which is where those bytes are most of the time.

use super::packed_gemm::{from_bf16, round_to_bf16, to_bf16};

/// A product's left operand: f32 values, or bfloat16 bits.
#[derive(Clone, Copy)]
pub enum Lhs<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl Lhs<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(values) => values.len(),
            Self::Bf16(bits) => bits.len(),
        }
    }
}

/// An activation value as stored: `f32`, or bfloat16 bits (`u16`).
pub trait Activation: Copy + Send + Sync + std::fmt::Debug + 'static {
    /// Whether this is bfloat16.
    const BF16: bool;
    const ZERO: Self;
    fn to_f32(self) -> f32;
    /// Rounded to the nearest (ties to even) for bfloat16.
    fn from_f32(value: f32) -> Self;
    fn lhs(values: &[Self]) -> Lhs<'_>;
    /// The values themselves where they are f32 (no conversion needed).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;
    /// `dst[i]` = `src[i]` rounded to this type.
    fn narrow(src: &[f32], dst: &mut [Self]);
}

impl Activation for f32 {
    const BF16: bool = false;
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        value
    }
    fn lhs(values: &[Self]) -> Lhs<'_> {
        Lhs::F32(values)
    }
    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Activation for u16 {
    const BF16: bool = true;
    const ZERO: Self = 0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        from_bf16(self)
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        to_bf16(value)
    }
    fn lhs(values: &[Self]) -> Lhs<'_> {
        Lhs::Bf16(values)
    }
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        round_to_bf16(src, dst);
    }
}

/// `dst[i]` = `src[i]` rounded to `T`.
pub fn narrow<T: Activation>(src: &[f32], dst: &mut [T]) {
    T::narrow(src, dst);
}

/// bfloat16 bits as candle's `half::bf16` values, without a copy.
pub fn into_bf16_vec(bits: Vec<u16>) -> Vec<half::bf16> {
    use half::vec::HalfBitsVecExt;
    bits.reinterpret_into()
}

/// `half::bf16` values as their bits, without a copy.
pub fn bf16_bits(values: &[half::bf16]) -> &[u16] {
    use half::slice::HalfFloatSliceExt;
    values.reinterpret_cast()
}
