//! The convolutions' matrix product, with the weights packed once at load time.
//!
//! Why not only the `gemm` crate: it repacks its operands on every call, and for ResNet's
//! deep, narrow layers (layer 3 and 4: a few dozen to a few hundred pixels against a
//! 1024–4608 deep weight) that repacking of the weight was ≈ 14 % of a forward pass. Here the
//! weight is stored once, in panels of 16 output channels laid out in the order the loops read
//! them, so a product streams it straight from memory; the bias, the shortcut and the ReLU are
//! applied while the result is still in registers, and the output is written once, without
//! being zero-filled first.
//!
//! The micro-kernel needs AVX2 and FMA, detected at run time; without them (other CPUs,
//! other architectures) [`PackedMatrix::pack`] declines and the caller uses `gemm`.
//!
//! In [`Format::Bf16`] the weights are stored as bfloat16, two depth steps per cache line,
//! the left operand is bfloat16 (read in place, or an f32 one rounded to pairs a row block at
//! a time), the output f32 or bfloat16 (rounded once, in the epilogue), and the products are
//! summed in f32: what AVX512_BF16's `vdpbf16ps` computes, 32 multiply-adds an instruction
//! (twice AVX2's f32 rate, half the weight bytes). [`Bf16Kernel::Emulated`] computes the same
//! sums with ordinary f32 arithmetic on any CPU, to test and measure the numerics where no
//! CPU has the instruction.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;

use super::activation::{Activation, Lhs};
use super::parallel;
use super::scratch;

/// Output channels per panel: two 8-lane AVX vectors.
pub const PANEL: usize = 16;
/// Rows (output pixels) per micro-tile: 6 × 2 accumulators plus 2 weight vectors and one
/// broadcast fill 15 of the 16 vector registers.
pub const TILE_ROWS: usize = 6;
/// Depth per block (steps: bfloat16 pairs count one): ResNet's products up to 1024 deep
/// (2048 in bfloat16) keep each tile's sums in registers from the first depth to the last, so
/// they are stored once, not loaded and stored again per block. Against blocks of 256 × 512
/// columns the pass took 0.95–0.97 × (ResNeXt-50 0.95), the AVX2 kernel's 0.95, bfloat16's
/// 0.985 (docs/performance.md → "Depth blocks").
const DEPTH_BLOCK: usize = 1024;
/// Columns per block: a 1024-deep block of 128 columns' weights (512 KiB) stays in L2 while
/// the row tiles pass.
const COLUMN_BLOCK: usize = 128;
const BLOCK_PANELS: usize = COLUMN_BLOCK / PANEL;
/// Rows per block at most: the partial results of 96 rows × 128 columns (48 KiB) stay in
/// cache between depth blocks.
const ROW_BLOCK: usize = 96;
/// How far ahead (in lines, 32 KiB) the first tile of a row block also fetches its weights
/// into L2. Weights that come from memory (stage 4 and the Winograd products at batch 1: the
/// model does not fit in L3) arrived at 7–8 GB/s with the L1 prefetch alone, against 17.6 that
/// one core streams here; with this the bfloat16 pass took 0.93–0.94 × the time (stage 3–4
/// Winograd layers 0.76–0.88 ×), f32 0.98–1.00 × (docs/performance.md → "Weights from
/// memory").
const FAR_LINES: usize = 512;

/// How a packed matrix stores its weights and multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// f32 weights, f32 products (the AVX2 + FMA micro-kernel).
    #[default]
    F32,
    /// bfloat16 weights and left operand, products summed in f32.
    Bf16(Bf16Kernel),
}

/// What computes a [`Format::Bf16`] product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AVX512_BF16's `vdpbf16ps` (see [`bf16_kernel_available`]).
    Native,
    /// Plain f32 arithmetic on the same bfloat16 values: any CPU, several times slower.
    Emulated,
}

/// What computes a [`Format::F32`] product: chosen when the matrix is packed, by
/// [`F32Kernel::detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F32Kernel {
    /// AVX2 + FMA: tiles of up to 6 rows × 1 panel in 16 ymm registers.
    Avx2,
    /// AVX-512 F: tiles of up to 6 rows × [`AVX512_TILE_PANELS`] panels in 32 zmm
    /// registers, so each left value loaded serves 64 columns instead of 16.
    Avx512,
}

impl F32Kernel {
    /// The fastest kernel this CPU runs: AVX-512 where it has `avx512f` (unless
    /// [`NO_AVX512_ENV`] is set, to measure the AVX2 kernel on the same machine), else AVX2
    /// + FMA; `None` without those (or with [`PORTABLE_ENV`]).
    pub fn detect() -> Option<Self> {
        static NO_AVX512: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        if !kernel_available() {
            return None;
        }
        let no_avx512 =
            *NO_AVX512.get_or_init(|| std::env::var_os(NO_AVX512_ENV).is_some_and(|v| v != "0"));
        Some(if !no_avx512 && avx512_available() {
            Self::Avx512
        } else {
            Self::Avx2
        })
    }

    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            Self::Avx2 => kernel_available(),
            Self::Avx512 => kernel_available() && avx512_available(),
        }
    }

    /// Rows per micro-tile at most, and panels per micro-tile at most.
    fn tile_shape(self) -> (usize, usize) {
        match self {
            Self::Avx2 => (TILE_ROWS, 1),
            Self::Avx512 => (TILE_ROWS, AVX512_TILE_PANELS),
        }
    }

    /// The name `camview bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }
}

/// Panels per AVX-512 f32 micro-tile: 6 rows × 4 panels = 24 zmm accumulators, 4 for the
/// weight lines, 1 for the broadcast left value, of 32. Measured against 14 × 2, 8 × 3 and
/// 7 × 4 on the product alone (`cargo bench --bench gemm`, docs/performance.md): 6 × 4 was
/// as fast or faster at every layer's shape, and its 6 left rows, unlike 14, never share
/// one L1 set beyond its 8 ways when they lie 4 KiB apart.
const AVX512_TILE_PANELS: usize = 4;

/// Rows per native bfloat16 micro-tile: 14 rows × 2 panels = 28 zmm accumulators, the left
/// rows already copied next to each other as bfloat16 pairs. (Products of at least
/// [`WIDE_TILE_ROWS`] rows take tiles of 6 rows × 4 panels instead.)
const BF16_TILE_ROWS: usize = 14;

/// Rows from which a native bfloat16 product of 4 panels or more takes 6 × 4 tiles.
const WIDE_TILE_ROWS: usize = 1024;

/// Set to keep the AVX2 kernel on a CPU with AVX-512 (to measure both paths on one machine).
/// Read once, when the first weights are packed.
pub const NO_AVX512_ENV: &str = "CAMVIEW_NO_AVX512";

/// A `depth` × `width` matrix stored as panels of [`PANEL`] columns, in the order the product
/// reads them (see [`PackedMatrix::line`]).
#[derive(Debug, Clone)]
pub struct PackedMatrix {
    storage: Storage,
    depth: usize,
    width: usize,
}

#[derive(Debug, Clone)]
enum Storage {
    /// One cache line per depth step of a panel (row k of its 16 columns).
    F32(Vec<Line>, F32Kernel),
    /// One cache line per two depth steps of a panel (see [`PairLine`]).
    Bf16(Vec<PairLine>, Bf16Kernel),
}

/// Depth steps 2k and 2k + 1 of a panel's 16 columns as bfloat16, interleaved by column
/// (column j's two values at 2j and 2j + 1): the operand layout of `vdpbf16ps`.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct PairLine([u16; 2 * PANEL]);

/// `value` rounded to the nearest bfloat16 (ties to even), as its 16 bits.
pub fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

/// The f32 of bfloat16 `bits` (exact).
pub fn from_bf16(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// Sixteen weights aligned to a cache line, so each of the kernel's two vector loads per
/// depth step stays within one line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; PANEL]);

/// What happens to each product value before it is stored: `+ bias[column]`,
/// `+ residual[row][column]`, then ReLU.
#[derive(Clone, Copy)]
pub struct Epilogue<'a, T = f32> {
    pub bias: &'a [f32],
    /// Same shape, row stride and type as the destination.
    pub residual: Option<&'a [T]>,
    pub relu: bool,
}

impl PackedMatrix {
    /// Packs a row-major `depth` × `width` matrix, or `None` where the micro-kernel cannot run:
    /// no AVX2 + FMA on this CPU, or a width that is not whole panels.
    pub fn pack(matrix: &[f32], depth: usize, width: usize) -> Option<Self> {
        assert_eq!(matrix.len(), depth * width, "matrix size");
        Self::from_fn(depth, width, |k, col| matrix[k * width + col])
    }

