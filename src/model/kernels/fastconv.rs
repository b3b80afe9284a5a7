//! Fast CPU convolutions for ResNet-50, as candle custom ops over channels-last (NHWC)
//! tensors, so the model code stays a readable chain of tensor calls.
//!
//! Why: candle's generic `conv2d` copies around its GEMM and left most of a forward pass in
//! strided copies and thread hand-offs (perf: GEMM kernels were 30 % of the time). Here each
//! convolution is exactly one GEMM: a 1×1 conv multiplies the (N·H·W) × C activation matrix
//! by the C × O weight in place (no im2col at all); larger or strided kernels first gather
//! their taps row by row, into a buffer reused across layers. The weight is packed once at
//! load for the micro-kernel ([`super::packed_gemm`]), which adds the bias and the shortcut
//! and applies ReLU before it stores, so every activation is written once. 3×3 stride-1
//! layers with enough pixels go through the Winograd domain instead ([`super::winograd`]).
//! Batch norm is already folded into the weights by the caller.
//!
//! Threads: a layer with many output pixels is cut into one band of rows per thread (gather,
//! product and epilogue all per band: one fork-join per layer); a layer with few (layer 4)
//! cuts its output channels instead.
//!
//! On CPUs without AVX2 + FMA the product is the `gemm` crate's ([`super::matrix`]), Winograd
//! layers included. The `unsafe` here hands the output's spare capacity to the product,
//! which writes all of it.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};

use super::activation::{Activation, bf16_bits, into_bf16_vec};
use super::grouped::GroupedConv;
use super::matrix::WeightMatrix;
use super::packed_gemm::{Epilogue, Format, TILE_ROWS};
use super::parallel;
use super::winograd::{TileSize, Winograd};

/// F(4×4, 3×3) weights take 4× the memory of the direct ones: layers up to 256 input
/// channels (layers 1–3) use it; layer 4 (512), small in pixels and large in weights, uses
/// F(2×2, 3×3), whose weights take 16/9. Layer 3 in F(2×2) too was slower for batches
/// (docs/performance.md has the paired runs).
const WINOGRAD_4X4_MAX_IN: usize = 256;

/// Below this many output tiles the small GEMMs cost more than they save, and the direct
/// GEMM runs instead. At 224² the 3×3 layers have 196, 49, 16 (4×4) and 16 (2×2) tiles
/// (layers 1–4): paired runs of `camview bench` were fastest with all in the Winograd domain.
const WINOGRAD_MIN_TILES: usize = 8;

/// Bytes of gathered taps per band of rows: half a Zen 3/4 L2.
const TAPS_BUDGET: usize = 512 * 1024;

/// One convolution's wall time, as recorded for `camview bench --layers`.
#[derive(Debug, Clone)]
pub struct LayerTime {
    pub kernel: usize,
    pub stride: usize,
    /// H, W, C of the input (one image).
    pub input: (usize, usize, usize),
    pub out_c: usize,
    /// Went through the Winograd domain (else one direct GEMM).
    pub winograd: bool,
    /// Multiply-adds of the direct convolution (the work, whichever way it was done).
    pub macs: usize,
    pub micros: f64,
}

static RECORDING: AtomicBool = AtomicBool::new(false);
static LAYER_TIMES: Mutex<Vec<LayerTime>> = Mutex::new(Vec::new());

/// Starts or stops timing every fast convolution (off by default: it costs a clock read and a
/// lock per layer).
pub fn record_layer_times(on: bool) {
    RECORDING.store(on, Ordering::Relaxed);
}

/// The times recorded so far, in the order the layers ran; clears the record.
pub fn take_layer_times() -> Vec<LayerTime> {
    std::mem::take(&mut *LAYER_TIMES.lock().unwrap_or_else(|e| e.into_inner()))
}

