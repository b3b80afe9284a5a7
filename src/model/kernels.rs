//! The CPU fast path's kernels, and all of the engine's `unsafe` but the mapped weights file:
//! packed GEMM with its AVX2, AVX-512 and bfloat16 micro-kernels (and the portable `gemm`
//! crate), fused convolutions as candle custom ops, Winograd, grouped convolutions, the
//! channels-last layout ops, and the f32 or bfloat16 activations they all take.

pub(crate) mod activation;
pub(crate) mod fastconv;
mod grouped;
pub(crate) mod matrix;
pub(crate) mod nhwc;
pub mod packed_gemm;
pub(crate) mod parallel;
mod scratch;
pub(crate) mod winograd;