    /// Packs the `depth` × `width` matrix whose element (k, col) is `at(k, col)`, read in
    /// panel order; `None` as for [`Self::pack`].
    pub fn from_fn(depth: usize, width: usize, at: impl Fn(usize, usize) -> f32) -> Option<Self> {
        Self::from_fn_in(Format::F32, depth, width, at)
    }

    /// [`Self::from_fn`] stored and multiplied in `format`. A native bfloat16 matrix needs
    /// [`bf16_kernel_available`] (else `None`); an emulated one runs anywhere.
    pub fn from_fn_in(
        format: Format,
        depth: usize,
        width: usize,
        at: impl Fn(usize, usize) -> f32,
    ) -> Option<Self> {
        match format {
            Format::F32 => Self::from_fn_unchecked(F32Kernel::detect()?, depth, width, at),
            Format::Bf16(Bf16Kernel::Native) if !bf16_kernel_available() => None,
            Format::Bf16(kernel) => Self::bf16_from_fn(kernel, depth, width, at),
        }
    }

    /// [`Self::from_fn`] for a given f32 kernel (`None` where this CPU cannot run it), to
    /// compare the kernels on one machine.
    pub fn from_fn_with_kernel(
        kernel: F32Kernel,
        depth: usize,
        width: usize,
        at: impl Fn(usize, usize) -> f32,
    ) -> Option<Self> {
        if !kernel.runs_here() {
            return None;
        }
        Self::from_fn_unchecked(kernel, depth, width, at)
    }

    /// The bfloat16 layout: as the f32 one (see [`Self::line`]), in steps of two depths; an
    /// odd depth is padded with a zero row.
    fn bf16_from_fn(
        kernel: Bf16Kernel,
        depth: usize,
        width: usize,
        at: impl Fn(usize, usize) -> f32,
    ) -> Option<Self> {
        if !width.is_multiple_of(PANEL) || depth == 0 {
            return None;
        }
        let (count, steps) = (width / PANEL, depth.div_ceil(2));
        let block = depth_block(steps);
        let value = |k: usize, col: usize| if k < depth { to_bf16(at(k, col)) } else { 0 };
        let mut lines = Vec::with_capacity(steps * count);
        for first in (0..count).step_by(BLOCK_PANELS) {
            for p0 in (0..steps).step_by(block) {
                for panel in first..(first + BLOCK_PANELS).min(count) {
                    for p in p0..(p0 + block).min(steps) {
                        lines.push(PairLine(std::array::from_fn(|i| {
                            value(2 * p + i % 2, panel * PANEL + i / 2)
                        })));
                    }
                }
            }
        }
        Some(Self {
            storage: Storage::Bf16(lines, kernel),
            depth,
            width,
        })
    }

    /// How this matrix stores its weights.
    pub fn format(&self) -> Format {
        match self.storage {
            Storage::F32(..) => Format::F32,
            Storage::Bf16(_, kernel) => Format::Bf16(kernel),
        }
    }

    /// The kernel of an f32 matrix (`None` for bfloat16 storage).
    pub fn f32_kernel(&self) -> Option<F32Kernel> {
        match self.storage {
            Storage::F32(_, kernel) => Some(kernel),
            Storage::Bf16(..) => None,
        }
    }

    /// [`Self::from_fn`] without the CPU check (tests build the layout on any machine).
    fn from_fn_unchecked(
        kernel: F32Kernel,
        depth: usize,
        width: usize,
        at: impl Fn(usize, usize) -> f32,
    ) -> Option<Self> {
        if !width.is_multiple_of(PANEL) || depth == 0 {
            return None;
        }
        // In the order the product reads them (see `line`): one contiguous stream per column
        // block and depth block, which the hardware prefetcher follows from memory.
        let count = width / PANEL;
        let block = depth_block(depth);
        let mut panels = Vec::with_capacity(depth * count);
        for first in (0..count).step_by(BLOCK_PANELS) {
            for k0 in (0..depth).step_by(block) {
                for panel in first..(first + BLOCK_PANELS).min(count) {
                    for k in k0..(k0 + block).min(depth) {
                        panels.push(Line(std::array::from_fn(|j| at(k, panel * PANEL + j))));
                    }
                }
            }
        }
        Some(Self {
            storage: Storage::F32(panels, kernel),
            depth,
            width,
        })
    }

    /// Cache lines per panel: a depth step each in f32, two in bfloat16.
    fn steps(&self) -> usize {
        match self.storage {
            Storage::F32(..) => self.depth,
            Storage::Bf16(..) => self.depth.div_ceil(2),
        }
    }