thread_local! {
    /// The im2col buffer of the thread running the model, kept between layers and calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The same for bfloat16 activations.
    static SCRATCH_BF16: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// A convolution with folded batch norm, its weight packed for the GEMM.
#[derive(Debug, Clone)]
pub struct PackedConv {
    /// The (k·k·C_in) × C_out weight matrix, rows ordered (ky, kx, c_in) like the taps;
    /// `None` for a convolution that always runs in the Winograd domain.
    matrix: Option<WeightMatrix>,
    /// The same convolution in the Winograd domain, for 3×3 stride-1 layers.
    winograd: Option<Winograd>,
    bias: Vec<f32>,
    kernel: usize,
    stride: usize,
    pad: usize,
    in_c: usize,
    out_c: usize,
    /// A grouped convolution's weights, one block-diagonal matrix per cluster of groups
    /// (empty for an ordinary convolution).
    clusters: Vec<WeightMatrix>,
    /// Groups of input and output channels that only meet each other (1: an ordinary
    /// convolution).
    groups: usize,
    /// How the weights are stored: bfloat16 weights take bfloat16 activations too.
    format: Format,
    /// A grouped convolution computed directly, where [`GroupedConv`] applies (AVX-512 or AVX2);
    /// else the clusters run.
    direct: Option<GroupedConv>,
}

/// Output channels a cluster of a grouped convolution's groups should reach: one panel of the
/// micro-kernel. Fewer would leave the kernel's columns idle; more multiplies zeros.
const CLUSTER_WIDTH: usize = 16;

/// How many of `groups` groups of `per_group` output channels each to multiply together: the
/// fewest whose outputs fill whole panels of [`CLUSTER_WIDTH`], so that the block-diagonal
/// matrix of a cluster wastes as few multiplies on its zeros as the kernel allows
/// (ResNeXt-50 32×4d: 4 groups of 4 in stage 1, 2 of 8 in stage 2, 1 of 16 and of 32 after).
fn groups_per_cluster(groups: usize, per_group: usize) -> usize {
    (1..=groups)
        .filter(|d| groups.is_multiple_of(*d))
        .find(|d| (d * per_group).is_multiple_of(CLUSTER_WIDTH))
        .or_else(|| {
            (1..=groups)
                .filter(|d| groups.is_multiple_of(*d))
                .find(|d| d * per_group >= CLUSTER_WIDTH)
        })
        .unwrap_or(groups)
}

impl PackedConv {
    /// Packs a grouped convolution: a row-major O × (I / `groups`) × k × k weight (`shape` =
    /// (O, I, k)), its folded batch-norm `scale` and its O biases. The groups are multiplied
    /// in clusters ([`groups_per_cluster`]), each one GEMM with a block-diagonal weight over
    /// its clusters' input channels; with one group this is [`Self::from_oihw`].
    #[allow(clippy::too_many_arguments)]
    pub fn grouped(
        weight: &[f32],
        scale: &[f64],
        (out_c, in_c, k): (usize, usize, usize),
        groups: usize,
        bias: Vec<f32>,
        stride: usize,
        pad: usize,
        format: Format,
    ) -> Self {
        if groups <= 1 {
            return Self::from_oihw(weight, scale, (out_c, in_c, k), bias, stride, pad, format);
        }
        assert!(
            in_c.is_multiple_of(groups) && out_c.is_multiple_of(groups),
            "channels in groups"
        );
        let (in_per_group, out_per_group) = (in_c / groups, out_c / groups);
        assert_eq!(weight.len(), out_c * in_per_group * k * k, "weight size");
        let per_cluster = groups_per_cluster(groups, out_per_group);
        let (cluster_in, cluster_out) = (per_cluster * in_per_group, per_cluster * out_per_group);
        let direct = GroupedConv::new(
            weight,
            scale,
            (out_c, in_c, k),
            groups,
            &bias,
            stride,
            pad,
            format,
        );
        let clusters = (0..groups / per_cluster)
            .map(|cluster| {
                // Rows ordered (tap, c_in) over the cluster's input channels, like its taps.
                let at = |row: usize, col: usize| {
                    let (tap, ci) = (row / cluster_in, row % cluster_in);
                    if ci / in_per_group != col / out_per_group {
                        return 0.0;
                    }
                    let o = cluster * cluster_out + col;
                    let w = weight[(o * in_per_group + ci % in_per_group) * k * k + tap];
                    (f64::from(w) * scale[o]) as f32
                };
                WeightMatrix::from_fn(format, k * k * cluster_in, cluster_out, at)
            })
            .collect();
        Self {
            matrix: None,
            winograd: None,
            bias,
            kernel: k,
            stride,
            pad,
            in_c,
            out_c,
            clusters,
            groups,
            format,
            direct,
        }
    }

    /// Packs a row-major O × I × k × k weight (`shape` = (O, I, k)) and its O biases.
    #[allow(clippy::too_many_arguments)]
    pub fn from_oihw(
        weight: &[f32],
        scale: &[f64],
        (out_c, in_c, k): (usize, usize, usize),
        bias: Vec<f32>,
        stride: usize,
        pad: usize,
        format: Format,
    ) -> Self {
        assert_eq!(weight.len(), out_c * in_c * k * k, "weight size");
        assert_eq!(scale.len(), out_c, "scale size");
        assert_eq!(bias.len(), out_c, "bias size");
        // Element (row, o) of the GEMM matrix, rows ordered (tap, c_in) like the gathered taps,
        // with the scale folded in (in f64, so folding adds no rounding of its own).
        let depth = k * k * in_c;
        let at = |row: usize, o: usize| {
            let w = weight[(o * in_c + row % in_c) * k * k + row / in_c];
            (f64::from(w) * scale[o]) as f32
        };
        let size = if in_c <= WINOGRAD_4X4_MAX_IN {
            TileSize::Four
        } else {
            TileSize::Two
        };
        let winograd = (k == 3 && stride == 1 && pad == 1)
            .then(|| Winograd::new(weight, scale, (out_c, in_c), bias.clone(), size, format));
        // Layer 4's 3×3 convolutions keep only their F(2×2) weights, which run any input
        // size: their direct ones would add 28 MB and a tenth of the load time, for inputs
        // under 8 tiles (≤ 128 px) only.
        let winograd_only = winograd.is_some() && size == TileSize::Two;
        let matrix = (!winograd_only).then(|| WeightMatrix::from_fn(format, depth, out_c, at));
        Self {
            matrix,
            winograd,
            bias,
            kernel: k,
            stride,
            pad,
            in_c,
            out_c,
            clusters: Vec::new(),
            groups: 1,
            format,
            direct: None,
        }
    }

    /// Packs an O × I × k × k weight tensor and its O biases.
    #[cfg(test)]
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize, pad: usize) -> Result<Self> {
        let (out_c, in_c, kh, kw) = weight.dims4()?;
        if kh != kw {
            bail!("only square kernels are supported, got {kh}×{kw}");
        }
        let weight = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self::from_oihw(
            &weight,
            &vec![1.0; out_c],
            (out_c, in_c, kh),
            bias.to_vec1::<f32>()?,
            stride,
            pad,
            Format::F32,
        ))
    }

    /// Output spatial size for an input of `h` × `w`.
    pub fn output_size(&self, h: usize, w: usize) -> (usize, usize) {
        let out = |s: usize| (s + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1;
        (out(h), out(w))
    }

    /// conv(x) + bias (+ `residual`), then ReLU if `relu`. `x` is N × H × W × C_in (NHWC) on
    /// the CPU; `residual`, if any, has the output's shape N × H' × W' × C_out.
    pub fn forward(&self, x: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        let op = FusedConv { conv: self, relu };
        match residual {
            Some(r) => x.apply_op2_no_bwd(r, &op),
            None => x.apply_op1_no_bwd(&op),
        }
    }

    /// The convolution on raw NHWC data; returns the N × H' × W' × C_out output, stored as
    /// the input is (f32, or bfloat16 with a bfloat16 model). Times itself while
    /// [`record_layer_times`] is on.
    fn compute<T: Taps>(
        &self,
        x: &[T],
        dims: Dims4,
        residual: Option<&[T]>,
        relu: bool,
    ) -> Result<(Vec<T>, Shape)> {
        if !RECORDING.load(Ordering::Relaxed) {
            return self.compute_inner(x, dims, residual, relu);
        }
        let start = std::time::Instant::now();
        let result = self.compute_inner(x, dims, residual, relu);
        let (n, h, w, c) = dims;
        let (oh, ow) = self.output_size(h, w);
        let time = LayerTime {
            kernel: self.kernel,
            stride: self.stride,
            input: (h, w, c),
            out_c: self.out_c,
            winograd: self.uses_winograd(dims),
            macs: n * oh * ow * c * self.out_c * self.kernel * self.kernel / self.groups,
            micros: start.elapsed().as_secs_f64() * 1e6,
        };
        LAYER_TIMES
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(time);
        result
    }

    /// Whether an input of `dims` goes through the Winograd domain.
    fn uses_winograd(&self, (n, h, w, _): Dims4) -> bool {
        self.winograd
            .as_ref()
            .is_some_and(|wino| self.matrix.is_none() || wino.tiles(n, h, w) >= WINOGRAD_MIN_TILES)
    }

    fn compute_inner<T: Taps>(
        &self,
        x: &[T],
        (n, h, w, c): Dims4,
        residual: Option<&[T]>,
        relu: bool,
    ) -> Result<(Vec<T>, Shape)> {
        if c != self.in_c {
            bail!("convolution expects {} input channels, got {c}", self.in_c);
        }
        if T::BF16 && self.format == Format::F32 {
            bail!("bfloat16 activations need a bfloat16 model");
        }
        let (oh, ow) = self.output_size(h, w);
        let rows = n * oh * ow;
        let out_c = self.out_c;
        if let Some(r) = residual
            && r.len() != rows * out_c
        {
            bail!(
                "residual has {} values, the convolution makes {}",
                r.len(),
                rows * out_c
            );
        }
        if !self.clusters.is_empty() {
            if residual.is_some() {
                bail!("a grouped convolution takes no shortcut");
            }
            if let Some(direct) = &self.direct {
                let out = direct.forward(x, (n, h, w, c), relu);
                return Ok((out, Shape::from((n, oh, ow, out_c))));
            }
            return Ok(self.grouped_forward(x, (n, h, w, c), relu));
        }
        let matrix = match (&self.winograd, &self.matrix) {
            (Some(winograd), _) if self.uses_winograd((n, h, w, c)) => {
                let out = winograd.forward(x, (n, h, w, c), residual, relu);
                return Ok((out, Shape::from((n, h, w, out_c))));
            }
            (_, Some(matrix)) => matrix,
            (_, None) => bail!("convolution has neither direct nor Winograd weights"),
        };
        // Not zero-filled: the product writes every value (a fill was a serial pass over each
        // layer's output).
        let mut out: Vec<T> = Vec::with_capacity(rows * out_c);
        let spare = &mut out.spare_capacity_mut()[..rows * out_c];
        let threads = rayon::current_num_threads();
        if threads == 1 || rows >= 64 * threads {
            // Every output row (pixel) depends only on its own taps, so the whole convolution
            // — gather, product, epilogue — splits into bands of rows: one per thread, a
            // single fork-join per layer. Gathered taps are also kept to what stays in L2
            // between being written and being multiplied: more bands than threads then, as many
            // for each thread (the bfloat16 stem's 7 bands of 1792 rows left one of two threads
            // a band behind; 8 of 1568 do not).
            let mut band = rows.div_ceil(threads);
            if self.gathers() {
                let depth = self.kernel * self.kernel * c;
                let most = (TAPS_BUDGET / (depth * size_of::<T>())).max(64);
                let bands = rows.div_ceil(most).next_multiple_of(threads);
                band = rows.div_ceil(bands);
            }
            // Whole micro-tiles per band, so no band ends in a short one but the last.
            let band = band.next_multiple_of(TILE_ROWS);
            let f = |i: usize, out: &mut [MaybeUninit<T>]| {
                let first = i * band;
                let shortcut = residual.map(|r| &r[first * out_c..][..out.len()]);
                let band = Band {
                    first,
                    out,
                    shortcut,
                };
                self.rows(matrix, x, (n, h, w, c), band, relu, 1);
            };
            parallel::for_each_chunk_mut(spare, band * out_c, f);
        } else {
            // Few rows (layer 4 of a small input): one band of rows, its columns (output
            // channels) split between the threads.
            let band = Band {
                first: 0,
                out: spare,
                shortcut: residual,
            };
            self.rows(matrix, x, (n, h, w, c), band, relu, threads);
        }
        // SAFETY: the bands above cover all `rows × out_c` values of the spare capacity, and
        // `WeightMatrix::multiply_into` writes every value of its band.
        unsafe { out.set_len(rows * out_c) };
        Ok((out, Shape::from((n, oh, ow, out_c))))
    }

    /// The rows of `band`: gather their taps, multiply by `matrix` (its output channels
    /// split in `column_bands`), then add the bias and the shortcut and apply ReLU in one pass.
    fn rows<T: Taps>(
        &self,
        matrix: &WeightMatrix,
        x: &[T],
        dims: Dims4,
        Band {
            first,
            out,
            shortcut,
        }: Band<'_, T>,
        relu: bool,
        column_bands: usize,
    ) {
        let out_c = self.out_c;
        let count = out.len() / out_c;
        let depth = self.kernel * self.kernel * dims.3;
        let stride = T::row_stride(depth);
        let epilogue = Epilogue {
            bias: &self.bias,
            residual: shortcut,
            relu,
        };
        if !self.gathers() {
            // A 1×1 convolution is the product itself: no copy of the input at all.
            let lhs = &x[first * depth..][..count * depth];
            matrix.product(T::lhs(lhs), depth, out, epilogue, column_bands);
        } else {
            // The im2col buffer is per thread and reused across layers and calls: it is the
            // largest one (k·k × the input), and allocating it anew costs page faults.
            T::scratch().with(|cell| {
                // A thread that waits inside a parallel loop below may run another
                // convolution's band meanwhile; that one finds the buffer taken and uses its own.
                let mut own = Vec::new();
                let mut borrowed = cell.try_borrow_mut();
                let scratch = match &mut borrowed {
                    Ok(scratch) => &mut **scratch,
                    Err(_) => &mut own,
                };
                if scratch.len() < count * stride {
                    scratch.resize(count * stride, T::ZERO);
                }
                let taps = &mut scratch[..count * stride];
                if column_bands > 1 {
                    // The threads share this product: they share the gathering too.
                    let rows = count.div_ceil(column_bands);
                    parallel::for_each_chunk_mut(taps, rows * stride, |i, taps| {
                        self.gather_taps(x, dims, first + i * rows, stride, taps)
                    });
                } else {
                    self.gather_taps(x, dims, first, stride, taps);
                }
                matrix.product(T::lhs(taps), stride, out, epilogue, column_bands);
            });
        }
    }

    /// A grouped convolution: bands of output rows on all threads, as [`Self::compute_inner`]
    /// cuts them; in each band, cluster after cluster, its taps gathered from its input
    /// channels, multiplied into a small buffer and copied into its output columns.
    fn grouped_forward<T: Taps>(&self, x: &[T], dims: Dims4, relu: bool) -> (Vec<T>, Shape) {
        let (n, h, w, _) = dims;
        let (oh, ow) = self.output_size(h, w);
        let rows = n * oh * ow;
        let out_c = self.out_c;
        let cluster_in = self.in_c / self.clusters.len();
        let cluster_out = out_c / self.clusters.len();
        let depth = self.kernel * self.kernel * cluster_in;
        let threads = rayon::current_num_threads();
        let band = rows
            .div_ceil(threads)
            .min((TAPS_BUDGET / (depth * size_of::<T>())).max(64))
            .next_multiple_of(TILE_ROWS);
        let stride = T::row_stride(depth);
        let mut out = vec![T::ZERO; rows * out_c];
        parallel::for_each_chunk_mut(&mut out, band * out_c, |i, out| {
            let first = i * band;
            let count = out.len() / out_c;
            let mut taps = vec![T::ZERO; count * stride];
            let mut product = vec![MaybeUninit::new(T::ZERO); count * cluster_out];
            for (j, matrix) in self.clusters.iter().enumerate() {
                let channels = j * cluster_in..(j + 1) * cluster_in;
                self.gather_channel_taps(x, dims, first, channels, stride, &mut taps);
                let columns = j * cluster_out..(j + 1) * cluster_out;
                let epilogue = Epilogue {
                    bias: &self.bias[columns.clone()],
                    residual: None,
                    relu,
                };
                matrix.product(T::lhs(&taps), stride, &mut product, epilogue, 1);
                for (dst, src) in out
                    .chunks_exact_mut(out_c)
                    .zip(product.chunks_exact(cluster_out))
                {
                    for (d, s) in dst[columns.clone()].iter_mut().zip(src) {
                        // SAFETY: the product wrote every value.
                        *d = unsafe { s.assume_init() };
                    }
                }
            }
        });
        (out, Shape::from((n, oh, ow, out_c)))
    }

    /// [`Self::gather_taps`] of the input channels `channels` only: one row of k·k·|channels|
    /// values per output pixel.
    #[allow(clippy::too_many_arguments)]
    fn gather_channel_taps<T: Activation>(
        &self,
        x: &[T],
        (_, h, w, c): Dims4,
        first: usize,
        channels: std::ops::Range<usize>,
        stride: usize,
        taps: &mut [T],
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let (oh, ow) = self.output_size(h, w);
        let width = channels.len();
        for (i, row) in taps.chunks_exact_mut(stride).enumerate() {
            let (pixel, pad) = row.split_at_mut(k * k * width);
            pad.fill(T::ZERO);
            let index = first + i;
            let (b, oy, ox) = (index / (oh * ow), (index / ow) % oh, index % ow);
            for (tap, dst) in pixel.chunks_exact_mut(width).enumerate() {
                let (ky, kx) = (tap / k, tap % k);
                let iy = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h);
                let ix = (ox * s + kx).checked_sub(p).filter(|&ix| ix < w);
                match (iy, ix) {
                    (Some(iy), Some(ix)) => {
                        let at = ((b * h + iy) * w + ix) * c + channels.start;
                        dst.copy_from_slice(&x[at..at + width]);
                    }
                    _ => dst.fill(T::ZERO),
                }
            }
        }
    }

    /// Whether the product needs the taps gathered (im2col): all but 1×1 stride-1 kernels.
    fn gathers(&self) -> bool {
        !(self.kernel == 1 && self.stride == 1 && self.pad == 0)
    }

    /// im2col for NHWC, for the output pixels `first..` that `taps` has room for: one row of
    /// k·k·C values per pixel, zeros where a tap falls in the padding. A pixel's k taps in
    /// one kernel row are k neighbouring input pixels, so each kernel row is one copy.
    fn gather_taps<T: Activation>(
        &self,
        x: &[T],
        (_, h, w, c): Dims4,
        first: usize,
        stride: usize,
        taps: &mut [T],
    ) {
        let (k, s, p) = (self.kernel, self.stride, self.pad);
        let (oh, ow) = self.output_size(h, w);
        let depth = k * k * c;
        // The output pixel of each row, counted on from the first rather than divided out.
        let (mut b, mut oy, mut ox) = (first / (oh * ow), (first / ow) % oh, first % ow);
        for (i, row) in taps.chunks_exact_mut(stride).enumerate() {
            // A bfloat16 row of odd depth ends in one padding value (see `Taps::row_stride`).
            let (pixel, pad) = row.split_at_mut(depth);
            pad.fill(T::ZERO);
            if i > 0 {
                ox += 1;
                if ox == ow {
                    ox = 0;
                    oy += 1;
                    if oy == oh {
                        oy = 0;
                        b += 1;
                    }
                }
            }
            // Taps kx in left..right fall inside the image (x = ox·s + kx − p).
            let left = p.saturating_sub(ox * s).min(k);
            let right = (w + p).saturating_sub(ox * s).clamp(left, k);
            if left == 0 && right == k && oy * s >= p && oy * s + k <= h + p {
                // Inside the image (most pixels): whole kernel rows, no padding to write. With
                // this and `copy_taps` the stem took 0.74 × the time in bf16, 0.92 × in f32.
                let (iy, ix) = (oy * s - p, ox * s - p);
                for (ky, dst) in pixel.chunks_exact_mut(k * c).enumerate() {
                    copy_taps(dst, &x[((b * h + iy + ky) * w + ix) * c..][..k * c]);
                }
                continue;
            }
            for (ky, dst) in pixel.chunks_exact_mut(k * c).enumerate() {
                let Some(iy) = (oy * s + ky).checked_sub(p).filter(|&iy| iy < h) else {
                    // The buffer is reused: padding taps must be written too.
                    dst.fill(T::ZERO);
                    continue;
                };
                let (pad_left, rest) = dst.split_at_mut(left * c);
                let (inside, pad_right) = rest.split_at_mut((right - left) * c);
                pad_left.fill(T::ZERO);
                pad_right.fill(T::ZERO);
                let ix = ox * s + left - p;
                let src = &x[((b * h + iy) * w + ix) * c..][..inside.len()];
                copy_taps(inside, src);
            }
        }
    }
}

