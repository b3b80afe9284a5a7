//! The engine the CLI and the UI worker share: a loaded ResNet that turns an image into its
//! top-k predictions (named by its [`Classes`]) and their raw CAMs in one forward pass.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{D, Device, Tensor};
use image::RgbImage;

use super::cam::CamGrid;
use super::cam_methods::{CamMethod, ClassHead, FeatureMap, class_map, score_cam_classes};
use super::classes::{Classes, ClassesError};
use super::kernels::packed_gemm::{self, Bf16Kernel, Format};
use super::model_dir::{self, ModelDescription, ModelError};
use super::preprocess::{self, Prepared, ResizeMode};
use super::resnet::ResNet;
use super::weights::{Arch, WeightError};

/// One ranked class.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// 1-based rank.
    pub rank: usize,
    /// Class index (the classifier's output).
    pub index: usize,
    /// The class's name in the model's [`Classes`].
    pub label: String,
    /// Softmax probability.
    pub prob: f32,
}

/// Everything one forward pass tells about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The top classes, best first.
    pub top: Vec<Prediction>,
    /// The raw CAM of each entry of `top`, in the same order.
    pub cams: Vec<CamGrid>,
    /// Size of the network input (width, height).
    pub input: (u32, u32),
    /// Where the input lies in the original image.
    pub region: preprocess::Region,
    /// Time spent in the forward pass and CAMs.
    pub elapsed: Duration,
}

/// Why a model file or folder gives no classifier.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read as weights at all; its error names the file.
    #[error(transparent)]
    File(#[from] WeightError),
    /// The folder, its config or its tensors make no ResNet camview runs; the error names
    /// the file.
    #[error(transparent)]
    Model(ModelError),
    /// The file reads, but its tensors do not make the ResNet they seemed to.
    #[error("{} is not a usable ResNet", .path.display())]
    NotResNet {
        path: PathBuf,
        // Boxed, as the path beside it would make every `Result` of a load too large.
        #[source]
        source: Box<WeightError>,
    },
}

/// Why a forward pass gave no analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("class {class} does not exist: the model has {classes} classes (0–{last})", last = .classes - 1)]
    NoSuchClass { class: usize, classes: usize },
    #[error("{images} images but {pinned} pinned classes: a batch needs one per image")]
    PinnedPerImage { images: usize, pinned: usize },
    #[error(
        "{method} runs a forward pass for each feature channel: its maps come from \
         `Classifier::method_maps`, not from one pass"
    )]
    NeedsPassesOfItsOwn { method: &'static str },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl From<ModelError> for LoadError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Weights(e) => Self::File(e),
            e => Self::Model(e),
        }
    }
}

/// A ResNet ready to classify, on one device.
#[derive(Debug)]
pub struct Classifier {
    model: ResNet,
    device: Device,
    format: Format,
    description: ModelDescription,
}

impl Classifier {
    /// Loads the model at `path`: a checkpoint file or a model folder (see
    /// [`model_dir::open`]). The stride layout is what the folder or file declares, else
    /// `arch`, else v1.5 (the layout of torchvision, timm and transformers files).
    pub fn load(path: &Path, arch: Option<Arch>, device: Device) -> Result<Self, LoadError> {
        Self::load_as(path, arch, device, Format::F32)
    }

    /// [`Self::load`] with the CPU's weights in `format` (see [`Precision::format`]).
    pub fn load_as(
        path: &Path,
        arch: Option<Arch>,
        device: Device,
        format: Format,
    ) -> Result<Self, LoadError> {
        let (description, weights) = model_dir::open(path, arch)?;
        let format = if device.is_cpu() { format } else { Format::F32 };
        let model = ResNet::from_architecture(&weights, &description.architecture, &device, format)
            .map_err(|source| LoadError::NotResNet {
                path: path.to_path_buf(),
                source: Box::new(source),
            })?;
        Ok(Self {
            model,
            device,
            format,
            description,
        })
    }

    /// What was loaded: the architecture, the class names and the preprocessing, each with
    /// where it came from.
    pub fn description(&self) -> &ModelDescription {
        &self.description
    }

    /// The names of the model's classes.
    pub fn classes(&self) -> &Classes {
        &self.description.classes
    }

    /// Names the classes with `classes` (a `--classes` file, an ImageFolder's folders): as
    /// many as the head has, else an error naming both numbers.
    pub fn set_classes(&mut self, classes: Classes) -> Result<(), ClassesError> {
        self.description.classes = classes.checked(self.model.classes())?;
        Ok(())
    }