    /// Where the block of steps starting at step `k0` of panel `panel` begins: column blocks
    /// of [`BLOCK_PANELS`] panels one after the other, in each its depth blocks one after the
    /// other, in each the block's lines of every panel of the column block.
    fn line(&self, panel: usize, k0: usize) -> usize {
        let steps = self.steps();
        let first = panel / BLOCK_PANELS * BLOCK_PANELS;
        let in_block = (self.width / PANEL - first).min(BLOCK_PANELS);
        let kc = depth_block(steps).min(steps - k0);
        first * steps + k0 * in_block + (panel - first) * kc
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn width(&self) -> usize {
        self.width
    }

    /// `dst` (rows × width, row-major) = epilogue(`lhs` · self), where `lhs` is rows × depth
    /// with rows `lhs_stride` apart, and the panels are split into `column_bands` ranges
    /// computed in parallel.
    pub fn multiply(
        &self,
        lhs: &[f32],
        lhs_stride: usize,
        dst: &mut [f32],
        epilogue: Epilogue<'_>,
        column_bands: usize,
    ) {
        // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the product stores only
        // initialised values, so `dst` stays initialised.
        let dst = unsafe { &mut *(std::ptr::from_mut(dst) as *mut [MaybeUninit<f32>]) };
        self.multiply_into(lhs, lhs_stride, dst, epilogue, column_bands);
    }

    /// [`Self::multiply`] into memory that may be uninitialised: every element of `dst` is
    /// written (the first depth block stores, later ones accumulate), none is read first.
    /// This spares each layer's output a zero-fill.
    pub fn multiply_into(
        &self,
        lhs: &[f32],
        lhs_stride: usize,
        dst: &mut [MaybeUninit<f32>],
        epilogue: Epilogue<'_>,
        column_bands: usize,
    ) {
        self.product(Lhs::F32(lhs), lhs_stride, dst, epilogue, column_bands);
    }

    /// [`Self::multiply_into`] for either kind of left operand and destination: a bfloat16
    /// matrix takes bfloat16 activations as they are (rows of pairs, no rounding pass) and
    /// stores bfloat16 outputs (the sums rounded once, after the epilogue); an f32 matrix
    /// takes and makes f32 only. With an odd depth, the value after each bfloat16 row's last
    /// (up to `lhs_stride`) must be finite: it meets a zero weight.
    pub fn product<T: Activation>(
        &self,
        lhs: Lhs<'_>,
        lhs_stride: usize,
        dst: &mut [MaybeUninit<T>],
        epilogue: Epilogue<'_, T>,
        column_bands: usize,
    ) {
        let rows = dst.len() / self.width;
        assert_eq!(
            dst.len(),
            rows * self.width,
            "destination is not whole rows"
        );
        if rows == 0 {
            return;
        }
        assert!(
            lhs_stride >= self.depth && lhs.len() >= (rows - 1) * lhs_stride + self.depth,
            "left operand size"
        );
        assert_eq!(epilogue.bias.len(), self.width, "bias size");
        if let Some(r) = epilogue.residual {
            assert_eq!(r.len(), dst.len(), "residual size");
        }
        match self.storage {
            Storage::F32(_, kernel) => {
                assert!(kernel.runs_here(), "{kernel:?} is required");
                assert!(
                    matches!(lhs, Lhs::F32(_)) && !T::BF16,
                    "an f32 matrix multiplies f32 activations"
                );
            }
            Storage::Bf16(_, Bf16Kernel::Native) => {
                assert!(bf16_kernel_available(), "AVX512_BF16 is required")
            }
            Storage::Bf16(_, Bf16Kernel::Emulated) => {}
        }
        let panels = self.width / PANEL;
        let per_band = panels.div_ceil(column_bands.clamp(1, panels));
        let dst = SharedMut(dst.as_mut_ptr().cast::<f32>());
        let band = |first: usize| {
            let range = first..(first + per_band).min(panels);
            let raw = RawEpilogue {
                bias: epilogue.bias,
                residual: epilogue.residual.map(|r| r.as_ptr().cast::<f32>()),
                relu: epilogue.relu,
            };
            // SAFETY: the kernel's CPU features were checked above; the asserts above make
            // `lhs`, `dst`, `bias` and `residual` exactly the sizes the products index; bands
            // cover disjoint panel (column) ranges, so no two write the same element of
            // `dst`, whose exclusive borrow outlives the blocking loop below. `dst` and the
            // residual hold `T`, f32 or bfloat16 as `T::BF16` says.
            unsafe {
                match (&self.storage, lhs) {
                    (Storage::F32(lines, kernel), Lhs::F32(lhs)) => self.blocked_product(
                        lines,
                        *kernel,
                        lhs,
                        lhs_stride,
                        rows,
                        dst.get(),
                        range,
                        raw,
                    ),
                    (Storage::F32(..), Lhs::Bf16(_)) => unreachable!("asserted above"),
                    (Storage::Bf16(lines, kernel), lhs) => self.blocked_bf16_product(
                        lines,
                        *kernel,
                        lhs,
                        lhs_stride,
                        rows,
                        Out::new::<T>(dst.get()),
                        range,
                        raw,
                    ),
                }
            }
        };
        if per_band < panels {
            parallel::for_each(panels.div_ceil(per_band), |i| band(i * per_band));
        } else {
            band(0);
        }
    }

    /// The cache-blocked loops around the micro-kernel for panels `panels`.
    ///
    /// # Safety
    /// `kernel` runs on this CPU; `lhs` is rows × depth (rows `lhs_stride` apart); `dst`
    /// points to rows × width writable values that nothing else touches in these panels'
    /// columns; `epilogue`'s slices match (`bias`: width, `residual`: rows × width).
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked_product(
        &self,
        lines: &[Line],
        kernel: F32Kernel,
        lhs: &[f32],
        lhs_stride: usize,
        rows: usize,
        dst: *mut f32,
        panels: std::ops::Range<usize>,
        epilogue: RawEpilogue<'_>,
    ) {
        let (depth, width) = (self.depth, self.width);
        let block = depth_block(depth);
        let (tile_rows, tile_panels) = kernel.tile_shape();
        // Even row blocks in whole tiles: 102 rows are two blocks of 54 and 48, never 96 + 6,
        // which would stream all the weights again for a single tile.
        let row_block = rows
            .div_ceil(rows.div_ceil(ROW_BLOCK))
            .next_multiple_of(tile_rows);
        for col_panels in aligned_chunks(panels, BLOCK_PANELS) {
            for row0 in (0..rows).step_by(row_block) {
                let row_end = (row0 + row_block).min(rows);
                for k0 in (0..depth).step_by(block) {
                    let kc = block.min(depth - k0);
                    let (first, last) = (k0 == 0, k0 + kc == depth);
                    for (row, count) in row_tiles(row0..row_end, tile_rows) {
                        let lhs = lhs[row * lhs_stride + k0..].as_ptr();
                        let mut panel = col_panels.start;
                        while panel < col_panels.end {
                            let count_p = tile_panels.min(col_panels.end - panel);
                            let col = panel * PANEL;
                            let finish = last.then(|| Finish {
                                bias: epilogue.bias[col..].as_ptr(),
                                // SAFETY (of the add): row < rows and col < width.
                                residual: epilogue
                                    .residual
                                    .map(|r| unsafe { r.add(row * width + col) }),
                                relu: epilogue.relu,
                                out_bf16: None,
                            });
                            let weights = |panel: usize| -> *const f32 {
                                lines[self.line(panel, k0)..].as_ptr().cast()
                            };
                            let tile = Tile {
                                lhs,
                                lhs_stride,
                                weights: std::array::from_fn(|p| {
                                    weights(panel + p.min(count_p - 1))
                                }),
                                depth: kc,
                                // SAFETY (of the add): row < rows and col < width.
                                dst: unsafe { dst.add(row * width + col) },
                                dst_stride: width,
                                accumulate: !first,
                                far_until: match row == row0 {
                                    true => far_until(
                                        lines.len(),
                                        self.line(panel + count_p - 1, k0),
                                        kc,
                                    ),
                                    false => 0,
                                },
                                finish,
                            };
                            // SAFETY: the tile's rows, depth and 16 or 32 columns lie inside
                            // `lhs`, these panels and `dst` (the caller's size asserts); the
                            // caller checked that the CPU runs `kernel`.
                            unsafe { f32_tile(kernel, tile, count, count_p) };
                            panel += count_p;
                        }
                    }
                }
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked_product(
        &self,
        _: &[Line],
        _: F32Kernel,
        _: &[f32],
        _: usize,
        _: usize,
        _: *mut f32,
        _: std::ops::Range<usize>,
        _: RawEpilogue<'_>,
    ) {
        unreachable!("packing declines on this architecture")
    }

    /// [`Self::blocked_product`] for bfloat16 storage: the same blocking, in steps of two
    /// depths, and tiles of two panels (28 accumulators for 14 rows natively). An f32 left
    /// operand is rounded to bfloat16 pairs a row block at a time, once for all the panels it
    /// meets; a bfloat16 one is read where it lies (pairs are neighbours in memory). A
    /// bfloat16 destination gets the sums rounded once: a product deeper than one depth block
    /// keeps its partial sums in f32 until the last.
    ///
    /// # Safety
    /// As [`Self::blocked_product`], with AVX512_BF16 available for the native kernel, and
    /// `dst` and the epilogue's residual of the type `dst` names.
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked_bf16_product(
        &self,
        lines: &[PairLine],
        kernel: Bf16Kernel,
        lhs: Lhs<'_>,
        lhs_stride: usize,
        rows: usize,
        dst: Out,
        panels: std::ops::Range<usize>,
        epilogue: RawEpilogue<'_>,
    ) {
        let (depth, width, steps) = (self.depth, self.width, self.steps());
        let block = depth_block(steps);
        // Many rows of a narrow product (stage 1 and the stem: 1568 a thread at 224²) go in
        // tiles of 6 rows × 4 panels, which read each left row once for 64 columns: stage 1's
        // 1 × 1 layers took 0.80–0.95 × the time. Few rows keep 14 × 2, which reads each
        // weight line once for 14 rows (6 × 4 took stage 4 1.03–1.06 ×, and Winograd's
        // products 0.93–1.09 ×; `bench --layers`, 5 alternations).
        let wide = kernel == Bf16Kernel::Native && panels.len() >= 4 && rows >= WIDE_TILE_ROWS;
        let tile_rows = match kernel {
            Bf16Kernel::Native if wide => TILE_ROWS,
            Bf16Kernel::Native => BF16_TILE_ROWS,
            Bf16Kernel::Emulated => TILE_ROWS,
        };
        let row_block = rows
            .div_ceil(rows.div_ceil(ROW_BLOCK))
            .next_multiple_of(tile_rows);
        // bfloat16 rows are read in place when they are whole pairs, unless they lie a
        // multiple of 4 KiB apart (a 2048-deep input): a tile's 14 rows would then share one
        // L1 set, beyond its 8 ways.
        let in_place = match lhs {
            Lhs::Bf16(bits) => (lhs_stride.is_multiple_of(2)
                && !(lhs_stride * 2).is_multiple_of(4096))
            .then(|| bits.as_ptr().cast::<u32>()),
            Lhs::F32(_) => None,
        };
        // Otherwise a row block's left rows as bfloat16 pairs, made once for every column
        // block and depth block they meet (rounded per micro-tile, wide layers rounded the
        // same rows up to four times: 5 % of a bf16 pass). Rows are 64 bytes longer than
        // their pairs, so rows 4 KiB apart do not share one L1 set.
        let stride = steps + 16;
        let mut pairs = match in_place {
            Some(_) => Vec::new(),
            None => vec![0u32; row_block.min(rows) * stride],
        };
        // A bfloat16 destination's partial sums, between depth blocks: these panels' columns
        // of a row block.
        let span = panels.len() * PANEL;
        let mut partial = match dst {
            Out::Bf16(_) if steps > block => Some(scratch::take(row_block.min(rows) * span)),
            _ => None,
        };
        for row0 in (0..rows).step_by(row_block) {
            let row_end = (row0 + row_block).min(rows);
            let (left, left_stride) = match in_place {
                // SAFETY (of the add): row0 < rows, inside the operand.
                Some(bits) => (unsafe { bits.add(row0 * lhs_stride / 2) }, lhs_stride / 2),
                None => {
                    for (r, to) in pairs
                        .chunks_exact_mut(stride)
                        .take(row_end - row0)
                        .enumerate()
                    {
                        let at = (row0 + r) * lhs_stride;
                        match lhs {
                            // SAFETY: the native kernel's features were checked by the caller.
                            Lhs::F32(values) => unsafe {
                                round_to_pairs(kernel, &values[at..][..depth], &mut to[..steps])
                            },
                            Lhs::Bf16(bits) => copy_pairs(&bits[at..][..depth], &mut to[..steps]),
                        }
                    }
                    (pairs.as_ptr(), stride)
                }
            };
            for col_panels in aligned_chunks(panels.clone(), BLOCK_PANELS) {
                for k0 in (0..steps).step_by(block) {
                    let kc = block.min(steps - k0);
                    let (first, last) = (k0 == 0, k0 + kc == steps);
                    for (row, count) in row_tiles(row0..row_end, tile_rows) {
                        // SAFETY (of the add): row − row0 < the block's rows, k0 < steps.
                        let lhs = unsafe { left.add((row - row0) * left_stride + k0) };
                        let mut panel = col_panels.start;
                        while panel < col_panels.end {
                            let count_p = if wide && panel + 4 <= col_panels.end {
                                4
                            } else if panel + 1 < col_panels.end {
                                2
                            } else {
                                1
                            };
                            let col = panel * PANEL;
                            let at = row * width + col;
                            // SAFETY (of the adds): row < rows and col < width; the partial
                            // buffer covers these panels' columns of the row block.
                            let (sums, sums_stride, out_bf16) = unsafe {
                                match (dst, &mut partial) {
                                    (Out::F32(dst), _) => (dst.add(at), width, None),
                                    (Out::Bf16(dst), Some(partial)) => (
                                        partial
                                            .as_mut_ptr()
                                            .add((row - row0) * span + col - panels.start * PANEL),
                                        span,
                                        Some(dst.add(at)),
                                    ),
                                    (Out::Bf16(dst), None) => {
                                        (std::ptr::null_mut(), width, Some(dst.add(at)))
                                    }
                                }
                            };
                            let finish = last.then(|| Finish {
                                bias: epilogue.bias[col..].as_ptr(),
                                // SAFETY (of the adds): as above, in the residual's type.
                                residual: epilogue.residual.map(|r| unsafe {
                                    match dst {
                                        Out::F32(_) => r.add(at),
                                        Out::Bf16(_) => r.cast::<u16>().add(at).cast(),
                                    }
                                }),
                                relu: epilogue.relu,
                                out_bf16: out_bf16.map(|out| (out, width)),
                            });
                            let weights = |panel: usize| -> *const u16 {
                                lines[self.line(panel, k0)..].as_ptr().cast()
                            };
                            let tile = PairTile {
                                lhs,
                                lhs_stride: left_stride,
                                weights: std::array::from_fn(|p| {
                                    weights(panel + p.min(count_p - 1))
                                }),
                                steps: kc,
                                dst: sums,
                                dst_stride: sums_stride,
                                accumulate: !first,
                                far_until: match row == row0 {
                                    true => far_until(
                                        lines.len(),
                                        self.line(panel + count_p - 1, k0),
                                        kc,
                                    ),
                                    false => 0,
                                },
                                finish,
                            };
                            // SAFETY: the tile's rows, steps and 16 or 32 columns lie inside
                            // the left rows, these panels and `dst` or the partial sums (the
                            // caller's size asserts); f32 sums are stored to `sums` unless
                            // `finish` names a bfloat16 destination.
                            unsafe { bf16_tile(kernel, tile, count, count_p) };
                            panel += count_p;
                        }
                    }
                }
            }
        }
    }
}

/// bfloat16 values paired as [`round_to_pairs`] pairs them: a copy of the bytes (in memory
/// order they are the pairs, low half first), an odd length's last pair ending in zero.
fn copy_pairs(src: &[u16], out: &mut [u32]) {
    debug_assert_eq!(out.len(), src.len().div_ceil(2));
    let (whole, rest) = src.split_at(src.len() / 2 * 2);
    for (pair, values) in out.iter_mut().zip(whole.chunks_exact(2)) {
        *pair = u32::from(values[0]) | u32::from(values[1]) << 16;
    }
    if let Some(&last) = rest.first() {
        out[whole.len() / 2] = u32::from(last);
    }
}

/// A product's epilogue with its residual as a raw pointer to the destination's type.
#[derive(Clone, Copy)]
struct RawEpilogue<'a> {
    bias: &'a [f32],
    /// f32 or bfloat16, as the destination.
    residual: Option<*const f32>,
    relu: bool,
}

/// Where a product stores: f32 values or bfloat16 bits.
#[derive(Clone, Copy)]
enum Out {
    F32(*mut f32),
    Bf16(*mut u16),
}

impl Out {
    fn new<T: Activation>(dst: *mut f32) -> Self {
        if T::BF16 {
            Self::Bf16(dst.cast())
        } else {
            Self::F32(dst)
        }
    }
}

/// Calls the micro-kernel `kernel::tile::<R, P>(tile)` for the tile's `rows` and `panels`
/// (R and P, each one of the literals listed): the kernels are unrolled for each shape.
macro_rules! dispatch_tile {
    ($kernel:ident; $tile:expr, $rows:expr, $panels:expr; [$($p:literal)+]; $rs:tt) => {
        match $panels {
            $(p if p == $p => dispatch_tile!(@rows $kernel, $p; $tile, $rows; $rs),)+
            p => unreachable!("a tile of {p} panels"),
        }
    };
    (@rows $kernel:ident, $p:literal; $tile:expr, $rows:expr; [$($r:literal)+]) => {
        match $rows {
            $(r if r == $r => $kernel::tile::<$r, $p>($tile),)+
            r => unreachable!("a tile of {r} rows"),
        }
    };
}

/// Runs one f32 micro-tile of `rows` rows and `panels` panels (1 with AVX2, up to 4 with
/// AVX-512).
///
/// # Safety
/// As [`avx2::tile`] or [`avx512::tile`], for the CPU features of `kernel`.
#[cfg(target_arch = "x86_64")]
unsafe fn f32_tile(kernel: F32Kernel, tile: Tile, rows: usize, panels: usize) {
    // SAFETY: passed on from the caller.
    unsafe {
        match kernel {
            F32Kernel::Avx2 => match rows {
                6 => avx2::tile::<6>(tile),
                5 => avx2::tile::<5>(tile),
                4 => avx2::tile::<4>(tile),
                3 => avx2::tile::<3>(tile),
                2 => avx2::tile::<2>(tile),
                _ => avx2::tile::<1>(tile),
            },
            F32Kernel::Avx512 => {
                dispatch_tile!(avx512; tile, rows, panels; [4 3 2 1]; [6 5 4 3 2 1])
            }
        }
    }
}

/// `src` rounded to bfloat16 and paired, `out[p]` = (src[2p], src[2p + 1]) with the first
/// in the low half; an odd length's last pair has a zero high half. The native form
/// converts 32 values an instruction (`vcvtne2ps2bf16`): done one value at a time, the
/// rounding took a fifth of a bfloat16 pass.
///
/// # Safety
/// AVX512_BF16 is available if `kernel` is native; `out.len()` is `src.len()` / 2 rounded up.
unsafe fn round_to_pairs(kernel: Bf16Kernel, src: &[f32], out: &mut [u32]) {
    debug_assert_eq!(out.len(), src.len().div_ceil(2));
    match kernel {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: passed on from the caller.
        Bf16Kernel::Native => unsafe { bf16_native::round_to_pairs(src, out) },
        _ => {
            for (pair, values) in out.iter_mut().zip(src.chunks(2)) {
                let high = values.get(1).map_or(0, |&v| to_bf16(v));
                *pair = u32::from(to_bf16(values[0])) | u32::from(high) << 16;
            }
        }
    }
}

/// `src` rounded to bfloat16 (to nearest even) into `dst`, 16 values an instruction
/// (`vcvtneps2bf16`) where the CPU has AVX512_BF16: the bfloat16 activations' store outside
/// the micro-kernel (Winograd's output transform, the input's layout change).
pub fn round_to_bf16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "as many values as room for them");
    #[cfg(target_arch = "x86_64")]
    if bf16_kernel_available() {
        // SAFETY: the CPU has AVX512F and AVX512_BF16; the lengths are equal.
        return unsafe { bf16_native::round_into(src, dst) };
    }
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = to_bf16(s));
}

