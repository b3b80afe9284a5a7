//! The ResNet family (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
//! ResNeXt, Wide ResNet, timm's `d` variants) in candle, built as a struct so that Class
//! Activation Maps need no second forward pass: `forward` returns both the last stage's feature
//! map and the logits, and `fc_weight` exposes the classifier. Which network it is comes from
//! its tensors ([`Architecture::recognise`]).
//!
//! Tensor names mirror torchvision (`conv1`, `bn1`, `layer1.0.conv1`, …,
//! `layerN.0.downsample.{0,1}`, `fc`; timm's deep stem `conv1.{0,1,3,4,6}` and pooled shortcut
//! `downsample.{1,2}`; transformers' names are rewritten into these when read). Batch norm runs in inference mode; since its statistics
//! are frozen it is folded into the preceding convolution at load time (w' = w·γ/σ,
//! b' = β − μ·γ/σ), which is the same function with one pass over each activation fewer.
//!
//! Two execution paths compute the same function: on the CPU, channels-last (NHWC) with each
//! convolution one GEMM and bias, residual and ReLU fused into it ([`super::kernels::fastconv`]); on
//! other devices (and as a cross-check in tests), candle's NCHW `conv2d`.

use candle_core::{D, DType, Device, Module, Storage, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};
use rayon::prelude::*;

use super::architecture::{Architecture, Block, Shortcut, Stem};
use super::kernels::fastconv::PackedConv;
use super::kernels::nhwc;
use super::kernels::packed_gemm::{Epilogue, Format, PANEL, PackedMatrix};
use super::kernels::parallel::KeepAwake;
use super::weights::{Arch, WeightError, Weights};

/// The batch-norm epsilon of torchvision, timm and transformers (our importer rewrites Keras'
/// 1e-3 into this).
const BN_EPS: f64 = 1e-5;
/// Channels of ImageNet ResNet-50's layer-4 feature map (ResNet-18/34: 512; see
/// [`Architecture::feature_channels`]).
pub const FEATURE_CHANNELS: usize = 2048;
/// Total stride from input pixels to last-stage cells of every torchvision and timm ResNet.
pub const FEATURE_STRIDE: usize = 32;
/// Input pixels the fast path's stem and stages 1–2 take in one pass: a batch of larger
/// total goes through them in groups of whole images.
const PIXELS_PER_PASS: usize = 224 * 224;
/// Groups of [`PIXELS_PER_PASS`] that stages 3–4 take at once: beyond that a batch goes
/// through in parts, so memory stays bounded for any batch size.
const GROUPS_PER_PASS: usize = 16;
/// The smallest input side the network accepts (one layer-4 cell).
pub const MIN_INPUT_SIDE: usize = 32;

/// Output of one forward pass.
#[derive(Debug)]
pub struct Forward {
    /// Last-stage features, N × C × ⌈H/32⌉ × ⌈W/32⌉ (after the last ReLU; C = 2048 for
    /// ResNet-50).
    pub features: Tensor,
    /// Class scores before softmax, N × classes.
    pub logits: Tensor,
}

/// Which execution paths a loaded network can run; each keeps its own copy of the weights
/// (≈ 100 MB), so a network holds only what its device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paths {
    /// The CPU's fast path only, its weights stored in this format.
    Fast(Format),
    /// candle's conv2d only (non-CPU devices).
    Generic,
    /// Both, on the CPU: to compare them.
    Both(Format),
}

impl Paths {
    /// The format of the fast path's weights, if it is loaded.
    fn fast(self) -> Option<Format> {
        match self {
            Self::Fast(format) | Self::Both(format) => Some(format),
            Self::Generic => None,
        }
    }

    fn generic(self) -> bool {
        !matches!(self, Self::Fast(_))
    }
}

/// A convolution with its batch norm folded in, in the forms its network's paths run.
#[derive(Debug)]
struct ConvBn {
    /// candle's NCHW convolution (any device).
    conv: Option<Conv2d>,
    /// The same weights packed for the CPU's channels-last GEMM.
    packed: Option<PackedConv>,
}

