//! The CPU fast path's kernels, and all of the engine's `unsafe` but the mapped weights file:
//! packed GEMM with its AVX2 micro-kernel (and the portable `gemm` crate), fused
//! convolutions as candle custom ops, Winograd, and the channels-last layout ops.

pub(crate) mod activation;
pub(crate) mod fastconv;
mod grouped;
pub(crate) mod matrix;
pub(crate) mod nhwc;
pub mod packed_gemm;
mod scratch;
pub(crate) mod winograd;