/// Runs one bfloat16 micro-tile of `rows` rows and one or (`two`) two panels.
///
/// # Safety
/// As [`bf16_native::tile`] (for the native kernel) and [`bf16_emulated::tile`].
unsafe fn bf16_tile(kernel: Bf16Kernel, tile: PairTile, rows: usize, panels: usize) {
    // SAFETY: passed on from the caller.
    unsafe {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Native => {
                if panels == 4 {
                    dispatch_tile!(bf16_native; tile, rows, 4; [4]; [6 5 4 3 2 1])
                } else {
                    dispatch_tile!(bf16_native; tile, rows, panels; [2 1]; [14 13 12 11 10 9 8 7 6 5 4 3 2 1])
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Native => unreachable!("packing declines on this architecture"),
            Bf16Kernel::Emulated => {
                dispatch_tile!(bf16_emulated; tile, rows, panels; [2 1]; [6 5 4 3 2 1])
            }
        }
    }
}

/// One bfloat16 micro-tile: up to [`BF16_TILE_ROWS`] rows (native; [`TILE_ROWS`]
/// emulated) × 16 or 32 columns over one block of steps (pairs of depths).
struct PairTile {
    /// Rows of `steps` pairs (low half: the even depth), `lhs_stride` pairs apart.
    lhs: *const u32,
    lhs_stride: usize,
    /// Each panel's lines for these steps (`steps` × 32 values); the second is only read
    /// for a two-panel tile.
    weights: [*const u16; 4],
    steps: usize,
    dst: *mut f32,
    dst_stride: usize,
    accumulate: bool,
    /// As [`Tile::far_until`].
    far_until: usize,
    finish: Option<Finish>,
}

mod bf16_emulated {
    use super::{PANEL, PairTile, from_bf16, to_bf16};

    /// The bfloat16 product in plain f32 arithmetic: each product is exact (8-bit significands),
    /// each sum rounds, as in `vdpbf16ps` (which adds a pair's two products before the
    /// accumulator; the order differs by one rounding per pair).
    ///
    /// # Safety
    /// `t.lhs` has R rows of `t.steps` pairs; each of the P panels' weights `t.steps` × 32
    /// values; `t.dst` (and the residual) R rows of 16·P (row stride `t.dst_stride`); the bias
    /// 16·P.
    pub unsafe fn tile<const R: usize, const P: usize>(t: PairTile) {
        let cols = PANEL * P;
        let mut acc = [[0f32; 2 * PANEL]; R];
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            if t.accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let row = t.dst.add(r * t.dst_stride);
                    for (j, v) in acc[..cols].iter_mut().enumerate() {
                        *v = *row.add(j);
                    }
                }
            }
            for k in 0..t.steps {
                let mut w = [0f32; 2 * 2 * PANEL];
                for p in 0..P {
                    let line = t.weights[p].add(k * 2 * PANEL);
                    for (i, w) in w[p * 2 * PANEL..][..2 * PANEL].iter_mut().enumerate() {
                        *w = from_bf16(*line.add(i));
                    }
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Rows read in place are bfloat16 data, aligned to 2 bytes only.
                    let pair = t.lhs.add(r * t.lhs_stride + k).read_unaligned();
                    let (a0, a1) = (from_bf16(pair as u16), from_bf16((pair >> 16) as u16));
                    for (j, v) in acc[..cols].iter_mut().enumerate() {
                        *v = *v + a0 * w[2 * j] + a1 * w[2 * j + 1];
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (j, &v) in acc[..cols].iter().enumerate() {
                    let mut v = v;
                    let Some(f) = &t.finish else {
                        *t.dst.add(r * t.dst_stride + j) = v;
                        continue;
                    };
                    v += *f.bias.add(j);
                    match (f.residual, f.out_bf16) {
                        (Some(res), None) => v += *res.add(r * t.dst_stride + j),
                        (Some(res), Some((_, stride))) => {
                            v += from_bf16(*res.cast::<u16>().add(r * stride + j))
                        }
                        (None, _) => {}
                    }
                    if f.relu {
                        v = v.max(0.0);
                    }
                    match f.out_bf16 {
                        Some((out, stride)) => *out.add(r * stride + j) = to_bf16(v),
                        None => *t.dst.add(r * t.dst_stride + j) = v,
                    }
                }
            }
        }
    }
}