/// A convolution's shape: output and input channels, kernel side, groups.
#[derive(Debug, Clone, Copy)]
struct ConvShape {
    out_c: usize,
    in_c: usize,
    kernel: usize,
    groups: usize,
}

impl ConvShape {
    fn new(out_c: usize, in_c: usize, kernel: usize) -> Self {
        Self {
            out_c,
            in_c,
            kernel,
            groups: 1,
        }
    }
}

impl ConvBn {
    fn load(
        w: &Weights,
        (conv, bn): (&str, &str),
        shape: ConvShape,
        stride: usize,
        paths: Paths,
    ) -> Result<Self, WeightError> {
        let ConvShape {
            out_c,
            in_c,
            kernel: k,
            groups,
        } = shape;
        let padding = k / 2;
        let weight = w.get(&format!("{conv}.weight"), &[out_c, in_c / groups, k, k])?;
        let gamma = w.get(&format!("{bn}.weight"), &[out_c])?;
        let beta = w.get(&format!("{bn}.bias"), &[out_c])?;
        let mean = w.get(&format!("{bn}.running_mean"), &[out_c])?;
        let var = w.get(&format!("{bn}.running_var"), &[out_c])?;
        let candle_err = |source| WeightError::Candle {
            tensor: conv.to_string(),
            source,
        };
        let values = |t: &Tensor| t.to_vec1::<f32>().map_err(candle_err);
        let (gamma, beta, mean, var) = (
            values(&gamma)?,
            values(&beta)?,
            values(&mean)?,
            values(&var)?,
        );
        // Batch norm as a scale per output channel, in f64: the packers fold it in as they
        // copy, so folding adds no rounding (and no copy) of its own.
        let scale: Vec<f64> = gamma
            .iter()
            .zip(&var)
            .map(|(&g, &v)| f64::from(g) / (f64::from(v) + BN_EPS).sqrt())
            .collect();
        let bias: Vec<f32> = (0..out_c)
            .map(|o| (f64::from(beta[o]) - f64::from(mean[o]) * scale[o]) as f32)
            .collect();
        // The weight is read where it lies, in the loaded tensor's storage.
        let (storage, layout) = weight.storage_and_layout();
        let raw = match (&*storage, layout.contiguous_offsets()) {
            (Storage::Cpu(cpu), Some((start, end))) => {
                &cpu.as_slice::<f32>().map_err(candle_err)?[start..end]
            }
            _ => {
                return Err(candle_err(candle_core::Error::Msg(
                    "weights must be contiguous on the CPU".into(),
                )));
            }
        };
        let packed = paths.fast().map(|format| {
            let shape = (out_c, in_c, k);
            PackedConv::grouped(
                raw,
                &scale,
                shape,
                groups,
                bias.clone(),
                stride,
                padding,
                format,
            )
        });
        let conv = if !paths.generic() {
            None
        } else {
            let config = Conv2dConfig {
                padding,
                stride,
                groups,
                ..Default::default()
            };
            let per_output = in_c / groups * k * k;
            let folded: Vec<f32> = raw
                .chunks_exact(per_output)
                .zip(&scale)
                .flat_map(|(row, &s)| row.iter().map(move |&v| (f64::from(v) * s) as f32))
                .collect();
            let weight = Tensor::from_vec(folded, (out_c, in_c / groups, k, k), &Device::Cpu)
                .map_err(candle_err)?;
            let bias = Tensor::from_vec(bias, out_c, &Device::Cpu).map_err(candle_err)?;
            Some(Conv2d::new(weight, Some(bias), config))
        };
        Ok(Self { conv, packed })
    }

    fn to_device(&self, device: &Device) -> candle_core::Result<Self> {
        let conv = self.generic()?;
        let weight = conv.weight().to_device(device)?;
        let bias = conv.bias().map(|b| b.to_device(device)).transpose()?;
        Ok(Self {
            conv: Some(Conv2d::new(weight, bias, *conv.config())),
            packed: None,
        })
    }

