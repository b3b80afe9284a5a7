//! A model as the user names it: a checkpoint file (`.safetensors`, `.pth`/`.pt`, `.bin`), or a
//! folder as the hubs lay one out: timm's `save_for_hf` (`config.json` with `architecture`,
//! `label_names`, `pretrained_cfg`) and transformers' `save_pretrained` (`config.json` with
//! `id2label`, `depths`, …, and `preprocessor_config.json`), beside `model.safetensors` or
//! `pytorch_model.bin`. What it finds is a [`ModelDescription`]: the architecture, the class
//! names and the preprocessing, each with where it came from.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::architecture::{Architecture, NotResNet};
use super::classes::{self, ClassSource, Classes, ClassesError};
use super::preprocess::{Interpolation, Preprocessing, Rounding};
use super::weights::{Arch, Naming, WeightError, Weights};

/// The weights files a model folder may hold, in the order they are looked for.
pub const FOLDER_WEIGHTS: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

/// Where a model's description came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A checkpoint file on its own.
    File,
    /// A folder written by timm's `save_for_hf`.
    Timm,
    /// A folder written by transformers' `save_pretrained`.
    Transformers,
}

/// Where a model's preprocessing came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreprocessingSource {
    /// Nothing says: ImageNet's, as for camview's own ResNet-50.
    Default,
    /// The file that says (timm's `config.json`, transformers' `preprocessor_config.json`).
    Config(PathBuf),
}

impl std::fmt::Display for PreprocessingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("ImageNet's, as nothing says otherwise"),
            Self::Config(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What camview found in a model file or folder: everything the engine and the app need to
/// run it and to name its outputs.
#[derive(Debug, Clone)]
pub struct ModelDescription {
    /// The file or folder the user named.
    pub path: PathBuf,
    /// The weights file read.
    pub weights: PathBuf,
    pub origin: Origin,
    /// The names its tensors came in.
    pub naming: Naming,
    /// The model's name in its folder's config (timm's `architecture`), if it has one.
    pub config_name: Option<String>,
    pub architecture: Architecture,
    /// The folder's class names, else ImageNet's for a 1000-class head, else numbers.
    pub classes: Classes,
    pub preprocessing: Preprocessing,
    pub preprocessing_source: PreprocessingSource,
}

/// Why a file or folder gives no model; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The weights cannot be read; the error names the file.
    #[error(transparent)]
    Weights(#[from] WeightError),
    #[error(
        "{} is a folder without {} or {} (camview reads a checkpoint file, or a model folder as \
         timm's save_for_hf or transformers' save_pretrained write it)",
        .0.display(), FOLDER_WEIGHTS[0], FOLDER_WEIGHTS[1]
    )]
    NoWeights(PathBuf),
    #[error("{}: {reason}", .path.display())]
    Config { path: PathBuf, reason: String },
    /// The tensors (or the folder's config) make no ResNet camview runs.
    #[error("{} is not a usable ResNet: {reason}", .path.display())]
    NotResNet { path: PathBuf, reason: NotResNet },
    #[error(transparent)]
    Classes(#[from] ClassesError),
}

/// What a folder's config says besides the tensors.
#[derive(Debug, Default)]
struct ConfigFacts {
    origin: Option<Origin>,
    name: Option<String>,
    /// Not a ResNet by its own account (transformers' `model_type`).
    other_family: Option<String>,
    layout: Option<Arch>,
    strides: Option<Vec<usize>>,
    classes: Option<Classes>,
    preprocessing: Option<(Preprocessing, PathBuf)>,
}