    /// Replaces the model's preprocessing (`--mean`, `--std`).
    pub fn set_preprocessing(&mut self, preprocessing: preprocess::Preprocessing) {
        self.description.preprocessing = preprocessing;
    }

    /// Where and in what precision the network runs, for status lines: `cpu`, `cpu bf16`,
    /// `cuda:0`.
    pub fn describe(&self) -> String {
        let device = device_name(&self.device);
        match self.format {
            Format::F32 => device,
            _ => format!("{device} {}", self.precision_name()),
        }
    }

    /// `f32`, `bf16`, or `bf16-emulated` (see [`BF16_EMULATE_ENV`]).
    pub fn precision_name(&self) -> &'static str {
        match self.format {
            Format::F32 => "f32",
            Format::Bf16(Bf16Kernel::Native) => "bf16",
            Format::Bf16(Bf16Kernel::Emulated) => "bf16-emulated",
        }
    }

    /// Which CPU kernel multiplies: `avx512`, `avx2` or `portable` in f32, `avx512bf16` or
    /// `emulated` in bf16; `none` on a GPU.
    pub fn kernel_name(&self) -> &'static str {
        if !self.device.is_cpu() {
            return "none";
        }
        match self.format {
            Format::F32 => packed_gemm::F32Kernel::detect().map_or("portable", |k| k.name()),
            Format::Bf16(Bf16Kernel::Native) => "avx512bf16",
            Format::Bf16(Bf16Kernel::Emulated) => "emulated",
        }
    }

    pub fn model(&self) -> &ResNet {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Resizes and normalises `img` as the model's preprocessing says, for this classifier's
    /// device.
    pub fn prepare(&self, img: &RgbImage, mode: ResizeMode) -> candle_core::Result<Prepared> {
        preprocess::prepare_for(img, mode, &self.description.preprocessing, &self.device)
    }

    /// Runs the network on a prepared image and returns its `k` best classes with CAMs; a
    /// `pinned` class outside the top `k` is appended with its true rank.
    pub fn analyze(
        &self,
        prepared: &Prepared,
        k: usize,
        pinned: Option<usize>,
    ) -> Result<Analysis, AnalyzeError> {
        self.analyze_by(prepared, k, pinned, CamMethod::Cam)
    }

    /// [`Self::analyze`] with the maps of `method` (any method without passes of its own), from
    /// the same forward pass.
    pub fn analyze_by(
        &self,
        prepared: &Prepared,
        k: usize,
        pinned: Option<usize>,
        method: CamMethod,
    ) -> Result<Analysis, AnalyzeError> {
        if method.needs_forward_passes() {
            return Err(AnalyzeError::NeedsPassesOfItsOwn {
                method: method.name(),
            });
        }
        let start = Instant::now();
        let out = self.model.forward(&prepared.tensor)?;
        let top = self.top_k_of(&out.logits, k, pinned)?;
        let cams = self
            .maps_by(&out.logits, &out.features, &top, &[method])?
            .pop()
            .unwrap_or_default();
        Ok(Analysis {
            top,
            cams,
            input: prepared.input,
            region: prepared.region,
            elapsed: start.elapsed(),
        })
    }

    /// Runs the network once on a batch of prepared images of one input size, then gives
    /// each its analysis as [`Classifier::analyze`] would; each image's `elapsed` is its share
    /// of the batch's time. A batch reads each weight once for all its images.
    pub fn analyze_batch(
        &self,
        prepared: &[&Prepared],
        k: usize,
        pinned: &[Option<usize>],
        method: CamMethod,
    ) -> Result<Vec<Analysis>, AnalyzeError> {
        let by_method = self.analyze_batch_methods(prepared, k, pinned, &[method])?;
        Ok(by_method.into_iter().flatten().collect())
    }

    /// [`Self::analyze_batch`] for several methods at once (none with passes of its own): one
    /// forward pass, then each image's analysis by each method, in the order of `methods`
    /// (the same classes, each method's maps).
    pub fn analyze_batch_methods(
        &self,
        prepared: &[&Prepared],
        k: usize,
        pinned: &[Option<usize>],
        methods: &[CamMethod],
    ) -> Result<Vec<Vec<Analysis>>, AnalyzeError> {
        if prepared.len() != pinned.len() {
            return Err(AnalyzeError::PinnedPerImage {
                images: prepared.len(),
                pinned: pinned.len(),
            });
        }
        if let Some(m) = methods.iter().find(|m| m.needs_forward_passes()) {
            return Err(AnalyzeError::NeedsPassesOfItsOwn { method: m.name() });
        }
        let start = Instant::now();
        let tensors: Vec<&Tensor> = prepared.iter().map(|p| &p.tensor).collect();
        let out = self.model.forward(&Tensor::cat(&tensors, 0)?)?;
        let mut analyses = Vec::with_capacity(prepared.len());
        for (i, (p, &pin)) in prepared.iter().zip(pinned).enumerate() {
            let logits = out.logits.narrow(0, i, 1)?;
            let features = out.features.narrow(0, i, 1)?;
            let top = self.top_k_of(&logits, k, pin)?;
            let maps = self.maps_by(&logits, &features, &top, methods)?;
            analyses.push(
                maps.into_iter()
                    .map(|cams| Analysis {
                        top: top.clone(),
                        cams,
                        input: p.input,
                        region: p.region,
                        elapsed: Duration::ZERO,
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let share = start.elapsed() / prepared.len().max(1) as u32;
        for a in analyses.iter_mut().flatten() {
            a.elapsed = share;
        }
        Ok(analyses)
    }

    /// The raw maps of `method` for `classes` of one prepared image (CAM's are what
    /// [`Self::analyze`] gives). All but Score-CAM come from one forward pass; Score-CAM adds
    /// a pass a feature channel (for all `classes` at once), `batch` at a time, calling
    /// `progress(done, total)` after each batch: `Break` stops it and gives `None`.
    pub fn method_maps(
        &self,
        prepared: &Prepared,
        classes: &[usize],
        method: CamMethod,
        batch: usize,
        progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Option<Vec<CamGrid>>, AnalyzeError> {
        let read = self.read_back(prepared)?;
        if method.needs_forward_passes() {
            return self.score_cam_maps(prepared, &read, classes, batch, progress);
        }
        let mut maps = Vec::with_capacity(classes.len());
        for &class in classes {
            maps.extend(self.closed_form_map(&read, class, method)?);
        }
        Ok(Some(maps))
    }

    /// One forward pass of a prepared image, its last-stage features and logits read back:
    /// what the CAM family's maps are made from, so that a caller who keeps it makes any
    /// closed-form map without another pass.
    pub fn read_back(&self, prepared: &Prepared) -> Result<ReadBack, AnalyzeError> {
        let out = self.model.forward(&prepared.tensor)?;
        Ok(ReadBack::of(&out.features, &out.logits)?)
    }

    /// Score-CAM's raw maps of `classes` of the image `prepared` whose pass `read` is: one
    /// set of masked passes, `batch` at a time, scores every class; `progress` as in
    /// [`Self::method_maps`].
    pub fn score_cam_maps(
        &self,
        prepared: &Prepared,
        read: &ReadBack,
        classes: &[usize],
        batch: usize,
        progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>,
    ) -> Result<Option<Vec<CamGrid>>, AnalyzeError> {
        if let Some(&class) = classes.iter().find(|&&c| c >= read.logits.len()) {
            return Err(AnalyzeError::NoSuchClass {
                class,
                classes: read.logits.len(),
            });
        }
        let forward = |x: &Tensor| Ok(self.model.forward(x)?.logits);
        Ok(score_cam_classes(
            &prepared.tensor,
            &read.map(),
            classes,
            batch,
            forward,
            progress,
        )?)
    }

    /// Top-`k` (plus `pinned`) from one image's logits (1 × classes).
    fn top_k_of(
        &self,
        logits: &Tensor,
        k: usize,
        pinned: Option<usize>,
    ) -> Result<Vec<Prediction>, AnalyzeError> {
        let probs = candle_nn::ops::softmax(logits, D::Minus1)?
            .squeeze(0)?
            .to_vec1::<f32>()?;
        if let Some(class) = pinned
            && class >= probs.len()
        {
            return Err(AnalyzeError::NoSuchClass {
                class,
                classes: probs.len(),
            });
        }
        let classes = self.classes();
        let mut top = top_k_named(&probs, k, classes);
        if let Some(class) = pinned
            && !top.iter().any(|p| p.index == class)
        {
            top.push(prediction(&probs, class, classes));
        }
        Ok(top)
    }

    /// The raw maps of `top`'s classes by each of `methods` (none with passes of its own)
    /// from one image's logits (1 × classes) and last-stage features (1 × channels × h × w):
    /// CAM's on the device, the others' from one read-back of the features.
    fn maps_by(
        &self,
        logits: &Tensor,
        features: &Tensor,
        top: &[Prediction],
        methods: &[CamMethod],
    ) -> Result<Vec<Vec<CamGrid>>, AnalyzeError> {
        let mut read = None;
        let mut maps = Vec::with_capacity(methods.len());
        for &method in methods {
            if method == CamMethod::Cam {
                maps.push(self.cams_of(features, top)?);
                continue;
            }
            if read.is_none() {
                read = Some(ReadBack::of(features, logits)?);
            }
            let read = read.as_ref().expect("read back above");
            let mut cams = Vec::with_capacity(top.len());
            for p in top {
                match self.closed_form_map(read, p.index, method)? {
                    Some(map) => cams.push(map),
                    None => {
                        return Err(AnalyzeError::NeedsPassesOfItsOwn {
                            method: method.name(),
                        });
                    }
                }
            }
            maps.push(cams);
        }
        Ok(maps)
    }

    /// CAM's raw maps of `top`'s classes, through the device's matmul.
    fn cams_of(&self, features: &Tensor, top: &[Prediction]) -> Result<Vec<CamGrid>, AnalyzeError> {
        let classes: Vec<u32> = top.iter().map(|p| p.index as u32).collect();
        let cams = self.model.cams(features, &classes)?;
        let (n, h, w) = cams.dims3()?;
        let flat = cams.flatten_all()?.to_vec1::<f32>()?;
        Ok((0..n)
            .map(|i| CamGrid {
                width: w,
                height: h,
                values: flat[i * h * w..(i + 1) * h * w].to_vec(),
            })
            .collect())
    }
}

impl Classifier {
    /// Class `class`'s map by `method` from one image's read-back pass; `None` for a method
    /// that needs passes of its own (Score-CAM).
    pub fn closed_form_map(
        &self,
        read: &ReadBack,
        class: usize,
        method: CamMethod,
    ) -> Result<Option<CamGrid>, AnalyzeError> {
        let Some(&logit) = read.logits.get(class) else {
            return Err(AnalyzeError::NoSuchClass {
                class,
                classes: read.logits.len(),
            });
        };
        let weights = self.model.fc_weight().get(class)?.to_vec1::<f32>()?;
        let head = ClassHead {
            weights: &weights,
            logit,
        };
        Ok(class_map(method, &read.map(), head))
    }
}

/// One image's last-stage features (channel-major) and logits, read back from the device for
/// the CAM family's arithmetic ([`Classifier::read_back`]).
#[derive(Debug, Clone)]
pub struct ReadBack {
    channels: usize,
    height: usize,
    width: usize,
    features: Vec<f32>,
    logits: Vec<f32>,
}

impl ReadBack {
    /// From features 1 × channels × h × w and logits 1 × classes.
    fn of(features: &Tensor, logits: &Tensor) -> candle_core::Result<Self> {
        let (_, channels, height, width) = features.dims4()?;
        Ok(Self {
            channels,
            height,
            width,
            features: features.flatten_all()?.to_vec1()?,
            logits: logits.flatten_all()?.to_vec1()?,
        })
    }

    /// The features as the CAM family reads them.
    pub fn map(&self) -> FeatureMap<'_> {
        FeatureMap::new(self.channels, self.height, self.width, &self.features)
    }
}

/// Whether class `a` ranks above class `b`: more probable, ties to the lower index.
fn ranks_above(probs: &[f32], a: usize, b: usize) -> bool {
    probs[a] > probs[b] || (probs[a] == probs[b] && a < b)
}

/// The `k` most probable classes, best first (ties keep the lower index first), named as
/// ImageNet's when there are 1000 of them.
pub fn top_k(probs: &[f32], k: usize) -> Vec<Prediction> {
    top_k_named(probs, k, &Classes::for_head(probs.len()))
}

/// The `k` most probable classes, best first (ties keep the lower index first), named by
/// `classes`.
pub fn top_k_named(probs: &[f32], k: usize, classes: &Classes) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| prediction(probs, index, classes))
        .collect()
}

/// Class `index` with its true rank among all classes.
fn prediction(probs: &[f32], index: usize, classes: &Classes) -> Prediction {
    let above = (0..probs.len())
        .filter(|&other| ranks_above(probs, other, index))
        .count();
    Prediction {
        rank: above + 1,
        index,
        label: classes.label(index),
        prob: probs[index],
    }
}

/// Where the forward pass runs, as the user chose it (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The first CUDA GPU when camview was built with CUDA and one is there, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

/// A `--device` that names no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a device: auto, cpu, cuda or cuda:N")]
pub struct NotADevice(String);

/// Why the chosen device cannot run the network; each message says what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "this camview was built without CUDA: build it with `cargo build --release \
         --features cuda` (README → GPU), or use --device cpu"
    )]
    NoCuda,
    /// `why` is the first line of candle's message, which carries a backtrace after it.
    #[error("cannot use CUDA device {ordinal}: {why} (try --device cpu)")]
    Cuda { ordinal: usize, why: String },
}

impl std::str::FromStr for DeviceChoice {
    type Err = NotADevice;

    /// `auto`, `cpu`, `cuda` (the first GPU) or `cuda:N`.
    fn from_str(s: &str) -> Result<Self, NotADevice> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| NotADevice(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceChoice {
    /// The device, or why it cannot be had (in words that say what to do).
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            Self::Auto => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !candle_core::utils::cuda_is_available() => Err(DeviceError::NoCuda),
            Self::Cuda(ordinal) => Device::new_cuda(ordinal).map_err(|e| DeviceError::Cuda {
                ordinal,
                why: e
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }),
        }
    }
}

/// The arithmetic of the CPU's forward pass, as the user chose it (`--precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Precision {
    /// 32-bit floats throughout.
    #[default]
    F32,
    /// bfloat16 weights and activations into each product, summed in f32 (AVX512_BF16).
    Bf16,
}

/// Set to `1` to run `--precision bf16` on CPUs without AVX512_BF16, in plain f32 arithmetic
/// on the same bfloat16 values: several times slower, for checking its numbers anywhere.
pub const BF16_EMULATE_ENV: &str = "CAMVIEW_BF16_EMULATE";

impl Precision {
    /// The weight format that runs this precision on `device`, and a one-line note when it
    /// cannot and f32 runs instead.
    pub fn format(self, device: &Device) -> (Format, Option<String>) {
        match self {
            Self::F32 => (Format::F32, None),
            Self::Bf16 if !device.is_cpu() => (
                Format::F32,
                Some(format!(
                    "bf16 runs on the CPU only: {} runs in f32",
                    device_name(device)
                )),
            ),
            Self::Bf16 if packed_gemm::bf16_native_agrees_with_emulation() => {
                (Format::Bf16(Bf16Kernel::Native), None)
            }
            Self::Bf16 if packed_gemm::bf16_kernel_available() => (
                Format::F32,
                Some("the bf16 kernel failed its check on this CPU (please report it): running in f32".into()),
            ),
            Self::Bf16 if std::env::var_os(BF16_EMULATE_ENV).is_some_and(|v| v == "1") => {
                (Format::Bf16(Bf16Kernel::Emulated), None)
            }
            Self::Bf16 => (
                Format::F32,
                Some(
                    "bf16 needs a CPU with AVX512_BF16, which this one lacks: running in f32"
                        .into(),
                ),
            ),
        }
    }
}

/// A short name of `device` for status lines: `cpu`, `cuda:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".to_string(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;

    #[test]
    fn devices_are_named_as_on_the_command_line() {
        for name in ["auto", "cpu", "cuda:0", "cuda:3"] {
            assert_eq!(name.parse::<DeviceChoice>().unwrap().to_string(), name);
        }
        assert_eq!("cuda".parse(), Ok(DeviceChoice::Cuda(0)));
        assert!("gpu".parse::<DeviceChoice>().is_err());
        assert!("cuda:x".parse::<DeviceChoice>().is_err());
        assert!(matches!(DeviceChoice::Cpu.open(), Ok(Device::Cpu)));
        if !candle_core::utils::cuda_is_available() {
            let e = DeviceChoice::Cuda(0).open().unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
            assert!(matches!(DeviceChoice::Auto.open(), Ok(Device::Cpu)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_are_true_ranks_with_ties_to_the_lower_index() {
        let probs = [0.1, 0.4, 0.1, 0.3, 0.1];
        let top: Vec<(usize, usize)> = top_k(&probs, 3).iter().map(|p| (p.rank, p.index)).collect();
        assert_eq!(top, [(1, 1), (2, 3), (3, 0)]);
        // Outside the top 3, a class keeps its place in the full ranking.
        let classes = Classes::numbered(probs.len());
        assert_eq!(prediction(&probs, 4, &classes).rank, 5);
        assert_eq!(prediction(&probs, 2, &classes).rank, 4);
        assert_eq!(prediction(&probs, 1, &classes).rank, 1);
        assert_eq!(
            top_k(&probs, 1)[0].label,
            "class 1",
            "not ImageNet's goldfish"
        );
    }
}
