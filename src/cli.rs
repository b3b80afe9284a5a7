//! Command-line arguments (clap derive; doc comments are the help text) and the
//! non-interactive commands. Parsing happens here; each command validates before it works.

mod bench;
mod cam;
mod classify;
mod eval;
mod faithfulness;
mod model;
mod score_cam;
mod weights;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::model::cam_methods::CamMethod;
use crate::model::classifier::{DeviceChoice, Precision};
use crate::model::weights::{MODEL_ENV, default_model_path, default_path};
use crate::model::{Arch, Classifier, ResizeMode};
use crate::provision::{ModelConfig, Step, provision};
use crate::term::Protocol;
use crate::ui::BrowseConfig;

/// See what an ImageNet ResNet-50 looks at: browse images, read its top-5 predictions and
/// its Class Activation Map drawn inline in the terminal.
#[derive(Debug, Parser)]
#[command(name = "camview", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub browse: BrowseArgs,
}

/// Options of the interactive browser (`camview [DIR]`).
#[derive(Debug, Args)]
pub struct BrowseArgs {
    /// Folder to browse, or an image: its folder opens with it selected.
    #[arg(default_value = "images", value_name = "DIR|FILE")]
    pub dir: PathBuf,
    /// Labels file for reviewing the folder as a dataset (`path,label` CSV, or ImageNet's
    /// LOC_val_solution.csv); without it, class folders are detected.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Folder of Pascal VOC XML box files, matched to images by file stem.
    #[arg(long, value_name = "DIR")]
    pub boxes: Option<PathBuf>,
    /// Graphics protocol for the image pane (auto asks the terminal).
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
    /// Folder where `s` saves the picture shown (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub save_dir: PathBuf,
    /// How the maps are made at first (`a` cycles): CAM, or another method of the CAM family
    /// (Score-CAM runs a forward pass for each of the network's feature channels, in the
    /// background).
    #[arg(long, env = "CAMVIEW_METHOD", value_enum, default_value_t = CamMethod::Cam)]
    pub method: CamMethod,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl BrowseArgs {
    /// The plain configuration the browser takes.
    pub fn config(&self) -> BrowseConfig {
        // An image opens its folder, as image viewers and file managers do.
        let (dir, select) = if self.dir.is_file() {
            let parent = self
                .dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            (parent.to_path_buf(), Some(self.dir.clone()))
        } else {
            (self.dir.clone(), None)
        };
        BrowseConfig {
            dir,
            select,
            labels: self.labels.clone(),
            boxes: self.boxes.clone(),
            protocol: self.protocol,
            save_dir: self.save_dir.clone(),
            method: self.method,
            store: self.store.path(),
            model: self.model.config(),
        }
    }
}

/// Options that choose the model and its input.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// The model: a ResNet, ResNeXt or Wide ResNet checkpoint (safetensors, .pth/.pt/.bin) or a
    /// model folder from timm's save_for_hf or transformers' save_pretrained. The default is
    /// models/ in a folder that has one, else the user's cache ($CAMVIEW_WEIGHTS, the older
    /// name, is read too); genuine ImageNet ResNet-50 weights are fetched there if missing.
    #[arg(
        long = "model",
        visible_alias = "weights",
        env = MODEL_ENV,
        value_name = "PATH",
        default_value_os_t = default_model_path()
    )]
    pub weights: PathBuf,
    /// Class names, as many as the model has: one a line, `wnid name` lines, a JSON list, or
    /// a JSON object from index to name [default: the model folder's, else ImageNet's for
    /// 1000 classes, else `class N`].
    #[arg(long, value_name = "FILE")]
    pub classes: Option<PathBuf>,
    /// Channel means of the input's normalisation, R,G,B on 0..1 values [default: the model
    /// folder's, else ImageNet's].
    #[arg(long, value_name = "R,G,B", value_parser = parse_channels)]
    pub mean: Option<[f64; 3]>,
    /// Channel standard deviations of the input's normalisation, R,G,B [default: the model
    /// folder's, else ImageNet's].
    #[arg(long, value_name = "R,G,B", value_parser = parse_channels)]
    pub std: Option<[f64; 3]>,
    /// Stride layout of a weights file that does not record it [default: resnet50-v1.5].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// How an image becomes the network input.
    #[arg(long, value_enum, default_value_t = ResizeMode::Full)]
    pub resize: ResizeMode,
    /// Where the network runs: auto (a CUDA GPU when built with CUDA and one is there,
    /// else the CPU), cpu, cuda, cuda:N.
    #[arg(long, env = "CAMVIEW_DEVICE", value_name = "DEVICE", default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// Arithmetic on the CPU: f32, or bf16 (bfloat16 products summed in f32, on CPUs with
    /// AVX512_BF16; elsewhere a one-line note, and f32).
    #[arg(long, env = "CAMVIEW_PRECISION", value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
}