    fn fast(&self) -> candle_core::Result<&PackedConv> {
        self.packed
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("the fast path was not loaded".into()))
    }

    fn generic(&self) -> candle_core::Result<&Conv2d> {
        self.conv
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("the conv2d path was not loaded".into()))
    }
}

/// Where a block starts, as its stage gives it.
struct BlockSpec {
    prefix: String,
    in_c: usize,
    width: usize,
    out_c: usize,
    stride: usize,
}

/// A block's shortcut where it changes the shape: a 1×1 convolution, after a 2×2 average pool
/// in timm's `avg_down` blocks that stride.
#[derive(Debug)]
struct Downsample {
    pool: bool,
    conv: ConvBn,
}

/// A residual block: its convolutions in order (basic: 3×3, 3×3; bottleneck: 1×1 reduce, 3×3,
/// 1×1 expand), ReLU after each, the last one's after adding the shortcut.
#[derive(Debug)]
struct Residual {
    convs: Vec<ConvBn>,
    downsample: Option<Downsample>,
}

impl Residual {
    fn load(
        w: &Weights,
        spec: &BlockSpec,
        arch: &Architecture,
        paths: Paths,
    ) -> Result<Self, WeightError> {
        let BlockSpec {
            prefix,
            in_c,
            width,
            out_c,
            stride,
        } = spec;
        let (in_c, width, out_c, stride) = (*in_c, *width, *out_c, *stride);
        let conv_bn = |i: usize, shape, stride| {
            let (conv, bn) = (format!("{prefix}.conv{i}"), format!("{prefix}.bn{i}"));
            ConvBn::load(w, (&conv, &bn), shape, stride, paths)
        };
        let convs = match arch.block {
            Block::Basic => vec![
                conv_bn(1, ConvShape::new(width, in_c, 3), stride)?,
                conv_bn(2, ConvShape::new(out_c, width, 3), 1)?,
            ],
            Block::Bottleneck => {
                // v1 (the original MSRA / Keras model) strides in the first 1×1 conv; v1.5
                // (torchvision, timm) strides in the 3×3, which keeps more information.
                let (reduce_stride, spatial_stride) = match arch.layout {
                    Arch::V1 => (stride, 1),
                    Arch::V1_5 => (1, stride),
                };
                let spatial = ConvShape {
                    groups: arch.groups,
                    ..ConvShape::new(width, width, 3)
                };
                vec![
                    conv_bn(1, ConvShape::new(width, in_c, 1), reduce_stride)?,
                    conv_bn(2, spatial, spatial_stride)?,
                    conv_bn(3, ConvShape::new(out_c, width, 1), 1)?,
                ]
            }
        };
        let downsample = if stride != 1 || in_c != out_c {
            let shape = ConvShape::new(out_c, in_c, 1);
            Some(match arch.shortcut {
                Shortcut::Conv => Downsample {
                    pool: false,
                    conv: ConvBn::load(
                        w,
                        (
                            &format!("{prefix}.downsample.0"),
                            &format!("{prefix}.downsample.1"),
                        ),
                        shape,
                        stride,
                        paths,
                    )?,
                },
                Shortcut::AvgPool => Downsample {
                    pool: stride != 1,
                    conv: ConvBn::load(
                        w,
                        (
                            &format!("{prefix}.downsample.1"),
                            &format!("{prefix}.downsample.2"),
                        ),
                        shape,
                        1,
                        paths,
                    )?,
                },
            })
        } else {
            // A shortcut convolution where the shapes need none would be left out silently.
            if let Some(name) = ["downsample.0.weight", "downsample.1.weight"]
                .iter()
                .map(|t| format!("{prefix}.{t}"))
                .find(|name| w.contains(name))
            {
                return Err(WeightError::Shape {
                    expected: format!(
                        "no shortcut convolution in a block from {in_c} to {out_c} channels at \
                         stride 1"
                    ),
                    found: w.get(&name, &[])?.dims().to_vec(),
                    tensor: name,
                });
            }
            None
        };
        Ok(Self { convs, downsample })
    }

