//! Deterministic pseudo-random test data (xorshift) and tensor comparison, shared by the
//! engine's unit tests.

use candle_core::{D, Device, Tensor};

/// `count` values in [-1, 1], the same for the same `seed`.
pub fn noise(count: usize, seed: u32) -> Vec<f32> {
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

/// A CPU tensor of `shape` filled with [`noise`].
pub fn noise_tensor(shape: &[usize], seed: u32) -> Tensor {
    let count = shape.iter().product();
    Tensor::from_vec(noise(count, seed), shape, &Device::Cpu).unwrap()
}

/// The largest absolute difference between two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(D::Minus1)
        .unwrap()
        .to_scalar()
        .unwrap()
}