/// `dst` = `src` (equal lengths). The stem's kernel rows of 7 RGB pixels (21 values, 88 000
/// copies an image) are copied as one fixed-size move each, not through a `memcpy` call: the
/// bf16 stem took 0.92 × the time (paired in one process; f32's within ±3 %).
#[inline(always)]
fn copy_taps<T: Copy>(dst: &mut [T], src: &[T]) {
    const STEM_ROW: usize = 7 * 3;
    if let (Ok(dst), Ok(src)) = (
        <&mut [T; STEM_ROW]>::try_from(&mut *dst),
        <&[T; STEM_ROW]>::try_from(src),
    ) {
        *dst = *src;
        return;
    }
    dst.copy_from_slice(src);
}

/// Output rows `first..` of a convolution (as many as `out` holds), and their shortcut.
struct Band<'a, T> {
    first: usize,
    out: &'a mut [MaybeUninit<T>],
    shortcut: Option<&'a [T]>,
}

/// An activation type with its own per-thread im2col buffer.
trait Taps: Activation {
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Self>>>;

    /// Values from one gathered row to the next: the depth, made even for bfloat16 so that
    /// every row starts a whole pair (the stem's 147 → 148, the extra value zero).
    fn row_stride(depth: usize) -> usize {
        if Self::BF16 {
            depth.next_multiple_of(2)
        } else {
            depth
        }
    }
}