    /// NHWC on the CPU; the residual add and last ReLU ride in the last conv's GEMM.
    fn forward_fast(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let mut y = x.clone();
        for conv in inner {
            y = conv.fast()?.forward(&y, None, true)?;
        }
        let shortcut = match &self.downsample {
            Some(Downsample { pool: true, conv }) => {
                conv.fast()?
                    .forward(&nhwc::avg_pool_2x2_s2_ceil(x)?, None, false)?
            }
            Some(Downsample { pool: false, conv }) => conv.fast()?.forward(x, None, false)?,
            None => x.clone(),
        };
        last.fast()?.forward(&y, Some(&shortcut), true)
    }

    /// NCHW with candle's convolution.
    fn forward_generic(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (last, inner) = self.convs.split_last().expect("a block has convolutions");
        let mut y = x.clone();
        for conv in inner {
            y = conv.generic()?.forward(&y)?.relu()?;
        }
        let y = last.generic()?.forward(&y)?;
        let shortcut = match &self.downsample {
            Some(Downsample { pool: true, conv }) => {
                conv.generic()?.forward(&avg_pool_2x2_s2_ceil(x)?)?
            }
            Some(Downsample { pool: false, conv }) => conv.generic()?.forward(x)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }

    fn convs_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.convs
            .iter_mut()
            .chain(self.downsample.as_mut().map(|d| &mut d.conv))
    }
}

/// Average pooling 2×2/2 in ceil mode, padding not counted, on any device: an odd side is
/// padded by repeating its last row or column, whose average with itself is itself, so a
/// window cut by the edge averages what it covers.
fn avg_pool_2x2_s2_ceil(x: &Tensor) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let x = x.pad_with_same(D::Minus2, 0, h % 2)?;
    let x = x.pad_with_same(D::Minus1, 0, w % 2)?;
    x.avg_pool2d(2)
}

/// The classifier packed for the micro-kernel, its classes padded with zero columns to whole
/// 16-column panels (the width the kernel stores).
#[derive(Debug)]
struct PackedClassifier {
    weight: PackedMatrix,
    bias: Vec<f32>,
    classes: usize,
}

impl PackedClassifier {
    /// From the classes × channels weight and its bias; `None` where the micro-kernel cannot
    /// run (no AVX2 + FMA), and candle's matmul classifies.
    fn new(weight: &Tensor, bias: &Tensor, format: Format) -> candle_core::Result<Option<Self>> {
        let (classes, channels) = weight.dims2()?;
        let padded = classes.next_multiple_of(PANEL);
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        let at = |k: usize, class: usize| w.get(class * channels + k).copied().unwrap_or(0.0);
        let Some(packed) = PackedMatrix::from_fn_in(format, channels, padded, at) else {
            return Ok(None);
        };
        let mut bias = bias.to_vec1::<f32>()?;
        bias.resize(padded, 0.0);
        Ok(Some(Self {
            weight: packed,
            bias,
            classes,
        }))
    }

    /// Logits (N × classes) of the pooled features (N × channels).
    fn classify(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        let (n, channels) = pooled.dims2()?;
        let features = pooled.flatten_all()?.to_vec1::<f32>()?;
        let padded = self.bias.len();
        let mut logits = vec![0f32; n * padded];
        let epilogue = Epilogue {
            bias: &self.bias,
            residual: None,
            relu: false,
        };
        // 8 MB of weights for a few rows: split between the threads, each streams half.
        let bands = rayon::current_num_threads();
        self.weight
            .multiply(&features, channels, &mut logits, epilogue, bands);
        Tensor::from_vec(logits, (n, padded), pooled.device())?
            .narrow(1, 0, self.classes)?
            .contiguous()
    }
}

/// A ResNet with access to its last stage's features and classifier.
#[derive(Debug)]
pub struct ResNet {
    /// The stem's convolutions (one, or timm's deep stem's three), ReLU after each.
    stem: Vec<ConvBn>,
    stages: Vec<Vec<Residual>>,
    fc_weight: Tensor,
    fc_bias: Tensor,
    /// The classifier for the fast path (`None`: candle's matmul).
    fc_packed: Option<PackedClassifier>,
    /// What the fast path stores activations as between layers: bf16 with bfloat16 weights
    /// (half the bytes; the products round their inputs to bfloat16 anyway), else f32.
    activations: DType,
    architecture: Architecture,
}

