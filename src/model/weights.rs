//! Weight files: reading safetensors and PyTorch `.pth` state dicts with torchvision names,
//! knowing their stride layout, and writing safetensors atomically with that layout recorded.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

/// The weights in a folder that has a `models/` (a checkout of camview), relative to it.
pub const LOCAL_WEIGHTS: &str = "models/resnet50.safetensors";
/// Environment variable that overrides the default location (the older name of
/// [`MODEL_ENV`], still read).
pub const WEIGHTS_ENV: &str = "CAMVIEW_WEIGHTS";
/// Environment variable that names the model (a checkpoint file or a model folder).
pub const MODEL_ENV: &str = "CAMVIEW_MODEL";
/// Safetensors metadata key in which camview records the layout of a file it writes.
pub const ARCH_KEY: &str = "architecture";

/// Where the stride-2 of the first block of layers 2–4 sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum Arch {
    /// Original MSRA / Keras ResNet-50: stride on the first 1×1 conv.
    #[value(name = "resnet50-v1")]
    #[serde(rename = "resnet50-v1")]
    V1,
    /// torchvision / timm ResNet-50: stride on the 3×3 conv.
    #[value(name = "resnet50-v1.5")]
    #[serde(rename = "resnet50-v1.5")]
    V1_5,
}

impl Arch {
    /// The name used on the command line and in file metadata.
    pub fn name(self) -> &'static str {
        match self {
            Arch::V1 => "resnet50-v1",
            Arch::V1_5 => "resnet50-v1.5",
        }
    }

    /// Reads a layout from metadata text such as `resnet50-v1 (stride_in_1x1=true …)`.
    pub fn from_metadata(text: &str) -> Option<Self> {
        let first = text.split_whitespace().next()?;
        match first {
            "resnet50-v1" => Some(Arch::V1),
            "resnet50-v1.5" => Some(Arch::V1_5),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong with a weights file; every variant names the file or the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read weights file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors or PyTorch (.pth) weights file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("tensor `{0}` is missing")]
    Missing(String),
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected}")]
    Shape {
        tensor: String,
        expected: String,
        found: Vec<usize>,
    },
    #[error("tensor `{tensor}`")]
    Candle {
        tensor: String,
        #[source]
        source: candle_core::Error,
    },
    /// The tensors make no ResNet camview runs.
    #[error(transparent)]
    NotResNet(#[from] super::architecture::NotResNet),
    #[error("cannot write weights file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The naming scheme a checkpoint's tensors came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    /// torchvision's (and timm's): `conv1`, `layer1.0.conv1`, `fc`.
    #[default]
    Torchvision,
    /// transformers' `ResNetForImageClassification`: `resnet.embedder…`, `classifier.1`;
    /// rewritten into torchvision's when read.
    Transformers,
}

/// A named set of f32 tensors on the CPU, plus the layout the file declared (if any).
#[derive(Debug, Default)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    /// Layout recorded in the file's metadata, if the file says.
    pub declared_arch: Option<Arch>,
    /// The names the file used (the tensors here always have torchvision's).
    pub naming: Naming,
}