impl Taps for f32 {
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Self>>> {
        &SCRATCH
    }
}

impl Taps for u16 {
    fn scratch() -> &'static std::thread::LocalKey<RefCell<Vec<Self>>> {
        &SCRATCH_BF16
    }
}

/// N, H, W, C.
pub(super) type Dims4 = (usize, usize, usize, usize);

fn contiguous(layout: &Layout) -> Result<(usize, usize)> {
    match layout.contiguous_offsets() {
        Some(offsets) => Ok(offsets),
        None => bail!("the fast path needs a contiguous 4-D tensor"),
    }
}

/// The activations of a CPU tensor, f32 or bfloat16.
pub(super) enum Values<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

/// [`dense4`] of an f32 or a bfloat16 tensor.
pub(super) fn values4<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<(Values<'a>, Dims4)> {
    let dims = layout.shape().dims4()?;
    let (start, end) = contiguous(layout)?;
    let values = match storage {
        CpuStorage::F32(values) => Values::F32(&values[start..end]),
        CpuStorage::BF16(values) => Values::Bf16(&bf16_bits(values)[start..end]),
        other => bail!(
            "the fast path takes f32 or bf16 activations, not {:?}",
            other.dtype()
        ),
    };
    Ok((values, dims))
}

/// An output of the fast path as candle storage.
pub(super) trait IntoStorage {
    fn into_storage(self) -> CpuStorage;
}