impl ResNet {
    /// Builds the network that the torchvision-named weights `w` describe, its bottlenecks
    /// laid out as `arch`, holding the weights in the form `device` runs: the fast path on the
    /// CPU, candle's conv2d elsewhere.
    pub fn load(w: &Weights, arch: Arch, device: &Device) -> Result<Self, WeightError> {
        Self::load_as(w, arch, device, Format::F32)
    }

    /// [`Self::load`] with the CPU path's weights stored in `format` (ignored on other
    /// devices).
    pub fn load_as(
        w: &Weights,
        arch: Arch,
        device: &Device,
        format: Format,
    ) -> Result<Self, WeightError> {
        let architecture = Architecture::recognise(&w.shapes(), arch, None)?;
        Self::from_architecture(w, &architecture, device, format)
    }

    /// The network `architecture` from the weights `w`, in `format` on the CPU.
    pub fn from_architecture(
        w: &Weights,
        architecture: &Architecture,
        device: &Device,
        format: Format,
    ) -> Result<Self, WeightError> {
        let paths = if device.is_cpu() {
            Paths::Fast(format)
        } else {
            Paths::Generic
        };
        Self::load_paths(w, architecture, device, paths)
    }

    /// A CPU network that can run both [`Self::forward_fast`] and [`Self::forward_generic`],
    /// to compare them (twice the weight memory).
    pub fn load_with_both_paths(w: &Weights, arch: Arch) -> Result<Self, WeightError> {
        let architecture = Architecture::recognise(&w.shapes(), arch, None)?;
        Self::with_both_paths(w, &architecture)
    }

    /// [`Self::load_with_both_paths`] of a recognised `architecture`.
    pub fn with_both_paths(w: &Weights, architecture: &Architecture) -> Result<Self, WeightError> {
        Self::load_paths(w, architecture, &Device::Cpu, Paths::Both(Format::F32))
    }