/// Reads the model at `path` (a checkpoint file or a model folder) and recognises it.
/// `layout` is where bottlenecks stride when neither the file nor the folder says (else
/// v1.5, the layout of torchvision, timm and transformers).
pub fn open(path: &Path, layout: Option<Arch>) -> Result<(ModelDescription, Weights), ModelError> {
    let folder = folder_of(path);
    let (weights_path, facts) = match &folder {
        Some(folder) => {
            let weights = FOLDER_WEIGHTS
                .iter()
                .map(|name| folder.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| ModelError::NoWeights(folder.clone()))?;
            (weights, read_folder(folder)?)
        }
        None => (path.to_path_buf(), ConfigFacts::default()),
    };
    let not_resnet = |reason| ModelError::NotResNet {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(found) = facts.other_family.clone() {
        return Err(not_resnet(NotResNet::OtherFamily { found }));
    }
    let weights = Weights::load(&weights_path)?;
    let layout = facts
        .layout
        .or(weights.declared_arch)
        .or(layout)
        .unwrap_or(Arch::V1_5);
    let architecture = Architecture::recognise(&weights.shapes(), layout, facts.strides.as_deref())
        .map_err(|reason| match (reason, &facts.name) {
            // timm says what it is better than a list of tensors does.
            (NotResNet::OtherFamily { .. }, Some(name)) => NotResNet::OtherFamily {
                found: format!("timm's `{name}`"),
            },
            (reason, _) => reason,
        })
        .map_err(not_resnet)?;
    if let Some(name) = &facts.name
        && let Some(why) = unsupported_timm_variant(name)
    {
        return Err(ModelError::NotResNet {
            path: path.to_path_buf(),
            reason: NotResNet::OtherFamily {
                found: format!("timm's `{name}`, {why}"),
            },
        });
    }
    let classes = match facts.classes {
        Some(classes) => classes.checked(architecture.classes)?,
        None => Classes::for_head(architecture.classes),
    };
    let (preprocessing, preprocessing_source) = match facts.preprocessing {
        Some((pre, from)) => (pre, PreprocessingSource::Config(from)),
        None => (Preprocessing::default(), PreprocessingSource::Default),
    };
    let description = ModelDescription {
        path: path.to_path_buf(),
        weights: weights_path,
        origin: facts.origin.unwrap_or(Origin::File),
        naming: weights.naming,
        config_name: facts.name,
        architecture,
        classes,
        preprocessing,
        preprocessing_source,
    };
    Ok((description, weights))
}

/// The model folder `path` names: the folder itself, or the folder of its `model.safetensors`
/// or `pytorch_model.bin` when a `config.json` lies beside it.
fn folder_of(path: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(path.to_path_buf());
    }
    let name = path.file_name()?.to_str()?;
    let parent = path.parent()?;
    (FOLDER_WEIGHTS.contains(&name) && parent.join("config.json").is_file())
        .then(|| parent.to_path_buf())
}

/// timm ResNets whose tensors look plain but whose forward pass is not: anti-aliased
/// (`aa`, `blur`) downsampling.
fn unsupported_timm_variant(name: &str) -> Option<&'static str> {
    let name = name.split('.').next().unwrap_or(name);
    (name.starts_with("resnetaa") || name.contains("blur"))
        .then_some("whose anti-aliased downsampling camview does not run")
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

/// The facts of a folder's `config.json` (and transformers' `preprocessor_config.json`).
fn read_folder(folder: &Path) -> Result<ConfigFacts, ModelError> {
    let config_path = folder.join("config.json");
    if !config_path.is_file() {
        // A folder with weights and nothing else is read as a plain checkpoint.
        return Ok(ConfigFacts::default());
    }
    let config = read_json(&config_path)?;
    let config_err = |reason: String| ModelError::Config {
        path: config_path.clone(),
        reason,
    };
    if config.get("pretrained_cfg").is_some() || config["architecture"].is_string() {
        timm_facts(&config, &config_path).map_err(config_err)
    } else if config.get("model_type").is_some() || config.get("architectures").is_some() {
        transformers_facts(&config, &config_path, folder).map_err(|e| match e {
            FolderError::Config(reason) => config_err(reason),
            FolderError::Model(e) => e,
        })
    } else {
        Err(config_err(
            "neither timm's (`architecture`, `pretrained_cfg`) nor transformers' \
             (`model_type`) config"
                .into(),
        ))
    }
}

/// A preprocessor config's error, or one in `config.json`.
enum FolderError {
    Config(String),
    Model(ModelError),
}

/// Three numbers from a JSON list (a mean or std).
fn triple(value: &Value, what: &str) -> Result<Option<[f64; 3]>, String> {
    if value.is_null() {
        return Ok(None);
    }
    let numbers: Option<Vec<f64>> = value
        .as_array()
        .map(|list| list.iter().map(Value::as_f64).collect::<Option<Vec<_>>>())
        .unwrap_or(None);
    match numbers.as_deref() {
        Some(&[a, b, c]) => Ok(Some([a, b, c])),
        // A single number is one value for all three channels (transformers allows it).
        _ => match value.as_f64() {
            Some(v) => Ok(Some([v; 3])),
            None => Err(format!("`{what}` is {value}, not three numbers")),
        },
    }
}

