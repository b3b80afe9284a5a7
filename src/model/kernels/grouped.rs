//! Grouped convolutions (ResNeXt's 3 × 3 layers) computed directly with AVX-512 or AVX2,
//! channels-last.
//!
//! Why: as one GEMM per cluster of groups ([`super::fastconv`]'s fallback) a group of 4 or 8
//! channels multiplies a block-diagonal weight, 4 or 2 × the useful multiply-adds, after
//! gathering its taps cluster by cluster; ResNeXt-50's stage-1 grouped layers ran at 7–8
//! GMAC/s there against 80–100 for the 1 × 1 layers around them (docs/performance.md).
//!
//! Here the output channels go 16 to a zmm register. A group narrower than 16 channels has its
//! input channels in the same 16-channel block as its outputs (the groups' inputs and outputs
//! are equally wide), so input channel `ci` of every lane's group is one permutation of that
//! block (lane l takes `l / g · g + ci`); a group of 16 or more takes each input channel as a
//! broadcast. Every multiply-add is a useful one, and the input is read where it lies.
#![allow(unsafe_code)]

use super::activation::{Activation, narrow};
use super::packed_gemm::{
    Bf16Kernel, F32Kernel, Format, SharedMut, bf16_kernel_available, from_bf16, to_bf16,
};
use super::parallel;

/// Output channels a register holds.
const LANES: usize = 16;
/// Output pixels a micro-tile computes at once, sharing each weight vector.
const TILE: usize = 8;
/// The same for the AVX2 form, whose 16 registers hold half as many accumulators.
const TILE_AVX2: usize = 4;

/// One micro-tile's place: pixels `ox0..` of a row whose tap table is `table` (`ow` pixels a
/// tap), channels `block · 16..` of its outputs at `out`.
#[derive(Clone, Copy)]
struct Tile<'a, T> {
    table: &'a [*const T],
    ow: usize,
    ox0: usize,
    block: usize,
    out: *mut T,
    relu: bool,
}

/// A grouped convolution's weights laid out for [`GroupedConv::forward`].
#[derive(Debug, Clone)]
pub struct GroupedConv {
    /// Per block of 16 output channels, per tap, per input channel of the group: the 16
    /// channels' weights (scale folded in).
    weights: Vec<f32>,
    bias: Vec<f32>,
    channels: usize,
    /// Channels per group (inputs = outputs).
    width: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    /// Which form runs: AVX-512 (16 lanes a register) or AVX2 (two registers of 8).
    isa: F32Kernel,
    /// For groups narrower than 16: lane l of spread ci takes input channel l / g · g + ci of
    /// its block (the permutations of groups of 8).
    spreads: [[i32; LANES]; LANES],
    /// With a native bfloat16 model and groups of an even width: the weights as
    /// bfloat16 pairs for `vdpbf16ps`, per block, tap and pair of input channels (2p, 2p + 1):
    /// 16 lanes of (low: channel 2p, high: 2p + 1). Two multiply-adds an instruction, as the
    /// GEMMs around these layers do.
    pairs: Option<Vec<u32>>,
    /// For groups narrower than 16, with `pairs`: lane l of spread p takes the pair of input
    /// channels (l / g · g + 2p, + 1) of its block, i.e. pair l / g · g / 2 + p of its 8.
    pair_spreads: [[i32; LANES]; LANES / 2],
}