    fn load_paths(
        w: &Weights,
        arch: &Architecture,
        device: &Device,
        paths: Paths,
    ) -> Result<Self, WeightError> {
        let stem = match arch.stem {
            Stem::Plain { kernel } => {
                let shape = ConvShape::new(arch.stem_channels, 3, kernel);
                vec![ConvBn::load(w, ("conv1", "bn1"), shape, 2, paths)?]
            }
            Stem::Deep { widths: [a, b] } => vec![
                ConvBn::load(w, ("conv1.0", "conv1.1"), ConvShape::new(a, 3, 3), 2, paths)?,
                ConvBn::load(w, ("conv1.3", "conv1.4"), ConvShape::new(b, a, 3), 1, paths)?,
                ConvBn::load(
                    w,
                    ("conv1.6", "bn1"),
                    ConvShape::new(arch.stem_channels, b, 3),
                    1,
                    paths,
                )?,
            ],
        };
        // Every block is independent: fold and pack them on all cores (load time is a
        // first-frame cost in the UI).
        let mut specs = Vec::new();
        let mut in_c = arch.stem_channels;
        for (stage, &blocks) in arch.depths.iter().enumerate() {
            for block in 0..blocks {
                let stride = if block == 0 { arch.strides[stage] } else { 1 };
                let out_c = arch.outputs[stage];
                let spec = BlockSpec {
                    prefix: format!("layer{}.{block}", stage + 1),
                    in_c,
                    width: arch.widths[stage],
                    out_c,
                    stride,
                };
                specs.push((stage, spec));
                in_c = out_c;
            }
        }
        let loaded = specs
            .par_iter()
            .map(|(stage, spec)| Residual::load(w, spec, arch, paths).map(|b| (*stage, b)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut stages: Vec<Vec<Residual>> =
            arch.depths.iter().map(|&n| Vec::with_capacity(n)).collect();
        for (stage, block) in loaded {
            stages[stage].push(block);
        }
        let classes = arch.classes;
        let fc_weight = w.get("fc.weight", &[classes, arch.feature_channels()])?;
        let fc_bias = w.get("fc.bias", &[classes])?;
        let fc_packed = match paths.fast() {
            None => None,
            Some(format) => {
                PackedClassifier::new(&fc_weight, &fc_bias, format).map_err(|source| {
                    WeightError::Candle {
                        tensor: "fc.weight".into(),
                        source,
                    }
                })?
            }
        };
        let on_device = |t: Tensor, name: &str| {
            t.to_device(device).map_err(|source| WeightError::Candle {
                tensor: name.into(),
                source,
            })
        };
        let mut model = Self {
            stem,
            stages,
            fc_weight: on_device(fc_weight, "fc.weight")?,
            fc_bias: on_device(fc_bias, "fc.bias")?,
            fc_packed,
            activations: match paths.fast() {
                Some(Format::Bf16(_)) => DType::BF16,
                _ => DType::F32,
            },
            architecture: arch.clone(),
        };
        if !device.is_cpu() {
            model.move_convs(device)?;
        }
        Ok(model)
    }

    fn move_convs(&mut self, device: &Device) -> Result<(), WeightError> {
        let mv = |c: &mut ConvBn, name: &str| -> Result<(), WeightError> {
            *c = c.to_device(device).map_err(|source| WeightError::Candle {
                tensor: name.into(),
                source,
            })?;
            Ok(())
        };
        for conv in &mut self.stem {
            mv(conv, "conv1")?;
        }
        for (s, layer) in self.stages.iter_mut().enumerate() {
            for (b, block) in layer.iter_mut().enumerate() {
                let p = format!("layer{}.{b}", s + 1);
                for conv in block.convs_mut() {
                    mv(conv, &p)?;
                }
            }
        }
        Ok(())
    }

    /// Runs the network on `input` (N × 3 × H × W, ImageNet-normalised RGB, any H, W ≥ 1).
    pub fn forward(&self, input: &Tensor) -> candle_core::Result<Forward> {
        if input.device().is_cpu() {
            self.forward_fast(input)
        } else {
            self.forward_generic(input)
        }
    }

    /// The CPU path: channels-last, fused GEMM convolutions (an error on a network loaded for
    /// another device).
    pub fn forward_fast(&self, input: &Tensor) -> candle_core::Result<Forward> {
        // The whole pass runs on a pool thread: each layer's parallel loop then starts from
        // that worker's own queue, with no hand-off to the pool and wake-up of the caller per
        // layer; the pool's other threads spin for work until the pass ends, instead of
        // sleeping between layers and waking late (`kernels::parallel`).
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| {
                let _awake = KeepAwake::start();
                self.forward_fast(input)
            });
        }
        // A batch goes through the stem and stages 1–2 in groups of about one 224² image's
        // pixels: their activations are large and their weights small, and a group's
        // activations stay in the caches between layers. Stages 3–4 are the other way round
        // (at 224², megabytes of weights per layer against less than one of activations per
        // image) and take the whole batch at once, so each weight is read once for all of
        // its images.
        let (n, _, h, w) = input.dims4()?;
        let group = (PIXELS_PER_PASS / (h * w).max(1)).max(1);
        let whole = group * GROUPS_PER_PASS;
        if n > whole {
            let parts = (0..n)
                .step_by(whole)
                .map(|i| self.forward_fast(&input.narrow(0, i, whole.min(n - i))?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            let features: Vec<&Tensor> = parts.iter().map(|p| &p.features).collect();
            let logits: Vec<&Tensor> = parts.iter().map(|p| &p.logits).collect();
            return Ok(Forward {
                features: Tensor::cat(&features, 0)?,
                logits: Tensor::cat(&logits, 0)?,
            });
        }
        let early = |input: &Tensor| -> candle_core::Result<Tensor> {
            // In a block, so the input copy and the stem's output (the largest activation)
            // are freed before stage 1, not kept by shadowing until the end (for the largest
            // inputs it is the biggest buffer of the pass).
            let mut x = {
                let mut y = nhwc::to_channels_last_as(input, self.activations)?;
                for conv in &self.stem {
                    y = conv.fast()?.forward(&y, None, true)?;
                }
                nhwc::max_pool_3x3_s2(&y)?
            };
            for block in self.stages.iter().take(2).flatten() {
                x = block.forward_fast(&x)?;
            }
            Ok(x)
        };
        let mut x = if n > group {
            let parts = (0..n)
                .step_by(group)
                .map(|i| early(&input.narrow(0, i, group.min(n - i))?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&parts, 0)?
        } else {
            early(input)?
        };
        for block in self.stages.iter().skip(2).flatten() {
            x = block.forward_fast(&x)?;
        }
        let logits = self.classify_fast(&nhwc::global_avg_pool(&x)?)?;
        let features = nhwc::to_channels_first(&x)?;
        Ok(Forward { features, logits })
    }

    /// The portable path: candle's NCHW convolutions, on any device (on the CPU, only for a
    /// network from [`Self::load_with_both_paths`]).
    pub fn forward_generic(&self, input: &Tensor) -> candle_core::Result<Forward> {
        let mut x = input.clone();
        for conv in &self.stem {
            x = conv.generic()?.forward(&x)?.relu()?;
        }
        // Max pooling 3×3/2 with padding 1. Inputs are post-ReLU (≥ 0), so zero padding
        // gives the same maxima as the −∞ padding torchvision uses.
        let x = x
            .pad_with_zeros(D::Minus2, 1, 1)?
            .pad_with_zeros(D::Minus1, 1, 1)?;
        let mut x = x.max_pool2d_with_stride(3, 2)?;
        for block in self.stages.iter().flatten() {
            x = block.forward_generic(&x)?;
        }
        let logits = self.classify(&x.mean((2, 3))?)?;
        Ok(Forward {
            features: x,
            logits,
        })
    }

    /// The fc layer on globally pooled features (N × channels → N × classes).
    fn classify(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        pooled
            .matmul(&self.fc_weight.t()?)?
            .broadcast_add(&self.fc_bias)
    }

    /// [`Self::classify`] through the packed GEMM where this CPU has it.
    fn classify_fast(&self, pooled: &Tensor) -> candle_core::Result<Tensor> {
        match &self.fc_packed {
            Some(fc) => fc.classify(pooled),
            None => self.classify(pooled),
        }
    }

    /// Raw class activation maps, `classes.len()` × h × w, for one image's features
    /// (1 × channels × h × w): CAM_c(x, y) = Σ_k w_fc[c, k] · f_k(x, y). No bias, no ReLU.
    pub fn cams(&self, features: &Tensor, classes: &[u32]) -> candle_core::Result<Tensor> {
        let (_, channels, h, w) = features.dims4()?;
        let idx = Tensor::new(classes, features.device())?;
        let rows = self.fc_weight.index_select(&idx, 0)?;
        let flat = features.reshape((channels, h * w))?;
        rows.matmul(&flat)?.reshape((classes.len(), h, w))
    }

    /// The classifier's weights, classes × feature channels (what the CAM family reads).
    pub fn fc_weight(&self) -> &Tensor {
        &self.fc_weight
    }

    /// Which stride layout the network was built with.
    pub fn arch(&self) -> Arch {
        self.architecture.layout
    }

    /// What the network is.
    pub fn architecture(&self) -> &Architecture {
        &self.architecture
    }

    /// Outputs of the classifier.
    pub fn classes(&self) -> usize {
        self.architecture.classes
    }
}

/// Spatial size of the layer-4 map of a torchvision or timm ResNet for an input of `side`
/// pixels: every strided layer rounds up, five of them in total (see
/// [`Architecture::feature_side`] for any other).
pub fn feature_side(side: usize) -> usize {
    let mut s = side;
    // conv1 (7×7/2, pad 3), max pool (3×3/2, pad 1), then layers 2–4 (stride 2 each).
    for _ in 0..5 {
        s = s.div_ceil(2);
    }
    s
}