/// `range` cut at the multiples of `size`.
fn aligned_chunks(
    range: std::ops::Range<usize>,
    size: usize,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = range.start;
    std::iter::from_fn(move || {
        (start < range.end).then(|| {
            let end = ((start / size + 1) * size).min(range.end);
            std::mem::replace(&mut start, end)..end
        })
    })
}

/// `rows` cut into micro-tiles of at most `max` rows, `(first row, count)`: as few tiles as
/// whole tiles of `max` would take, with the rows spread evenly over them. For the AVX2
/// kernel (`max` 6) a tile of 4–6 rows keeps both FMA pipes busy (8–12 independent
/// accumulators cover the FMA latency), one of 1–3 rows costs as long as one of 4: 49 rows as
/// 6·8 + 1 take 52 row-times, as 6·4 + 5·5 they take 49 (layer 4 at 224²).
fn row_tiles(rows: std::ops::Range<usize>, max: usize) -> impl Iterator<Item = (usize, usize)> {
    let tiles = rows.len().div_ceil(max);
    let (base, longer) = (rows.len() / tiles.max(1), rows.len() % tiles.max(1));
    (0..tiles).scan(rows.start, move |row, i| {
        let count = base + usize::from(i < longer);
        let first = std::mem::replace(row, *row + count);
        Some((first, count))
    })
}

/// The depth of the blocks a `depth`-deep product is cut into: even blocks of at most
/// [`DEPTH_BLOCK`] (2304 → 3 × 768, not 1024 + 1024 + 256).
/// How many of a tile's `steps` can fetch [`FAR_LINES`] ahead and stay inside the matrix's
/// `lines`, its last panel's block starting at line `last_panel`.
fn far_until(lines: usize, last_panel: usize, steps: usize) -> usize {
    lines.saturating_sub(last_panel + FAR_LINES).min(steps)
}

fn depth_block(depth: usize) -> usize {
    depth.div_ceil(depth.div_ceil(DEPTH_BLOCK))
}

/// Set to take the portable path on any CPU (to time and test it where the micro-kernel
/// runs). Read once, when the first weights are packed.
pub const PORTABLE_ENV: &str = "CAMVIEW_PORTABLE";

/// Whether this CPU has AVX-512 F for the f32 kernel of [`F32Kernel::Avx512`].
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU has AVX512_BF16 (and AVX-512 F) for the native bfloat16 kernel.
pub fn bf16_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the native bfloat16 kernel gives what the emulated one gives on a small product
/// with every tile shape and epilogue (within f32 summation-order noise). No machine of this
/// project has had AVX512_BF16 yet, so the kernel proves itself on each CPU before a
/// network uses it; `false` also where it cannot run.
pub fn bf16_native_agrees_with_emulation() -> bool {
    if !bf16_kernel_available() {
        return false;
    }
    let (rows, depth, width) = (23, 301, 3 * PANEL);
    // Fixed pseudo-random values in [-1, 1): a product of plain noise.
    let value = |i: usize| ((i.wrapping_mul(2_654_435_761) % 2000) as f32 / 1000.0) - 1.0;
    let lhs: Vec<f32> = (0..rows * depth).map(value).collect();
    let bias: Vec<f32> = (0..width).map(|i| value(i + 7)).collect();
    let residual: Vec<f32> = (0..rows * width).map(|i| value(i + 11)).collect();
    let at = |k: usize, c: usize| value(k * width + c + 13);
    let product = |kernel| {
        let matrix = PackedMatrix::from_fn_in(Format::Bf16(kernel), depth, width, at)?;
        let mut dst = vec![0f32; rows * width];
        let epilogue = Epilogue {
            bias: &bias,
            residual: Some(&residual),
            relu: true,
        };
        matrix.multiply(&lhs, depth, &mut dst, epilogue, 2);
        Some(dst)
    };
    match (product(Bf16Kernel::Native), product(Bf16Kernel::Emulated)) {
        (Some(native), Some(emulated)) => native
            .iter()
            .zip(&emulated)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())),
        _ => false,
    }
}

