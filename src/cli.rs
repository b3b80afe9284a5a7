//! Command-line arguments (clap derive; doc comments are the help text) and the
//! non-interactive commands. Parsing happens here; each command validates before it works.

mod bench;
mod cam;
mod classify;
mod weights;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::model::fetch::{self, Source};
use crate::model::weights::{WEIGHTS_ENV, default_path};
use crate::model::{Arch, Classifier, ResizeMode};

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
    /// Folder to browse.
    #[arg(default_value = "images")]
    pub dir: PathBuf,
    /// Graphics protocol for the image pane (auto asks the terminal).
    #[arg(long, value_enum, default_value_t = Protocol::Auto)]
    pub protocol: Protocol,
    /// Folder where `s` saves the picture shown (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub save_dir: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How images reach the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Ask the terminal what it supports.
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    /// Unicode half blocks: works in any colour terminal.
    Halfblocks,
}

/// Options that choose the model and its input.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Weights file (safetensors or PyTorch .pth with torchvision names). The default is
    /// models/ in a folder that has one, else the user's cache; fetched there if missing.
    #[arg(long, env = WEIGHTS_ENV, value_name = "FILE", default_value_os_t = default_path())]
    pub weights: PathBuf,
    /// Stride layout of a weights file that does not record it [default: resnet50-v1.5].
    #[arg(long, value_enum)]
    pub arch: Option<Arch>,
    /// How an image becomes the network input.
    #[arg(long, value_enum, default_value_t = ResizeMode::Full)]
    pub resize: ResizeMode,
}

impl ModelArgs {
    /// True when the weights path is the built-in default (so a missing file may be fetched).
    pub fn weights_are_default(&self) -> bool {
        self.weights == default_path()
    }

    /// Loads the classifier, fetching genuine weights first when the default file is absent.
    pub fn load_classifier(&self) -> anyhow::Result<Classifier> {
        self.ensure_weights()?;
        Classifier::load(
            &self.weights,
            self.arch,
            crate::model::classifier::default_device(),
        )
    }

    /// Makes sure the weights file exists: a missing default is fetched (first run), a
    /// missing explicit file is an error.
    pub fn ensure_weights(&self) -> anyhow::Result<()> {
        if self.weights.exists() {
            return Ok(());
        }
        if !self.weights_are_default() {
            anyhow::bail!(
                "weights file {} does not exist (run `camview weights fetch -o {0}`)",
                self.weights.display()
            );
        }
        eprintln!(
            "camview: no weights at {}; fetching them (first run)…",
            self.weights.display()
        );
        let source = fetch::fetch(&self.weights, &Source::DEFAULT_ORDER, &weights::Bar::new())?;
        eprintln!(
            "camview: weights from {source:?} written to {}",
            self.weights.display()
        );
        Ok(())
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the top classes (and optionally raw CAM grids) of images or folders of images.
    Classify(classify::ClassifyArgs),
    /// Write one image's CAM overlay as PNG, or show it inline when stdout is a terminal.
    Cam(cam::CamArgs),
    /// Time the forward pass in-process.
    Bench(bench::BenchArgs),
    /// Get, import or inspect weights.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
}

/// Runs a non-interactive command; returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Classify(args) => classify::run(&args),
        Command::Cam(args) => cam::run(&args).map(|()| 0),
        Command::Bench(args) => bench::run(&args).map(|()| 0),
        Command::Weights(cmd) => weights::run(cmd).map(|()| 0),
    }
}

/// True for file names with an extension camview can decode.
pub fn is_image_path(path: &Path) -> bool {
    const EXTENSIONS: [&str; 9] = [
        "jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "jfif",
    ];
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}