impl Weights {
    /// Wraps tensors already in memory.
    /// transformers' ResNet names are rewritten into torchvision's.
    pub fn from_tensors(tensors: HashMap<String, Tensor>, declared_arch: Option<Arch>) -> Self {
        let transformers = tensors
            .keys()
            .any(|n| n.starts_with("resnet.embedder.") || n.starts_with("embedder.embedder."));
        if !transformers {
            return Self {
                tensors,
                declared_arch,
                naming: Naming::Torchvision,
            };
        }
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let name = super::architecture::torchvision_name(&name).unwrap_or(name);
                (name, t)
            })
            .collect();
        Self {
            tensors,
            declared_arch,
            naming: Naming::Transformers,
        }
    }

    /// Whether a tensor of this name is here.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Every tensor's name and shape.
    pub fn shapes(&self) -> super::architecture::Shapes {
        self.tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect()
    }

    /// Reads a `.safetensors` file or a PyTorch `.pth`/`.pt`/`.bin` state dict (chosen by
    /// content, not extension). PyTorch files are read without running any pickle code.
    pub fn load(path: &Path) -> Result<Self, WeightError> {
        let read_err = |source| WeightError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_err)?;
        if file.metadata().map_err(read_err)?.is_dir() {
            return Err(WeightError::Format {
                path: path.to_path_buf(),
                reason: "it is a folder, not a file".into(),
            });
        }
        // Mapped, not read: the tensors are copied out of the page cache once, instead of
        // the whole file first being copied into a buffer of its own.
        // SAFETY: the map is read-only and dropped before this function returns. Were the file
        // truncated meanwhile, reads past its new end would fault; camview itself replaces
        // weights by renaming a new file over them, which leaves a mapped file intact.
        #[allow(unsafe_code)]
        let bytes = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
        let format_err = |reason: String| WeightError::Format {
            path: path.to_path_buf(),
            reason,
        };
        // A PyTorch checkpoint is a zip archive; safetensors starts with a header length.
        let weights = if bytes.starts_with(b"PK\x03\x04") {
            let pairs =
                candle_core::pickle::read_all(path).map_err(|e| format_err(e.to_string()))?;
            let tensors = pairs
                .into_iter()
                .map(|(name, t)| (strip_prefix(&name).to_string(), t))
                .collect();
            Self::from_tensors(tensors, None)
        } else {
            let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
                .map_err(|e| format_err(e.to_string()))?;
            let declared_arch = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get(ARCH_KEY))
                .and_then(|v| Arch::from_metadata(v));
            let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
                .map_err(|e| format_err(e.to_string()))?
                .into_iter()
                .map(|(name, t)| (strip_prefix(&name).to_string(), t))
                .collect();
            Self::from_tensors(tensors, declared_arch)
        };
        Ok(weights)
    }

    /// The tensor `name` as f32, checked against `shape` (an empty `shape` skips the check).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, WeightError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| WeightError::Missing(name.to_string()))?;
        if !shape.is_empty() && t.dims() != shape {
            return Err(WeightError::Shape {
                tensor: name.to_string(),
                expected: format!("{shape:?}"),
                found: t.dims().to_vec(),
            });
        }
        t.to_dtype(DType::F32)
            .map_err(|source| WeightError::Candle {
                tensor: name.to_string(),
                source,
            })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Writes these tensors as safetensors with `arch` (and `extra` entries) in the metadata.
    /// The file appears complete or not at all: it is written beside `path` and renamed.
    pub fn save(&self, path: &Path, arch: Arch, extra: &[(&str, &str)]) -> Result<(), WeightError> {
        let write_err = |source| WeightError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut metadata: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        metadata.insert(ARCH_KEY.into(), arch.name().into());
        let bytes = safetensors_bytes(&self.tensors, metadata).map_err(write_err)?;
        write_atomically(path, &bytes).map_err(write_err)
    }
}

/// Strips wrappers some checkpoints put in front of torchvision names.
fn strip_prefix(name: &str) -> &str {
    ["module.", "model."]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
}

fn safetensors_bytes(
    tensors: &HashMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> std::io::Result<Vec<u8>> {
    let io = |e: candle_core::Error| std::io::Error::other(e.to_string());
    /// A tensor ready to serialise: name, shape, little-endian bytes, dtype.
    type Raw = (String, Vec<usize>, Vec<u8>, safetensors::Dtype);
    let mut data: Vec<Raw> = Vec::new();
    for (name, t) in tensors {
        let (dtype, bytes) = match t.dtype() {
            DType::I64 => (
                safetensors::Dtype::I64,
                t.flatten_all()
                    .map_err(io)?
                    .to_vec1::<i64>()
                    .map_err(io)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            _ => (
                safetensors::Dtype::F32,
                t.to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(io)?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        };
        data.push((name.clone(), t.dims().to_vec(), bytes, dtype));
    }
    data.sort_by(|a, b| a.0.cmp(&b.0));
    let views = data
        .iter()
        .map(|(name, shape, bytes, dtype)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    safetensors::serialize(views, Some(metadata)).map_err(|e| std::io::Error::other(e.to_string()))
}

/// Writes `bytes` to a temporary file in `path`'s folder, syncs it and renames it into place,
/// so an interrupted write never leaves a half file under the final name.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Temporary files are private (0600); the result is an ordinary file.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// The model unless `--model` or `$CAMVIEW_MODEL` say otherwise: `$CAMVIEW_WEIGHTS` when set,
/// else [`default_path`].
pub fn default_model_path() -> PathBuf {
    std::env::var_os(WEIGHTS_ENV).map_or_else(default_path, PathBuf::from)
}

/// Where the weights live unless `--weights` or `$CAMVIEW_WEIGHTS` say otherwise:
/// [`LOCAL_WEIGHTS`] when that file exists or the working directory is a checkout of camview
/// (its tracked `models/README.md` names camview; another project's `models/` does not
/// count), else the user's cache folder (`$XDG_CACHE_HOME/camview/` or `~/.cache/camview/` on
/// Linux, `~/Library/Caches/camview/` on macOS), so an installed camview fetches them once,
/// whichever folder it runs in.
pub fn default_path() -> PathBuf {
    let local = Path::new(LOCAL_WEIGHTS);
    let checkout =
        std::fs::read_to_string("models/README.md").is_ok_and(|readme| readme.contains("camview"));
    if local.exists() || checkout {
        return local.to_path_buf();
    }
    match dirs::cache_dir() {
        Some(cache) => cache.join("camview").join("resnet50.safetensors"),
        None => local.to_path_buf(),
    }
}