/// Whether this CPU runs the micro-kernel (the CPU check is cached by std), and
/// [`PORTABLE_ENV`] does not say otherwise.
pub fn kernel_available() -> bool {
    static PORTABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *PORTABLE.get_or_init(|| std::env::var_os(PORTABLE_ENV).is_some_and(|v| v != "0")) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One micro-tile: up to [`TILE_ROWS`] rows × 16 columns (AVX2) or up to 64 (AVX-512) of
/// the product over one depth block.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tile {
    lhs: *const f32,
    lhs_stride: usize,
    /// Each panel's depth × 16 weights, contiguous; a tile of P panels reads the first P.
    weights: [*const f32; 4],
    depth: usize,
    dst: *mut f32,
    dst_stride: usize,
    /// Add to what `dst` holds (a later depth block) instead of overwriting it.
    accumulate: bool,
    /// For its first `far_until` steps the kernel also fetches the weights [`FAR_LINES`]
    /// ahead into L2: the first tile of a row block, whose weights may have to come from
    /// memory, as far as the matrix goes (0 for the others).
    far_until: usize,
    /// On the last depth block: the epilogue, pointing at this tile's columns / first row.
    finish: Option<Finish>,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Finish {
    bias: *const f32,
    /// f32, or bfloat16 bits where `out_bf16` is set.
    residual: Option<*const f32>,
    relu: bool,
    /// Store the finished values here as bfloat16 (row stride), not as f32 to the tile's
    /// `dst` (bfloat16 tiles only).
    out_bf16: Option<(*mut u16, usize)>,
}

/// A destination shared by parallel column bands, which write disjoint elements (here and
/// in the `gemm` crate's bands in `fastconv`).
#[derive(Clone, Copy)]
pub(super) struct SharedMut(pub(super) *mut f32);

impl SharedMut {
    /// Through a method, so closures capture the whole `Sync` wrapper, not the raw field.
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: only used for column bands that write disjoint elements.
unsafe impl Send for SharedMut {}
// SAFETY: as above; never dereferenced outside those disjoint writes.
unsafe impl Sync for SharedMut {}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Tile;

    /// How many depth steps ahead of the one being multiplied the weights are fetched into
    /// L1. A depth step's 16 weights are one 64-byte line (`Line`), so this is 2 KiB ahead,
    /// about 200 cycles of the kernel (16, 32 and 64 steps measured alike).
    const PREFETCH_STEPS: usize = 32;

    /// `R` rows × 16 columns: dst (=|+=) lhs · weights, then the epilogue if this is the last
    /// depth block. All 2·R accumulators live in registers for the whole depth block.
    ///
    /// # Safety
    /// AVX2 and FMA are available; `t.lhs` has R rows of `t.depth` readable values (row stride
    /// `t.lhs_stride`); `t.weights` has `t.depth` × 16; `t.dst` (and the residual) R rows of 16
    /// (row stride `t.dst_stride`); the bias 16.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const R: usize>(t: Tile) {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            if t.accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    let row = t.dst.add(r * t.dst_stride);
                    *acc = [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))];
                }
            }
            for k in 0..t.depth {
                let w = t.weights[0].add(k * 16);
                // The weights are one stream of cache lines, one per depth step; the hardware
                // prefetcher alone left the kernel waiting on L2 (with this, the pass took
                // 0.94–0.95 × the time in paired in-process runs, 0.91–0.94 × binary against
                // binary). A prefetch never faults, so reading past the panel's end is harmless.
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH_STEPS * 16).cast());
                if k < t.far_until {
                    _mm_prefetch::<_MM_HINT_T1>(w.wrapping_add(super::FAR_LINES * 16).cast());
                }
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm256_broadcast_ss(&*t.lhs.add(r * t.lhs_stride + k));
                    acc[0] = _mm256_fmadd_ps(a, w0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a, w1, acc[1]);
                }
            }
            if let Some(f) = &t.finish {
                let bias = [_mm256_loadu_ps(f.bias), _mm256_loadu_ps(f.bias.add(8))];
                let zero = _mm256_setzero_ps();
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (h, v) in acc.iter_mut().enumerate() {
                        *v = _mm256_add_ps(*v, bias[h]);
                        if let Some(res) = f.residual {
                            let res = _mm256_loadu_ps(res.add(r * t.dst_stride + 8 * h));
                            *v = _mm256_add_ps(*v, res);
                        }
                        if f.relu {
                            *v = _mm256_max_ps(*v, zero);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                let row = t.dst.add(r * t.dst_stride);
                _mm256_storeu_ps(row, acc[0]);
                _mm256_storeu_ps(row.add(8), acc[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Finish, PANEL, Tile};

    /// The end of an AVX-512 tile (f32 or bfloat16): the epilogue, if this is the last depth
    /// block, then R rows of 16·P values stored at `dst`.
    ///
    /// # Safety
    /// AVX-512 F is available; `dst` (and the residual) have R rows of 16·P (row stride
    /// `dst_stride`); the bias 16·P.
    /// Asks for the lines the epilogue will read (the shortcut) and write, a whole k-loop
    /// before it runs: the previous layer wrote them, and they have left L1 and L2 since.
    ///
    /// # Safety
    /// As [`store`]'s.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn prefetch_epilogue<const R: usize, const P: usize>(
        finish: Option<&Finish>,
        dst: *mut f32,
        dst_stride: usize,
    ) {
        let Some(f) = finish else { return };
        for r in 0..R {
            for p in 0..P {
                let at = r * dst_stride + p * PANEL;
                if let Some(res) = f.residual {
                    _mm_prefetch::<_MM_HINT_T0>(res.wrapping_add(at).cast());
                }
                _mm_prefetch::<_MM_HINT_ET0>(dst.wrapping_add(at).cast());
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    pub unsafe fn store<const R: usize, const P: usize>(
        mut acc: [[__m512; P]; R],
        finish: Option<&Finish>,
        dst: *mut f32,
        dst_stride: usize,
    ) {
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            if let Some(f) = finish {
                let zero = _mm512_setzero_ps();
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (p, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_add_ps(*v, _mm512_loadu_ps(f.bias.add(p * PANEL)));
                        if let Some(res) = f.residual {
                            let res = _mm512_loadu_ps(res.add(r * dst_stride + p * PANEL));
                            *v = _mm512_add_ps(*v, res);
                        }
                        if f.relu {
                            *v = _mm512_max_ps(*v, zero);
                        }
                    }
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                for (p, v) in acc.iter().enumerate() {
                    _mm512_storeu_ps(dst.add(r * dst_stride + p * PANEL), *v);
                }
            }
        }
    }

    /// Weight lines fetched ahead, as in the AVX2 kernel.
    const PREFETCH_STEPS: usize = 32;

    /// `R` rows × `P` panels: dst (=|+=) lhs · weights, then the epilogue if this is the last
    /// depth block. A panel's 16 columns are one zmm register and one cache line, so each
    /// depth step loads P lines and broadcasts R left values into R·P accumulators.
    ///
    /// # Safety
    /// AVX-512 F is available; `t.lhs` has R rows of `t.depth` readable values (row stride
    /// `t.lhs_stride`); each of the P panels' weights `t.depth` × 16, 64-byte aligned;
    /// `t.dst` (and the residual) R rows of 16·P (row stride `t.dst_stride`); the bias 16·P.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile<const R: usize, const P: usize>(t: Tile) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            prefetch_epilogue::<R, P>(t.finish.as_ref(), t.dst, t.dst_stride);
            if t.accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (p, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(t.dst.add(r * t.dst_stride + p * PANEL));
                    }
                }
            }
            for k in 0..t.depth {
                // A loop, not `array::from_fn`: a closure would not inherit the target
                // features, and its intrinsics would become calls.
                let mut w = [_mm512_setzero_ps(); P];
                for (p, w) in w.iter_mut().enumerate() {
                    let line = t.weights[p].add(k * PANEL);
                    _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(PREFETCH_STEPS * PANEL).cast());
                    if k < t.far_until {
                        _mm_prefetch::<_MM_HINT_T1>(
                            line.wrapping_add(super::FAR_LINES * PANEL).cast(),
                        );
                    }
                    *w = _mm512_load_ps(line);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let a = _mm512_set1_ps(*t.lhs.add(r * t.lhs_stride + k));
                    for (p, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_fmadd_ps(a, w[p], *v);
                    }
                }
            }
            store(acc, t.finish.as_ref(), t.dst, t.dst_stride);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod bf16_native {
    use std::arch::x86_64::*;

    use super::{Finish, PANEL, PairTile};

    /// [`super::round_to_pairs`] 32 values at a time; bfloat16 values in memory order are
    /// the pairs, low half first. (`vcvtne2ps2bf16` rounds to nearest even, as
    /// [`super::to_bf16`] does, but flushes subnormals to zero.)
    ///
    /// # Safety
    /// AVX512F and AVX512_BF16 are available; `out.len()` is `src.len()` / 2 rounded up.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_to_pairs(src: &[f32], out: &mut [u32]) {
        let (n, from, to) = (src.len(), src.as_ptr(), out.as_mut_ptr());
        let mut i = 0;
        // SAFETY: loads read `src[i..i + 32]` (masked to `..n` in the tail); stores write
        // `out[i / 2..]` up to `n.div_ceil(2)`, which is `out.len()`.
        unsafe {
            while i + 32 <= n {
                let low = _mm512_loadu_ps(from.add(i));
                let high = _mm512_loadu_ps(from.add(i + 16));
                let pairs =
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                _mm512_storeu_si512(to.add(i / 2).cast(), pairs);
                i += 32;
            }
            if i < n {
                let rest = n - i;
                let mask = |count: usize| ((1u32 << count.min(16)) - 1) as __mmask16;
                let low = _mm512_maskz_loadu_ps(mask(rest), from.add(i));
                let high =
                    _mm512_maskz_loadu_ps(mask(rest.saturating_sub(16)), from.wrapping_add(i + 16));
                let pairs =
                    std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low));
                _mm512_mask_storeu_epi32(to.add(i / 2).cast(), mask(rest.div_ceil(2)), pairs);
            }
        }
    }

    /// [`super::round_to_bf16`]: 16 values a step, the tail masked.
    ///
    /// # Safety
    /// AVX512F and AVX512_BF16 are available; `dst.len()` is `src.len()`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn round_into(src: &[f32], dst: &mut [u16]) {
        let (n, from, to) = (src.len(), src.as_ptr(), dst.as_mut_ptr());
        let mut i = 0;
        // SAFETY: loads read `src[i..i + 16]` (masked to `..n` in the tail), stores write
        // `dst` at the same indices.
        unsafe {
            while i + 16 <= n {
                let rounded = _mm512_cvtneps_pbh(_mm512_loadu_ps(from.add(i)));
                let bits = std::mem::transmute::<__m256bh, __m256i>(rounded);
                _mm256_storeu_si256(to.add(i).cast(), bits);
                i += 16;
            }
            if i < n {
                let mask = ((1u32 << (n - i)) - 1) as __mmask16;
                let rounded = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, from.add(i)));
                let bits = std::mem::transmute::<__m256bh, __m256i>(rounded);
                _mm256_mask_storeu_epi16(to.add(i).cast(), mask, bits);
            }
        }
    }

    /// `R` rows × `P` panels with `vdpbf16ps`: each step multiplies a row's pair of depths by
    /// a panel line's 16 pairs and adds both products to 16 f32 accumulators.
    ///
    /// # Safety
    /// AVX512F and AVX512_BF16 are available; otherwise as [`super::bf16_emulated::tile`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn tile<const R: usize, const P: usize>(t: PairTile) {
        let mut acc = [[_mm512_setzero_ps(); P]; R];
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            match t.finish.as_ref() {
                Some(f) if f.out_bf16.is_some() => prefetch_bf16_epilogue::<R, P>(f),
                finish => super::avx512::prefetch_epilogue::<R, P>(finish, t.dst, t.dst_stride),
            }
            if t.accumulate {
                for (r, acc) in acc.iter_mut().enumerate() {
                    for (p, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(t.dst.add(r * t.dst_stride + p * PANEL));
                    }
                }
            }
            for k in 0..t.steps {
                // A loop, not `array::from_fn`: a closure would not inherit the target
                // features, and its intrinsics would become calls.
                let mut w = [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); P];
                for (p, w) in w.iter_mut().enumerate() {
                    let line = t.weights[p].add(k * 2 * PANEL);
                    _mm_prefetch::<_MM_HINT_T0>(line.wrapping_add(32 * 2 * PANEL).cast());
                    if k < t.far_until {
                        _mm_prefetch::<_MM_HINT_T1>(
                            line.wrapping_add(super::FAR_LINES * 2 * PANEL).cast(),
                        );
                    }
                    *w = std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(line.cast()));
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    // Rows read in place are bfloat16 data, aligned to 2 bytes only.
                    let pair = t.lhs.add(r * t.lhs_stride + k).read_unaligned() as i32;
                    let a = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                    for (p, v) in acc.iter_mut().enumerate() {
                        *v = _mm512_dpbf16_ps(*v, a, w[p]);
                    }
                }
            }
            match t.finish.as_ref() {
                Some(f) if f.out_bf16.is_some() => store_bf16(acc, f),
                finish => super::avx512::store(acc, finish, t.dst, t.dst_stride),
            }
        }
    }

    /// [`super::avx512::prefetch_epilogue`] for a bfloat16 destination and residual.
    ///
    /// # Safety
    /// AVX-512 F is available.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn prefetch_bf16_epilogue<const R: usize, const P: usize>(f: &Finish) {
        let Some((out, stride)) = f.out_bf16 else {
            return;
        };
        for r in 0..R {
            // A row's 16·P bfloat16 values are 32·P bytes: one line for two panels.
            for p in (0..P).step_by(2) {
                let at = r * stride + p * PANEL;
                if let Some(res) = f.residual {
                    _mm_prefetch::<_MM_HINT_T0>(res.cast::<u16>().wrapping_add(at).cast());
                }
                _mm_prefetch::<_MM_HINT_ET0>(out.wrapping_add(at).cast());
            }
        }
    }

    /// The epilogue into a bfloat16 destination: + bias, + the bfloat16 residual, ReLU, each
    /// sum rounded once (`vcvtneps2bf16`, to nearest even).
    ///
    /// # Safety
    /// AVX512F and AVX512_BF16 are available; `f.out_bf16` (and the residual) have R rows of
    /// 16·P values at its row stride; the bias 16·P.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn store_bf16<const R: usize, const P: usize>(acc: [[__m512; P]; R], f: &Finish) {
        let Some((out, stride)) = f.out_bf16 else {
            return;
        };
        let zero = _mm512_setzero_ps();
        // SAFETY (all pointer reads and writes below): within the bounds the caller promises.
        unsafe {
            for (r, acc) in acc.iter().enumerate() {
                for (p, &v) in acc.iter().enumerate() {
                    let at = r * stride + p * PANEL;
                    let mut v = _mm512_add_ps(v, _mm512_loadu_ps(f.bias.add(p * PANEL)));
                    if let Some(res) = f.residual {
                        let bits = _mm256_loadu_si256(res.cast::<u16>().add(at).cast());
                        let wide = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(bits));
                        v = _mm512_add_ps(v, _mm512_castsi512_ps(wide));
                    }
                    if f.relu {
                        v = _mm512_max_ps(v, zero);
                    }
                    let rounded = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                    _mm256_storeu_si256(out.add(at).cast(), rounded);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_data::noise;

    #[test]
    fn packing_puts_every_element_where_the_product_reads_it() {
        // Five column blocks (4 × 8 + 3 panels), three depth blocks (800 each).
        let (depth, width) = (2400, 35 * PANEL);
        let matrix: Vec<f32> = (0..depth * width).map(|i| i as f32).collect();
        let at = |k: usize, col: usize| matrix[k * width + col];
        let packed = PackedMatrix::from_fn_unchecked(F32Kernel::Avx2, depth, width, at).unwrap();
        let Storage::F32(lines, _) = &packed.storage else {
            unreachable!()
        };
        assert_eq!(lines.len(), depth * width / PANEL);
        let block = depth_block(depth);
        assert_eq!(block, 800);
        for panel in 0..width / PANEL {
            for k in 0..depth {
                let k0 = k / block * block;
                let line = &lines[packed.line(panel, k0) + k - k0];
                for j in 0..PANEL {
                    assert_eq!(line.0[j], matrix[k * width + panel * PANEL + j]);
                }
            }
        }
        assert!(PackedMatrix::from_fn_unchecked(F32Kernel::Avx2, 3, 24, at).is_none());
    }

    #[test]
    fn far_prefetches_stay_inside_the_matrix() {
        // For every tile of a real layout, each panel's far fetch at every step before
        // `far_until` lies inside the weights, and a big enough matrix fetches for a whole
        // tile's steps where that does.
        for (depth, width) in [(64, 256), (512, 2048), (2300, 80), (4608, 512)] {
            let m = PackedMatrix::from_fn(depth, width, |_, _| 0.0).unwrap();
            let lines = m.steps() * m.width / PANEL;
            let block = depth_block(m.steps());
            for k0 in (0..m.steps()).step_by(block) {
                let kc = block.min(m.steps() - k0);
                for panel in 0..m.width / PANEL {
                    let steps = far_until(lines, m.line(panel, k0), kc);
                    assert!(steps == 0 || m.line(panel, k0) + steps - 1 + FAR_LINES < lines);
                    if m.line(panel, k0) + kc + FAR_LINES <= lines {
                        assert_eq!(steps, kc);
                    }
                }
            }
        }
    }

    #[test]
    fn row_tiles_cover_each_row_once_in_as_few_tiles_as_whole_ones_would() {
        for max in [TILE_ROWS, BF16_TILE_ROWS] {
            for len in 0..200 {
                let rows = 7..7 + len;
                let tiles: Vec<(usize, usize)> = row_tiles(rows.clone(), max).collect();
                assert_eq!(tiles.len(), len.div_ceil(max), "{len} rows");
                let mut next = rows.start;
                for &(first, count) in &tiles {
                    assert_eq!(first, next, "{len} rows: contiguous");
                    assert!((1..=max).contains(&count), "{len} rows: {count}");
                    // Once there are more rows than two tiles, none is shorter than two
                    // thirds of one (the FMA pipes' fill: 4 of 6, 9 of 14).
                    assert!(
                        len <= 2 * max || count >= 2 * max / 3,
                        "{len} rows: a tile of {count}"
                    );
                    next += count;
                }
                assert_eq!(next, rows.end, "{len} rows: all covered");
            }
        }
    }

    /// The product against a plain triple loop in f64, over row counts that leave every tile
    /// remainder, depths that need one, two and uneven blocks, several row blocks, column bands,
    /// and every epilogue.
    #[test]
    fn product_matches_a_naive_product() {
        if !kernel_available() {
            eprintln!("skipped: no AVX2 + FMA on this CPU");
            return;
        }
        let pack = |d, w, at: &dyn Fn(usize, usize) -> f32| {
            PackedMatrix::from_fn_unchecked(F32Kernel::Avx2, d, w, at).unwrap()
        };
        check_against_naive(pack, |v| v);
    }

    /// The AVX-512 kernel (6 × 64 tiles and every shorter and narrower one) against the
    /// same truth, where the CPU has it.
    #[test]
    fn avx512_product_matches_a_naive_product() {
        if !F32Kernel::Avx512.runs_here() {
            eprintln!("skipped: no AVX-512 F on this CPU (the AVX-512 kernel is untested here)");
            return;
        }
        let pack = |d, w, at: &dyn Fn(usize, usize) -> f32| {
            PackedMatrix::from_fn_unchecked(F32Kernel::Avx512, d, w, at).unwrap()
        };
        check_against_naive(pack, |v| v);
    }

    /// What runs by default: AVX-512 where the CPU has it.
    #[test]
    fn the_widest_kernel_is_chosen() {
        let Some(kernel) = F32Kernel::detect() else {
            return;
        };
        let no_avx512 = std::env::var_os(NO_AVX512_ENV).is_some_and(|v| v != "0");
        assert_eq!(
            kernel == F32Kernel::Avx512,
            avx512_available() && !no_avx512
        );
        let packed = PackedMatrix::from_fn(2, PANEL, |_, _| 1.0).unwrap();
        assert_eq!(packed.f32_kernel(), Some(kernel));
    }

    /// The same in bfloat16, emulated (any CPU): exact against the f64 product of the
    /// bfloat16-rounded operands, so the packing, the pairing of depths (odd ones included)
    /// and the left operand's rounding are all checked.
    #[test]
    fn bf16_product_matches_a_naive_product_of_rounded_values() {
        check_against_naive(bf16_packer(Bf16Kernel::Emulated), |v| from_bf16(to_bf16(v)));
    }

    /// `vdpbf16ps` against the same truth, where the CPU has it.
    #[test]
    fn native_bf16_product_matches_a_naive_product_of_rounded_values() {
        if !bf16_kernel_available() {
            eprintln!(
                "skipped: no AVX512_BF16 on this CPU (the native bfloat16 kernel is untested here)"
            );
            return;
        }
        check_against_naive(bf16_packer(Bf16Kernel::Native), |v| from_bf16(to_bf16(v)));
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        for v in [
            0.0f32,
            1.0,
            -2.5,
            3.140625,
            2f32.powi(-70),
            65280.0,
            f32::INFINITY,
        ] {
            assert_eq!(from_bf16(to_bf16(v)), v, "{v} is a bfloat16");
        }
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even 1.
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 3.0 / 256.0)), 1.0 + 4.0 / 256.0);
        assert_eq!(from_bf16(to_bf16(1.0 + 1.1 / 256.0)), 1.0 + 2.0 / 256.0);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for v in noise(1000, 7) {
            let r = from_bf16(to_bf16(v));
            assert!((r - v).abs() <= v.abs() / 256.0, "{v} → {r}");
        }
    }

    fn bf16_packer(
        kernel: Bf16Kernel,
    ) -> impl Fn(usize, usize, &dyn Fn(usize, usize) -> f32) -> PackedMatrix {
        move |d, w, at| {
            let packed = PackedMatrix::from_fn_in(Format::Bf16(kernel), d, w, at).unwrap();
            assert_eq!(packed.format(), Format::Bf16(kernel));
            packed
        }
    }

    /// Runs every case through a matrix `pack` makes and compares with the f64 product of
    /// `round`ed operands.
    fn check_against_naive(
        pack: impl Fn(usize, usize, &dyn Fn(usize, usize) -> f32) -> PackedMatrix,
        round: impl Fn(f32) -> f32,
    ) {
        let cases = [
            // (rows, depth, width, column bands)
            (1, 1, 16, 1),
            (5, 7, 16, 1),
            (7, 147, 64, 2),
            (13, 576, 32, 1),
            (100, 300, 48, 3),
            (197, 64, 16, 1),
            (49, 1025, 128, 2),
            // Three depth blocks in f32 (767 deep), two in bfloat16 (575 pairs).
            (9, 2300, 48, 2),
            // Tails of 3, 2 and 1 panels after 4-panel tiles, 14-row bfloat16 tiles, a row
            // block of 96.
            (111, 40, 112, 1),
            (29, 9, 80, 2),
            (15, 33, 96, 1),
            // Five column blocks, the second band starting inside the third.
            (13, 300, 35 * PANEL, 2),
            // Enough rows for the native bfloat16 kernel's 6 × 4 tiles, with a 2-panel tail
            // and a 6-panel band.
            (WIDE_TILE_ROWS + 5, 70, 6 * PANEL, 1),
            (WIDE_TILE_ROWS + 1, 33, 12 * PANEL, 2),
        ];
        for (i, &(rows, depth, width, bands)) in cases.iter().enumerate() {
            let seed = i as u32 * 10;
            let lhs = noise(rows * depth, seed + 1);
            let matrix = noise(depth * width, seed + 2);
            let bias = noise(width, seed + 3);
            let residual = noise(rows * width, seed + 4);
            let packed = pack(depth, width, &|k, c| matrix[k * width + c]);
            let format = packed.format();
            for (with_residual, relu) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let mut dst = vec![f32::NAN; rows * width];
                let epilogue = Epilogue {
                    bias: &bias,
                    residual: with_residual.then_some(&residual[..]),
                    relu,
                };
                packed.multiply(&lhs, depth, &mut dst, epilogue, bands);
                for r in 0..rows {
                    for c in 0..width {
                        let mut want: f64 = (0..depth)
                            .map(|k| {
                                f64::from(round(lhs[r * depth + k]))
                                    * f64::from(round(matrix[k * width + c]))
                            })
                            .sum();
                        want += f64::from(bias[c]);
                        if with_residual {
                            want += f64::from(residual[r * width + c]);
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let got = f64::from(dst[r * width + c]);
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{format:?} case {i} ({rows}×{depth}×{width}) at {r},{c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