impl IntoStorage for Vec<f32> {
    fn into_storage(self) -> CpuStorage {
        CpuStorage::F32(self)
    }
}

impl IntoStorage for Vec<u16> {
    fn into_storage(self) -> CpuStorage {
        CpuStorage::BF16(into_bf16_vec(self))
    }
}

struct FusedConv<'a> {
    conv: &'a PackedConv,
    relu: bool,
}

impl FusedConv<'_> {
    fn run<T: Taps>(
        &self,
        x: &[T],
        dims: Dims4,
        residual: Option<&[T]>,
    ) -> Result<(CpuStorage, Shape)>
    where
        Vec<T>: IntoStorage,
    {
        let (out, shape) = self.conv.compute(x, dims, residual, self.relu)?;
        Ok((out.into_storage(), shape))
    }
}

impl CustomOp1 for FusedConv<'_> {
    fn name(&self) -> &'static str {
        "camview-fused-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match values4(storage, layout)? {
            (Values::F32(x), dims) => self.run(x, dims, None),
            (Values::Bf16(x), dims) => self.run(x, dims, None),
        }
    }
}

impl CustomOp2 for FusedConv<'_> {
    fn name(&self) -> &'static str {
        "camview-fused-conv-residual"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
        res_storage: &CpuStorage,
        res_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        match (
            values4(storage, layout)?,
            values4(res_storage, res_layout)?.0,
        ) {
            ((Values::F32(x), dims), Values::F32(r)) => self.run(x, dims, Some(r)),
            ((Values::Bf16(x), dims), Values::Bf16(r)) => self.run(x, dims, Some(r)),
            _ => bail!("a convolution's input and shortcut differ in type"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_data::{max_abs_diff, noise_tensor as noise};
    use candle_core::Module;

    /// The fast op against candle's own conv2d on NCHW, for every kernel/stride ResNet uses
    /// plus odd sizes, a batch and a residual.
    #[test]
    fn fused_conv_matches_candle_conv2d() {
        let cases = [
            // (n, c_in, h, w, c_out, k, stride)
            (1, 8, 9, 7, 16, 1, 1),
            (2, 8, 9, 7, 16, 1, 2),
            (1, 8, 9, 7, 12, 3, 1),
            (2, 8, 9, 7, 12, 3, 2),
            (1, 3, 15, 11, 8, 7, 2),
            // Few rows and enough output channels to split the columns between threads.
            (1, 8, 5, 5, 48, 3, 1),
            (2, 16, 4, 3, 40, 1, 1),
            // Enough output rows to be split into one band per thread.
            (1, 8, 23, 21, 16, 1, 1),
            (2, 8, 23, 21, 12, 3, 1),
            (1, 3, 45, 37, 8, 7, 2),
            // Over 256 input channels: a 3×3 convolution only in F(2×2, 3×3), any size.
            (1, 264, 5, 6, 16, 3, 1),
            (2, 264, 1, 2, 16, 3, 1),
        ];
        for (i, &(n, c, h, w, o, k, s)) in cases.iter().enumerate() {
            let x = noise(&[n, c, h, w], i as u32 + 1);
            let weight = noise(&[o, c, k, k], i as u32 + 100);
            let bias = noise(&[o], i as u32 + 200);
            let config = candle_nn::Conv2dConfig {
                padding: k / 2,
                stride: s,
                ..Default::default()
            };
            let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), config)
                .forward(&x)
                .unwrap();
            let packed = PackedConv::new(&weight, &bias, s, k / 2).unwrap();
            if k == 3 && s == 1 && c > WINOGRAD_4X4_MAX_IN {
                let winograd_only = packed.matrix.is_none() && packed.winograd.is_some();
                assert!(winograd_only, "case {i}");
            }
            let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            let got = packed
                .forward(&x_nhwc, None, false)
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            assert_eq!(got.dims(), want.dims(), "case {i}");
            assert!(max_abs_diff(&got, &want) < 1e-4, "case {i}");

            // With a residual and ReLU: relu(conv + residual).
            let residual = noise(got.dims(), i as u32 + 300);
            let want = (want + &residual).unwrap().relu().unwrap();
            let residual_nhwc = residual
                .permute((0, 2, 3, 1))
                .unwrap()
                .contiguous()
                .unwrap();
            let got = packed
                .forward(&x_nhwc, Some(&residual_nhwc), true)
                .unwrap()
                .permute((0, 3, 1, 2))
                .unwrap();
            assert!(max_abs_diff(&got, &want) < 1e-4, "case {i} with residual");
        }
    }

    /// bfloat16 activations give exactly the bfloat16 rounding of what the same bfloat16
    /// weights give on f32 activations of the same (rounded) values: the sums are the same,
    /// rounded once at the end. Every way a product reads its left rows and stores its
    /// result: in place, gathered, the stem's odd depth, Winograd in both tile sizes, partial
    /// sums across depth blocks, rows 4 KiB apart, an odd depth, groups, a width of no
    /// whole panels (the portable product), with and without a shortcut.
    #[test]
    fn bf16_activations_are_the_f32_result_rounded_once() {
        use super::super::packed_gemm::{Bf16Kernel, bf16_kernel_available, from_bf16, to_bf16};
        use crate::model::test_data::noise;
        let cases = [
            // (n, c_in, h, w, c_out, k, stride, groups)
            (1, 64, 9, 7, 32, 1, 1, 1),
            (2, 64, 9, 7, 32, 1, 2, 1),
            (1, 16, 9, 7, 32, 3, 1, 1),
            (1, 264, 5, 6, 16, 3, 1, 1),
            (2, 16, 9, 7, 32, 3, 2, 1),
            (1, 3, 23, 21, 16, 7, 2, 1),
            (1, 1030, 3, 4, 32, 1, 1, 1),
            (1, 2048, 3, 3, 16, 1, 1, 1),
            (1, 2300, 3, 3, 16, 1, 1, 1),
            (1, 5, 6, 7, 16, 1, 1, 1),
            (1, 128, 9, 7, 128, 3, 1, 32),
            // Groups of 16 (the kernel's broadcasts) and of 32 (clusters only), strided.
            (1, 64, 9, 7, 64, 3, 1, 4),
            (1, 64, 9, 7, 64, 3, 2, 2),
            (1, 8, 23, 21, 20, 1, 1, 1),
        ];
        let mut kernels = vec![Bf16Kernel::Emulated];
        if bf16_kernel_available() {
            kernels.push(Bf16Kernel::Native);
        }
        for kernel in kernels {
            for (i, &(n, c, h, w, o, k, s, groups)) in cases.iter().enumerate() {
                let seed = i as u32 * 10;
                let weight = noise(o * c / groups * k * k, seed + 1);
                let bias = noise(o, seed + 2);
                let conv = PackedConv::grouped(
                    &weight,
                    &vec![1.0; o],
                    (o, c, k),
                    groups,
                    bias,
                    s,
                    k / 2,
                    Format::Bf16(kernel),
                );
                let bits: Vec<u16> = noise(n * h * w * c, seed + 3)
                    .into_iter()
                    .map(to_bf16)
                    .collect();
                let values: Vec<f32> = bits.iter().map(|&b| from_bf16(b)).collect();
                let dims = (n, h, w, c);
                // Grouped ones also against the truth: the f32 model with the weights rounded
                // the same way (the products are exact either way; only the order of the sums
                // differs), which the comparison above cannot see (both sides share the
                // bfloat16 weights).
                let rounded: Vec<f32> = weight.iter().map(|&v| from_bf16(to_bf16(v))).collect();
                let truth = PackedConv::grouped(
                    &rounded,
                    &vec![1.0; o],
                    (o, c, k),
                    groups,
                    conv.bias.clone(),
                    s,
                    k / 2,
                    Format::F32,
                );
                let (truth, _) = truth.compute(&values, dims, None, false).unwrap();
                let (got, _) = conv.compute(&values, dims, None, false).unwrap();
                for (j, (&g, &t)) in got.iter().zip(&truth).enumerate().filter(|_| groups > 1) {
                    assert!(
                        (g - t).abs() <= 1e-5 * (1.0 + t.abs()),
                        "{kernel:?} case {i}: value {j}: {g} against the f32 model's {t}"
                    );
                }
                let (oh, ow) = conv.output_size(h, w);
                let shortcut: Vec<u16> = noise(n * oh * ow * o, seed + 4)
                    .into_iter()
                    .map(to_bf16)
                    .collect();
                let wide_shortcut: Vec<f32> = shortcut.iter().map(|&b| from_bf16(b)).collect();
                // A grouped convolution both directly (where AVX-512 runs) and in clusters.
                let clustered = PackedConv {
                    direct: None,
                    ..conv.clone()
                };
                let variants = [(false, &conv), (true, &clustered)];
                for (with_shortcut, conv) in [false, true].into_iter().flat_map(|s| {
                    variants
                        .iter()
                        .filter(move |(clusters, _)| !clusters || groups > 1)
                        .map(move |&(_, conv)| (s, conv))
                }) {
                    if with_shortcut && groups > 1 {
                        continue;
                    }
                    let (want, got) = if with_shortcut {
                        (
                            conv.compute(&values, dims, Some(&wide_shortcut), true),
                            conv.compute(&bits, dims, Some(&shortcut), true),
                        )
                    } else {
                        (
                            conv.compute(&values, dims, None, false),
                            conv.compute(&bits, dims, None, false),
                        )
                    };
                    let ((want, want_shape), (got, got_shape)) = (want.unwrap(), got.unwrap());
                    assert_eq!(got_shape, want_shape);
                    let case = format!("{kernel:?} case {i}, shortcut {with_shortcut}");
                    assert!(want.iter().any(|&v| v != 0.0), "{case}: all zero");
                    for (j, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(
                            g,
                            to_bf16(w),
                            "{case}: value {j}: {} against {w}",
                            from_bf16(g)
                        );
                    }
                }
            }
        }
    }

    /// Grouped convolutions against candle's conv2d with the same groups: ResNeXt's 32 groups
    /// of 4 (clustered 4 at a time) and of 8, groups of odd widths that fill no panel, a
    /// stride, a batch and enough rows for several bands.
    #[test]
    fn grouped_conv_matches_candle_conv2d() {
        let cases = [
            // (n, c_in, h, w, c_out, groups, stride)
            (1, 128, 9, 7, 128, 32, 1),
            (2, 256, 6, 5, 256, 32, 2),
            (1, 24, 9, 11, 24, 4, 1),
            (1, 12, 5, 3, 12, 3, 2),
            (2, 64, 23, 21, 64, 8, 1),
            // ResNeXt's stages 3 and 4: groups of 16 and of 32 channels.
            (1, 64, 7, 9, 64, 4, 1),
            (2, 128, 5, 6, 128, 4, 2),
            // Groups of 2 and 1 (depthwise).
            (1, 32, 6, 5, 32, 16, 1),
            (1, 16, 6, 5, 16, 16, 2),
        ];
        for (i, &(n, c, h, w, o, groups, s)) in cases.iter().enumerate() {
            let x = noise(&[n, c, h, w], i as u32 + 400);
            let weight = noise(&[o, c / groups, 3, 3], i as u32 + 500);
            let bias = noise(&[o], i as u32 + 600);
            let config = candle_nn::Conv2dConfig {
                padding: 1,
                stride: s,
                groups,
                ..Default::default()
            };
            let want = candle_nn::Conv2d::new(weight.clone(), Some(bias.clone()), config)
                .forward(&x)
                .unwrap()
                .relu()
                .unwrap();
            let flat = weight.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let packed = PackedConv::grouped(
                &flat,
                &vec![1.0; o],
                (o, c, 3),
                groups,
                bias.to_vec1::<f32>().unwrap(),
                s,
                1,
                Format::F32,
            );
            assert_eq!(packed.groups, groups, "case {i}");
            let x_nhwc = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            // The direct kernel where it applies (AVX-512 or AVX2, groups dividing or filling
            // 16 channels), and the clusters everywhere.
            let clustered = PackedConv {
                direct: None,
                ..packed.clone()
            };
            let direct = packed.direct.is_some();
            for (path, conv) in [("direct", &packed), ("clusters", &clustered)] {
                if path == "direct" && !direct {
                    continue;
                }
                let got = conv
                    .forward(&x_nhwc, None, true)
                    .unwrap()
                    .permute((0, 3, 1, 2))
                    .unwrap();
                assert_eq!(got.dims(), want.dims(), "case {i} {path}");
                let d = max_abs_diff(&got, &want);
                assert!(d < 1e-4, "case {i} {path}: off by {d}");
            }
            let kernel = super::super::packed_gemm::F32Kernel::detect();
            let narrow =
                (c / groups) < 16 || kernel == Some(super::super::packed_gemm::F32Kernel::Avx512);
            let applies = kernel.is_some()
                && narrow
                && c == o
                && (16 % (c / groups) == 0 || (c / groups) % 16 == 0)
                && o % 16 == 0;
            assert_eq!(
                direct, applies,
                "case {i}: the direct kernel where it applies"
            );
        }
    }

    #[test]
    fn groups_are_clustered_to_fill_whole_panels() {
        // ResNeXt-50 32x4d's stages: 4, 8, 16, 32 output channels a group.
        assert_eq!(groups_per_cluster(32, 4), 4);
        assert_eq!(groups_per_cluster(32, 8), 2);
        assert_eq!(groups_per_cluster(32, 16), 1);
        assert_eq!(groups_per_cluster(64, 4), 4, "101_64x4d");
        // No cluster fills whole panels: the fewest groups that fill one.
        assert_eq!(groups_per_cluster(4, 6), 4);
        assert_eq!(groups_per_cluster(3, 4), 3);
    }
}
