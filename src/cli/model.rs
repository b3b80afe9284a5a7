//! `camview model info PATH`: what camview finds in a model file or folder.

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::model::model_dir::{self, Origin};
use crate::model::weights::Naming;
use crate::model::{Arch, chain};

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Print the architecture, the classes and the preprocessing a model file or folder
    /// gives, and where each came from.
    Info {
        /// A checkpoint file (safetensors, .pth/.pt/.bin) or a timm / transformers model
        /// folder.
        path: PathBuf,
        /// Stride layout of a file that does not record it [default: resnet50-v1.5].
        #[arg(long, value_enum)]
        arch: Option<Arch>,
    },
}

/// How many class names `info` shows.
const FIRST_CLASSES: usize = 5;

pub fn run(command: &ModelCommand) -> anyhow::Result<()> {
    let ModelCommand::Info { path, arch } = command;
    let (description, _) =
        model_dir::open(path, *arch).map_err(|e| anyhow::anyhow!("{}", chain(&e)))?;
    let mut out = std::io::stdout().lock();
    let origin = match (&description.origin, &description.config_name) {
        (Origin::File, _) => "checkpoint file".to_string(),
        (Origin::Timm, Some(name)) => format!("timm folder, `{name}`"),
        (Origin::Timm, None) => "timm folder".to_string(),
        (Origin::Transformers, _) => "transformers folder".to_string(),
    };
    let naming = match description.naming {
        Naming::Torchvision => "torchvision names",
        Naming::Transformers => "transformers names",
    };
    writeln!(out, "model          {} ({origin})", path.display())?;
    writeln!(
        out,
        "weights        {} ({naming})",
        description.weights.display()
    )?;
    writeln!(out, "network        {}", description.architecture.summary())?;
    let classes = &description.classes;
    let first: Vec<&str> = classes
        .names()
        .iter()
        .take(FIRST_CLASSES)
        .map(String::as_str)
        .collect();
    let more = if classes.len() > FIRST_CLASSES {
        ", …"
    } else {
        ""
    };
    writeln!(
        out,
        "classes        {}: {}{more} ({})",
        classes.len(),
        first.join(", "),
        classes.source()
    )?;
    writeln!(
        out,
        "preprocessing  {} ({})",
        description.preprocessing.summary(),
        description.preprocessing_source
    )?;
    Ok(())
}