impl ModelArgs {
    /// The plain configuration the rest of camview takes.
    pub fn config(&self) -> ModelConfig {
        ModelConfig {
            weights: self.weights.clone(),
            fetch_if_missing: self.weights == default_path(),
            arch: self.arch,
            classes: self.classes.clone(),
            mean: self.mean,
            std: self.std,
            resize: self.resize,
            device: self.device,
            precision: self.precision,
        }
    }

    /// Loads the classifier, fetching genuine weights first (with a bar on stderr) when the
    /// default file is absent.
    pub fn load_classifier(&self) -> anyhow::Result<Classifier> {
        let shown = self.weights.display();
        let classifier = provision(
            &self.config(),
            &weights::Bar::new(),
            &mut |step| match step {
                Step::Fetching => {
                    eprintln!("camview: no weights at {shown}; fetching them (first run)…")
                }
                Step::Fetched(source) => {
                    eprintln!("camview: weights from {source:?} written to {shown}");
                }
                Step::Loading => {}
                Step::Precision(note) => eprintln!("camview: {note}"),
            },
        )?;
        Ok(classifier)
    }
}

/// Three numbers, one a channel: `0.5,0.4,0.3`.
fn parse_channels(s: &str) -> Result<[f64; 3], String> {
    let values: Vec<f64> = s
        .split(',')
        .map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`{s}` is not three numbers R,G,B (e.g. 0.485,0.456,0.406)"))?;
    <[f64; 3]>::try_from(values)
        .map_err(|v| format!("`{s}` has {} numbers, not three (R,G,B)", v.len()))
}

/// Where results are kept between runs.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The result store, an SQLite file [default: results.sqlite beside the default weights]
    #[arg(
        long,
        value_name = "FILE",
        env = "CAMVIEW_STORE",
        conflicts_with = "no_store"
    )]
    pub store: Option<PathBuf>,
    /// Keep no results: analyse everything afresh and store nothing.
    #[arg(long)]
    pub no_store: bool,
}

impl StoreArgs {
    /// The store's path, unless `--no-store`.
    pub fn path(&self) -> Option<PathBuf> {
        (!self.no_store).then(|| {
            self.store
                .clone()
                .unwrap_or_else(crate::store::default_path)
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the top classes (and optionally raw CAM grids) of images or folders of images.
    Classify(classify::ClassifyArgs),
    /// Write one image's CAM overlay as PNG, or show it inline when stdout is a terminal.
    Cam(cam::CamArgs),
    /// Measure the model on a labelled folder: accuracy, confusions and CAM localisation.
    Eval(eval::EvalArgs),
    /// Time the forward pass in-process.
    Bench(bench::BenchArgs),
    /// Get, import or inspect weights.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Inspect a model file or folder.
    #[command(subcommand)]
    Model(model::ModelCommand),
}

/// Runs a non-interactive command; returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Classify(args) => classify::run(&args),
        Command::Cam(args) => cam::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Bench(args) => bench::run(&args).map(|()| 0),
        Command::Weights(cmd) => weights::run(cmd).map(|()| 0),
        Command::Model(cmd) => model::run(&cmd).map(|()| 0),
    }
}