impl GroupedConv {
    /// From a row-major O × (I / groups) × k × k weight with I = O, its folded batch-norm
    /// `scale` and bias; `None` where this kernel does not apply: no AVX-512 F here, inputs and
    /// outputs of different widths, or groups that neither divide 16 channels nor fill them.
    /// With a bfloat16 `format` the weights are rounded to bfloat16 as a bfloat16 model's are:
    /// each product with a bfloat16 activation is then exact in f32. With the native kernel
    /// (AVX512_BF16) they are also paired for `vdpbf16ps`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        weight: &[f32],
        scale: &[f64],
        (out_c, in_c, k): (usize, usize, usize),
        groups: usize,
        bias: &[f32],
        stride: usize,
        pad: usize,
        format: Format,
    ) -> Option<Self> {
        let bf16 = format != Format::F32;
        let width = out_c / groups;
        let fits = in_c == out_c
            && out_c.is_multiple_of(LANES)
            && (LANES.is_multiple_of(width) || width.is_multiple_of(LANES));
        // With AVX512_BF16 a bfloat16 model's groups of any even width run here as pairs
        // (`vdpbf16ps`, [`Self::pair_tile`]): against the f32-arithmetic form, ResNeXt-50's
        // grouped layers took 0.80–0.84 × (stage 1), 0.60–0.65 × (stage 2) and 0.53–0.57 ×
        // (stage 3), and against the clusters 0.83–0.91 × (stage 4). Without it, groups wider
        // than 16 run faster as the clusters' GEMM (stage 4: the f32 form took 1.64 × their
        // time). With AVX2, whose 4-pixel tiles broadcast each input once for only 4
        // multiply-adds, groups of 16 or more do too (stage 3: 0.84–0.92 ×, stage 4:
        // 0.64–0.67 ×); with narrower groups the clusters are slower everywhere.
        let isa = F32Kernel::detect()?;
        let paired = format == Format::Bf16(Bf16Kernel::Native)
            && isa == F32Kernel::Avx512
            && bf16_kernel_available()
            && width.is_multiple_of(2);
        if !fits || (bf16 && width > LANES && !paired) || (isa == F32Kernel::Avx2 && width >= LANES)
        {
            return None;
        }
        let taps = k * k;
        let mut weights = Vec::with_capacity(out_c * taps * width);
        for block in 0..out_c / LANES {
            for tap in 0..taps {
                for ci in 0..width {
                    for lane in 0..LANES {
                        let o = block * LANES + lane;
                        let w = weight[(o * width + ci) * taps + tap];
                        let w = (f64::from(w) * scale[o]) as f32;
                        weights.push(if bf16 { from_bf16(to_bf16(w)) } else { w });
                    }
                }
            }
        }
        let pairs = paired.then(|| {
            let half = width / 2;
            let mut pairs = Vec::with_capacity(out_c * taps * half);
            for block in 0..out_c / LANES {
                for tap in 0..taps {
                    for p in 0..half {
                        for lane in 0..LANES {
                            let at = |ci: usize| {
                                weights[((block * taps + tap) * width + ci) * LANES + lane]
                            };
                            let (low, high) = (to_bf16(at(2 * p)), to_bf16(at(2 * p + 1)));
                            pairs.push(u32::from(low) | u32::from(high) << 16);
                        }
                    }
                }
            }
            pairs
        });
        let group = width.min(LANES);
        Some(Self {
            pairs,
            pair_spreads: std::array::from_fn(|p| {
                std::array::from_fn(|l| (l / group * group / 2 + p) as i32)
            }),
            weights,
            bias: bias.to_vec(),
            channels: out_c,
            width,
            kernel: k,
            stride,
            pad,
            isa,
            spreads: std::array::from_fn(|ci| {
                std::array::from_fn(|l| (l / width.min(LANES) * width.min(LANES) + ci) as i32)
            }),
        })
    }

    /// Output size for an input of `h` × `w`.
    fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let out = |s: usize| (s + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1;
        (out(h), out(w))
    }

    /// conv(x) + bias, then ReLU if `relu`: `x` is N × H × W × C (NHWC), the result
    /// N × H' × W' × C.
    pub fn forward<T: Activation>(
        &self,
        x: &[T],
        (n, h, w, c): (usize, usize, usize, usize),
        relu: bool,
    ) -> Vec<T> {
        assert_eq!(c, self.channels, "input channels");
        assert_eq!(x.len(), n * h * w * c, "input size");
        let (oh, ow) = self.output_size(h, w);
        let mut out = vec![T::ZERO; n * oh * ow * c];
        let zeros = vec![T::ZERO; c];
        // Tasks of one output row each; a few rows (stage 4 at 224²: 7) are cut further by
        // blocks of channels, so that every thread has work. Numbered block-major: a thread's
        // range of tasks is then the block of channels the layer before (split in column
        // bands at so few rows) left in its cache.
        let rows = n * oh;
        let blocks = c / LANES;
        let per_row = (4 * rayon::current_num_threads())
            .div_ceil(rows)
            .clamp(1, blocks);
        let per_task = blocks.div_ceil(per_row);
        let dst = SharedMut(out.as_mut_ptr().cast::<f32>());
        parallel::for_each(rows * per_row, |task| {
            let (row, part) = (task % rows, task / rows);
            let (b, oy) = (row / oh, row % oh);
            let range = part * per_task..((part + 1) * per_task).min(blocks);
            let out = dst.get().cast::<T>().wrapping_add(row * ow * c);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` checked the CPU's features for `isa`; the input, weights and the
            // row's W' × C outputs are the sizes `row` reads and writes (asserted above and by
            // construction), and tasks write disjoint blocks of channels of their rows.
            unsafe {
                match self.isa {
                    F32Kernel::Avx512 => self.row(x, (b, h, w), oy, &zeros, out, range, relu),
                    F32Kernel::Avx2 => self.row_avx2(x, (b, h, w), oy, &zeros, out, range, relu),
                }
            };
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!(
                "made only where AVX2 runs: {b} {oy} {range:?} {} {out:?}",
                zeros.len()
            );
        });
        out
    }

    /// For output pixels `ox0..ox0 + count` of row `oy` (of image `b`), where tap `tap` reads:
    /// its input pixel's C values, or `zeros` in the padding (and past `count`).
    #[inline(always)]
    fn tap_inputs<T: Activation, const R: usize>(
        &self,
        x: &[T],
        (b, h, w): (usize, usize, usize),
        (oy, ox0, count): (usize, usize, usize),
        tap: usize,
        zeros: &[T],
    ) -> [*const T; R] {
        let (c, k, s, p) = (self.channels, self.kernel, self.stride, self.pad);
        let (ky, kx) = (tap / k, tap % k);
        let iy = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h);
        let mut pixels = [zeros.as_ptr(); R];
        for (r, pixel) in pixels.iter_mut().enumerate().take(count) {
            let ix = ((ox0 + r) * s + kx).checked_sub(p).filter(|&ix| ix < w);
            if let (Some(iy), Some(ix)) = (iy, ix) {
                *pixel = x[((b * h + iy) * w + ix) * c..].as_ptr();
            }
        }
        pixels
    }

    /// Where each tap of each output pixel of row `oy` (of image `b`) reads: tap-major, `ow`
    /// pixels a tap, the input pixel's C values or `zeros` in the padding. Made once a row and
    /// shared by all its blocks of channels and tiles (per tile and tap, these bounds checks
    /// cost as much as a tenth of the multiply-adds).
    fn tap_table<T: Activation>(
        &self,
        x: &[T],
        (b, h, w): (usize, usize, usize),
        oy: usize,
        zeros: &[T],
    ) -> Vec<*const T> {
        let (c, k, s, p) = (self.channels, self.kernel, self.stride, self.pad);
        let ow = self.output_size(h, w).1;
        let mut table = Vec::with_capacity(k * k * ow);
        for tap in 0..k * k {
            let (ky, kx) = (tap / k, tap % k);
            let iy = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h);
            table.extend((0..ow).map(|ox| {
                let ix = (ox * s + kx).checked_sub(p).filter(|&ix| ix < w);
                match (iy, ix) {
                    (Some(iy), Some(ix)) => x[((b * h + iy) * w + ix) * c..].as_ptr(),
                    _ => zeros.as_ptr(),
                }
            }));
        }
        table
    }

    /// One output row (`oy` of image `b`), every block of channels, in tiles of at most
    /// [`TILE`] pixels, as even as whole tiles allow (a row of 14 is two tiles of 7, not 8 and
    /// 6 padded to 8).
    ///
    /// # Safety
    /// AVX-512 F is available; `x` is the whole input, `out` the row's W' × C outputs, of
    /// which nothing else writes the channels of `blocks`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn row<T: Activation>(
        &self,
        x: &[T],
        (b, h, w): (usize, usize, usize),
        oy: usize,
        zeros: &[T],
        out: *mut T,
        blocks: std::ops::Range<usize>,
        relu: bool,
    ) {
        let ow = self.output_size(h, w).1;
        let table = self.tap_table(x, (b, h, w), oy, zeros);
        let tiles = ow.div_ceil(TILE);
        let (base, longer) = (ow / tiles, ow % tiles);
        for block in blocks {
            let mut ox0 = 0;
            for i in 0..tiles {
                let count = base + usize::from(i < longer);
                let tile = Tile {
                    table: &table,
                    ow,
                    ox0,
                    block,
                    out,
                    relu,
                };
                // SAFETY: as this function's; the table's pointers each have C values; `pairs`
                // exist only where `new` found AVX512_BF16.
                unsafe {
                    macro_rules! run {
                        ($tile:ident) => {
                            match count {
                                8 => self.$tile::<T, 8>(tile),
                                7 => self.$tile::<T, 7>(tile),
                                6 => self.$tile::<T, 6>(tile),
                                5 => self.$tile::<T, 5>(tile),
                                4 => self.$tile::<T, 4>(tile),
                                3 => self.$tile::<T, 3>(tile),
                                2 => self.$tile::<T, 2>(tile),
                                _ => self.$tile::<T, 1>(tile),
                            }
                        };
                    }
                    match &self.pairs {
                        Some(_) => run!(pair_tile),
                        None => run!(tile),
                    }
                }
                ox0 += count;
            }
        }
    }

    /// `R` output pixels of a row from `tile.ox0`, one block of 16 channels: R accumulators,
    /// each tap's input channel spread to its lanes' groups (a shuffle) or broadcast.
    ///
    /// # Safety
    /// AVX-512 F is available; the table's pointers each have C values; `tile.out` the row's
    /// W' × C outputs, pixels `ox0..ox0 + R` of which are inside the row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<T: Activation, const R: usize>(&self, tile: Tile<'_, T>) {
        use std::arch::x86_64::*;
        let (c, g, taps) = (self.channels, self.width, self.kernel * self.kernel);
        let Tile {
            table,
            ow,
            ox0,
            block,
            out,
            relu,
        } = tile;
        let weights = &self.weights[block * taps * g * LANES..][..taps * g * LANES];
        // SAFETY (all loads and stores below): each pointer has C values, the block's 16 lie
        // within; the bias has C values; the weights as sliced; the outputs as promised.
        unsafe {
            let bias = _mm512_loadu_ps(self.bias.as_ptr().add(block * LANES));
            let mut acc = [bias; R];
            // The group's first input channel, for groups of 16 or more.
            let group_start = block * LANES / g.max(LANES) * g.max(LANES);
            for tap in 0..taps {
                let pixel = &table[tap * ow + ox0..][..R];
                let tap_weights = weights[tap * g * LANES..][..g * LANES].as_ptr();
                if g < LANES {
                    let mut inputs = [_mm512_setzero_ps(); R];
                    for (input, &at) in inputs.iter_mut().zip(pixel) {
                        let at = at.add(block * LANES);
                        *input = if T::BF16 {
                            // 16 bfloat16 values widened: their bits are an f32's high half.
                            let bits = _mm256_loadu_si256(at.cast());
                            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                                bits,
                            )))
                        } else {
                            _mm512_loadu_ps(at.cast())
                        };
                    }
                    // Input channel `ci` of each lane's group, times its weights.
                    macro_rules! step {
                        ($ci:expr, $spread:expr) => {{
                            let wv = _mm512_loadu_ps(tap_weights.add($ci * LANES));
                            for r in 0..R {
                                acc[r] = _mm512_fmadd_ps($spread(inputs[r]), wv, acc[r]);
                            }
                        }};
                    }
                    // Groups within 128-bit lanes shuffle in-lane (`vpermilps`, one cycle),
                    // wider ones across lanes (`vpermps`, three).
                    match g {
                        1 => step!(0, |v| v),
                        2 => {
                            step!(0, |v| _mm512_permute_ps::<0xA0>(v));
                            step!(1, |v| _mm512_permute_ps::<0xF5>(v));
                        }
                        4 => {
                            step!(0, |v| _mm512_permute_ps::<0x00>(v));
                            step!(1, |v| _mm512_permute_ps::<0x55>(v));
                            step!(2, |v| _mm512_permute_ps::<0xAA>(v));
                            step!(3, |v| _mm512_permute_ps::<0xFF>(v));
                        }
                        _ => {
                            for (ci, order) in self.spreads.iter().enumerate().take(g) {
                                let order = _mm512_loadu_si512(order.as_ptr().cast());
                                step!(ci, |v| _mm512_permutexvar_ps(order, v));
                            }
                        }
                    }
                } else {
                    for ci in 0..g {
                        let wv = _mm512_loadu_ps(tap_weights.add(ci * LANES));
                        for r in 0..R {
                            let a = _mm512_set1_ps((*pixel[r].add(group_start + ci)).to_f32());
                            acc[r] = _mm512_fmadd_ps(a, wv, acc[r]);
                        }
                    }
                }
            }
            store::<T, R>(acc, out, ox0 * c + block * LANES, c, relu);
        }
    }

    /// [`Self::tile`] with `vdpbf16ps`: each step multiplies a pair of input channels (both
    /// bfloat16) by the pair's weights and adds both products to the 16 f32 accumulators.
    /// Groups narrower than 16 take their pairs by one permutation of the block's 8 pairs
    /// (`vpermd`), groups of 16 as a broadcast of the two neighbouring channels. f32
    /// activations (tests) are rounded to bfloat16 first, as the GEMMs round them.
    ///
    /// # Safety
    /// As [`Self::tile`], with AVX512_BF16 available and `self.pairs` present.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn pair_tile<T: Activation, const R: usize>(&self, tile: Tile<'_, T>) {
        use std::arch::x86_64::*;
        let (c, g, taps) = (self.channels, self.width, self.kernel * self.kernel);
        let half = g / 2;
        let Tile {
            table,
            ow,
            ox0,
            block,
            out,
            relu,
        } = tile;
        let Some(pairs) = &self.pairs else {
            unreachable!("the caller checked")
        };
        let weights = &pairs[block * taps * half * LANES..][..taps * half * LANES];
        // SAFETY (all loads and stores below): as in `tile`; each tap's pairs `half` × 16.
        unsafe {
            let bias = _mm512_loadu_ps(self.bias.as_ptr().add(block * LANES));
            let mut acc = [bias; R];
            let group_start = block * LANES / g.max(LANES) * g.max(LANES);
            for tap in 0..taps {
                let pixel = &table[tap * ow + ox0..][..R];
                let tap_weights = weights[tap * half * LANES..][..half * LANES].as_ptr();
                if g < LANES {
                    // The block's 16 channels as 8 pairs, in the low half of a register.
                    let mut inputs = [_mm512_setzero_si512(); R];
                    for (input, &at) in inputs.iter_mut().zip(pixel) {
                        let at = at.add(block * LANES);
                        let bits = if T::BF16 {
                            _mm256_loadu_si256(at.cast())
                        } else {
                            let rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(at.cast()));
                            std::mem::transmute::<__m256bh, __m256i>(rounded)
                        };
                        *input = _mm512_castsi256_si512(bits);
                    }
                    for (p, spread) in self.pair_spreads.iter().enumerate().take(half) {
                        let order = _mm512_loadu_si512(spread.as_ptr().cast());
                        let wv = _mm512_loadu_si512(tap_weights.add(p * LANES).cast());
                        let wv = std::mem::transmute::<__m512i, __m512bh>(wv);
                        for r in 0..R {
                            let a = _mm512_permutexvar_epi32(order, inputs[r]);
                            let a = std::mem::transmute::<__m512i, __m512bh>(a);
                            acc[r] = _mm512_dpbf16_ps(acc[r], a, wv);
                        }
                    }
                } else {
                    for p in 0..half {
                        let wv = _mm512_loadu_si512(tap_weights.add(p * LANES).cast());
                        let wv = std::mem::transmute::<__m512i, __m512bh>(wv);
                        for r in 0..R {
                            let at = pixel[r].add(group_start + 2 * p);
                            // The pair's 32 bits broadcast straight from memory (as an f32
                            // load: an integer one went through a general register first).
                            let a = if T::BF16 {
                                _mm512_castps_si512(_mm512_set1_ps(
                                    at.cast::<f32>().read_unaligned(),
                                ))
                            } else {
                                let (low, high) = ((*at).to_f32(), (*at.add(1)).to_f32());
                                let pair = u32::from(to_bf16(low)) | u32::from(to_bf16(high)) << 16;
                                _mm512_set1_epi32(pair as i32)
                            };
                            let a = std::mem::transmute::<__m512i, __m512bh>(a);
                            acc[r] = _mm512_dpbf16_ps(acc[r], wv, a);
                        }
                    }
                }
            }
            store::<T, R>(acc, out, ox0 * c + block * LANES, c, relu);
        }
    }

    /// [`Self::row`] with AVX2 + FMA: each block of 16 channels as two registers of 8, tiles
    /// of [`TILE_AVX2`] pixels (16 registers: 8 accumulators, 2 weight halves, the spread
    /// input). Groups of 1, 2 and 4 shuffle within 128-bit lanes; groups of 8 (one register)
    /// and wider take each input channel as a broadcast.
    ///
    /// # Safety
    /// AVX2 and FMA are available; otherwise as [`Self::row`].
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    // `half` indexes the accumulators' halves and the weights' halves alike.
    #[allow(clippy::needless_range_loop)]
    unsafe fn row_avx2<T: Activation>(
        &self,
        x: &[T],
        (b, h, w): (usize, usize, usize),
        oy: usize,
        zeros: &[T],
        out: *mut T,
        blocks: std::ops::Range<usize>,
        relu: bool,
    ) {
        use std::arch::x86_64::*;
        const HALF: usize = LANES / 2;
        let (c, g, k) = (self.channels, self.width, self.kernel);
        let ow = self.output_size(h, w).1;
        let taps = k * k;
        for block in blocks {
            let weights = &self.weights[block * taps * g * LANES..][..taps * g * LANES];
            // SAFETY (all loads and stores below): the bias has C values; each pixel pointer
            // C values; the block's 16 lie within; the weights as sliced.
            unsafe {
                let bias = self.bias.as_ptr().add(block * LANES);
                let bias = [_mm256_loadu_ps(bias), _mm256_loadu_ps(bias.add(HALF))];
                for ox0 in (0..ow).step_by(TILE_AVX2) {
                    let count = TILE_AVX2.min(ow - ox0);
                    let mut acc = [bias; TILE_AVX2];
                    for tap in 0..taps {
                        let pixel: [*const T; TILE_AVX2] =
                            self.tap_inputs(x, (b, h, w), (oy, ox0, count), tap, zeros);
                        let tap_weights = weights[tap * g * LANES..][..g * LANES].as_ptr();
                        for half in 0..2 {
                            let first = block * LANES + half * HALF;
                            if g < HALF {
                                let mut inputs = [_mm256_setzero_ps(); TILE_AVX2];
                                for (r, input) in inputs.iter_mut().enumerate() {
                                    let at = pixel[r].add(first);
                                    *input = if T::BF16 {
                                        let bits = _mm_loadu_si128(at.cast());
                                        let wide =
                                            _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits));
                                        _mm256_castsi256_ps(wide)
                                    } else {
                                        _mm256_loadu_ps(at.cast())
                                    };
                                }
                                macro_rules! step {
                                    ($ci:expr, $spread:expr) => {{
                                        let wv = _mm256_loadu_ps(
                                            tap_weights.add($ci * LANES + half * HALF),
                                        );
                                        for r in 0..TILE_AVX2 {
                                            let a = $spread(inputs[r]);
                                            acc[r][half] = _mm256_fmadd_ps(a, wv, acc[r][half]);
                                        }
                                    }};
                                }
                                match g {
                                    1 => step!(0, |v| v),
                                    2 => {
                                        step!(0, |v| _mm256_permute_ps::<0xA0>(v));
                                        step!(1, |v| _mm256_permute_ps::<0xF5>(v));
                                    }
                                    _ => {
                                        step!(0, |v| _mm256_permute_ps::<0x00>(v));
                                        step!(1, |v| _mm256_permute_ps::<0x55>(v));
                                        step!(2, |v| _mm256_permute_ps::<0xAA>(v));
                                        step!(3, |v| _mm256_permute_ps::<0xFF>(v));
                                    }
                                }
                            } else {
                                // The group's first input channel: this half's for groups of
                                // 8, the block's group's for wider ones.
                                let start = first / g * g;
                                for ci in 0..g {
                                    let wv =
                                        _mm256_loadu_ps(tap_weights.add(ci * LANES + half * HALF));
                                    for r in 0..TILE_AVX2 {
                                        let a =
                                            _mm256_set1_ps((*pixel[r].add(start + ci)).to_f32());
                                        acc[r][half] = _mm256_fmadd_ps(a, wv, acc[r][half]);
                                    }
                                }
                            }
                        }
                    }
                    let zero = _mm256_setzero_ps();
                    for (r, acc) in acc.iter().enumerate().take(count) {
                        let at = out.add((ox0 + r) * c + block * LANES);
                        let mut values = [0f32; LANES];
                        for (half, &v) in acc.iter().enumerate() {
                            let v = if relu { _mm256_max_ps(v, zero) } else { v };
                            _mm256_storeu_ps(values.as_mut_ptr().add(half * HALF), v);
                        }
                        narrow(&values, std::slice::from_raw_parts_mut(at, LANES));
                    }
                }
            }
        }
    }
}

/// A tile's R accumulators (ReLU'd if `relu`) to pixels `first`, `first + c`, … of `out`: f32,
/// or bfloat16 rounded in registers as `to_bf16` rounds (to nearest even, NaN kept quiet) —
/// a call per 16 values here made the compiler keep the accumulators on the stack, and bf16
/// layers ran at a third of f32's pace.
///
/// # Safety
/// AVX-512 F is available; `out` has 16 values at `first + r · c` for r < R.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn store<T: Activation, const R: usize>(
    acc: [std::arch::x86_64::__m512; R],
    out: *mut T,
    first: usize,
    c: usize,
    relu: bool,
) {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    for (r, acc) in acc.iter().enumerate() {
        let v = if relu {
            _mm512_max_ps(*acc, zero)
        } else {
            *acc
        };
        // SAFETY: the caller promises 16 values at this pixel.
        unsafe {
            let at = out.add(first + r * c);
            if T::BF16 {
                let bits = _mm512_castps_si512(v);
                let high = _mm512_srli_epi32::<16>(bits);
                let even = _mm512_and_si512(high, _mm512_set1_epi32(1));
                let bias = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), even);
                let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(bits, bias));
                let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
                let quiet = _mm512_or_si512(high, _mm512_set1_epi32(0x40));
                let bf16 = _mm512_mask_mov_epi32(rounded, nan, quiet);
                _mm256_storeu_si256(at.cast(), _mm512_cvtepi32_epi16(bf16));
            } else {
                _mm512_storeu_ps(at.cast(), v);
            }
        }
    }
}