fn timm_facts(config: &Value, config_path: &Path) -> Result<ConfigFacts, String> {
    let cfg = &config["pretrained_cfg"];
    let mut pre = Preprocessing {
        rounding: Rounding::Torchvision,
        ..Preprocessing::default()
    };
    if let Some(mean) = triple(&cfg["mean"], "pretrained_cfg.mean")? {
        pre.mean = mean;
    }
    if let Some(std) = triple(&cfg["std"], "pretrained_cfg.std")? {
        pre.std = std;
    }
    if let Some(name) = cfg["interpolation"].as_str() {
        pre.interpolation = Interpolation::from_name(name).ok_or_else(|| {
            format!("interpolation `{name}`: camview resizes bilinear or bicubic")
        })?;
    }
    if let Some(crop_pct) = cfg["crop_pct"].as_f64() {
        pre.crop_pct = crop_pct;
    }
    if let Some(side) = cfg["input_size"]
        .as_array()
        .and_then(|s| s.get(1))
        .and_then(Value::as_u64)
    {
        pre.input_size = u32::try_from(side).map_err(|_| format!("input size {side}"))?;
    }
    let classes = match &config["label_names"] {
        Value::Null => None,
        names => {
            let (names, _) = classes::from_json(names).map_err(|e| format!("label_names: {e}"))?;
            // timm's ImageNet folders list WordNet IDs as the names and the words in
            // `label_descriptions`.
            let descriptions = config["label_descriptions"].as_object();
            let source = ClassSource::Config(config_path.to_path_buf());
            Some(match descriptions {
                Some(desc) if names.iter().all(|n| classes::is_wnid(n)) => Classes::new(
                    names
                        .iter()
                        .map(|id| {
                            desc.get(id)
                                .and_then(Value::as_str)
                                .unwrap_or(id)
                                .to_string()
                        })
                        .collect(),
                    Some(names),
                    source,
                ),
                _ => Classes::new(names, None, source),
            })
        }
    };
    Ok(ConfigFacts {
        origin: Some(Origin::Timm),
        name: config["architecture"].as_str().map(str::to_string),
        classes,
        preprocessing: Some((pre, config_path.to_path_buf())),
        ..ConfigFacts::default()
    })
}

fn transformers_facts(
    config: &Value,
    config_path: &Path,
    folder: &Path,
) -> Result<ConfigFacts, FolderError> {
    let model_type = config["model_type"].as_str().unwrap_or_default();
    let architectures = config["architectures"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    if model_type != "resnet" {
        let what = architectures.unwrap_or_else(|| model_type.to_string());
        return Ok(ConfigFacts {
            other_family: Some(format!("a transformers `{what}` model (config.json)")),
            ..ConfigFacts::default()
        });
    }
    let depths = config["depths"].as_array().map_or(4, Vec::len);
    let first = if config["downsample_in_first_stage"].as_bool() == Some(true) {
        2
    } else {
        1
    };
    let strides = (0..depths)
        .map(|s| if s == 0 { first } else { 2 })
        .collect();
    let layout = if config["downsample_in_bottleneck"].as_bool() == Some(true) {
        Arch::V1
    } else {
        Arch::V1_5
    };
    let classes = match &config["id2label"] {
        Value::Object(map) if !map.is_empty() => {
            let (names, _) = classes::from_json(&config["id2label"])
                .map_err(|e| FolderError::Config(format!("id2label: {e}")))?;
            // transformers fills `LABEL_0`, `LABEL_1`, … when no names were given.
            let placeholders = names
                .iter()
                .enumerate()
                .all(|(i, n)| *n == format!("LABEL_{i}"));
            (!placeholders)
                .then(|| Classes::new(names, None, ClassSource::Config(config_path.to_path_buf())))
        }
        _ => None,
    };
    let preprocessor = folder.join("preprocessor_config.json");
    let preprocessing = if preprocessor.is_file() {
        let value = read_json(&preprocessor).map_err(FolderError::Model)?;
        let pre = transformers_preprocessing(&value).map_err(|reason| {
            FolderError::Model(ModelError::Config {
                path: preprocessor.clone(),
                reason,
            })
        })?;
        Some((pre, preprocessor))
    } else {
        None
    };
    Ok(ConfigFacts {
        origin: Some(Origin::Transformers),
        name: None,
        other_family: None,
        layout: Some(layout),
        strides: Some(strides),
        classes,
        preprocessing,
    })
}

/// A transformers image processor's config (`ConvNextImageProcessor`, which ResNets use).
fn transformers_preprocessing(value: &Value) -> Result<Preprocessing, String> {
    let mut pre = Preprocessing {
        rounding: Rounding::Transformers,
        ..Preprocessing::default()
    };
    if value["do_normalize"].as_bool() == Some(false) {
        pre.mean = [0.0; 3];
        pre.std = [1.0; 3];
    } else {
        if let Some(mean) = triple(&value["image_mean"], "image_mean")? {
            pre.mean = mean;
        }
        if let Some(std) = triple(&value["image_std"], "image_std")? {
            pre.std = std;
        }
    }
    match &value["resample"] {
        Value::Null => {}
        resample => {
            let name = resample.to_string();
            pre.interpolation =
                Interpolation::from_name(name.trim_matches('"')).ok_or_else(|| {
                    format!("resample {resample}: camview resizes bilinear (2) or bicubic (3)")
                })?;
        }
    }
    let size = &value["size"];
    let side = size["shortest_edge"]
        .as_u64()
        .or_else(|| size["height"].as_u64())
        .or_else(|| size.as_u64());
    if let Some(side) = side {
        pre.input_size = u32::try_from(side).map_err(|_| format!("size {side}"))?;
    }
    if let Some(crop_pct) = value["crop_pct"].as_f64() {
        pre.crop_pct = crop_pct;
    }
    // ConvNextImageProcessor resizes to the square without a crop from 384 pixels up.
    pre.center_squashes = pre.input_size >= 384;
    Ok(pre)
}
