//! `camview classify`: top classes of many images, as a table or JSON lines. A file that fails
//! is reported and the batch goes on; the exit code says whether any failed.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::ModelArgs;
use crate::model::preprocess::load_rgb;
use crate::model::{Classifier, Prediction};
use crate::overlay;
use crate::text::printable_path;
use crate::walk;

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Image files or folders of images (searched recursively).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// One JSON object per image per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// How many classes to report.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub top: u16,
    /// With --json: add each class's raw CAM grid (rows of floats, no ReLU or scaling).
    #[arg(long, requires = "json")]
    pub cam_grid: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Serialize)]
struct JsonClass<'a> {
    #[serde(flatten)]
    prediction: &'a Prediction,
    #[serde(skip_serializing_if = "Option::is_none")]
    cam: Option<Vec<&'a [f32]>>,
}

#[derive(Serialize)]
struct JsonResult<'a> {
    path: String,
    width: u32,
    height: u32,
    top: Vec<JsonClass<'a>>,
    bbox: Option<[u32; 4]>,
}

#[derive(Serialize)]
struct JsonError {
    path: String,
    error: String,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<i32> {
    let files = expand(&args.paths);
    let classifier = args.model.load_classifier()?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failed = 0usize;
    for item in files {
        let result =
            item.and_then(|path| classify_one(&classifier, args, &path).map(|r| (path, r)));
        let written = match result {
            Ok((path, one)) => write_result(&mut out, args, &path, &one),
            Err((path, e)) => {
                failed += 1;
                write_error(&mut out, args, &path, &e)
            }
        };
        if let Err(e) = written {
            // A closed pipe (`camview classify … | head`) is the reader's choice, not an error.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(i32::from(failed > 0));
            }
            return Err(e.into());
        }
    }
    Ok(i32::from(failed > 0))
}

struct One {
    size: (u32, u32),
    analysis: crate::model::Analysis,
    bbox: Option<crate::model::cam::BBox>,
}

type Item = Result<PathBuf, (PathBuf, anyhow::Error)>;

fn classify_one(
    classifier: &Classifier,
    args: &ClassifyArgs,
    path: &Path,
) -> Result<One, (PathBuf, anyhow::Error)> {
    let run = || -> anyhow::Result<One> {
        let img = load_rgb(path)?;
        let prepared = classifier.prepare(&img, args.model.resize)?;
        let analysis = classifier.analyze(&prepared, usize::from(args.top), None)?;
        let size = img.dimensions();
        let bbox = overlay::bbox(&analysis, 0, size);
        Ok(One {
            size,
            analysis,
            bbox,
        })
    };
    run().map_err(|e| (path.to_path_buf(), e))
}

fn write_result(
    out: &mut impl Write,
    args: &ClassifyArgs,
    path: &Path,
    one: &One,
) -> std::io::Result<()> {
    let a = &one.analysis;
    if args.json {
        let top = a
            .top
            .iter()
            .zip(&a.cams)
            .map(|(prediction, grid)| JsonClass {
                prediction,
                cam: args.cam_grid.then(|| grid.rows()),
            })
            .collect();
        let line = JsonResult {
            path: printable_path(path),
            width: one.size.0,
            height: one.size.1,
            top,
            bbox: one.bbox.map(|b| [b.x0, b.y0, b.x1, b.y1]),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)
    } else {
        writeln!(
            out,
            "{}  {}×{}  input {}×{}  {:.0} ms",
            printable_path(path),
            one.size.0,
            one.size.1,
            a.input.0,
            a.input.1,
            a.elapsed.as_secs_f64() * 1e3
        )?;
        for p in &a.top {
            writeln!(
                out,
                "  {:>2}  {:>6.2} %  {:<4} {}",
                p.rank,
                p.prob * 100.0,
                p.index,
                p.label
            )?;
        }
        if let Some(b) = one.bbox {
            writeln!(
                out,
                "  box (top-1 CAM): x {}..{}  y {}..{}",
                b.x0, b.x1, b.y0, b.y1
            )?;
        }
        Ok(())
    }
}

fn write_error(
    out: &mut impl Write,
    args: &ClassifyArgs,
    path: &Path,
    e: &anyhow::Error,
) -> std::io::Result<()> {
    if args.json {
        let line = JsonError {
            path: printable_path(path),
            error: format!("{e:#}"),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)
    } else {
        out.flush()?;
        eprintln!("{}: error: {e:#}", printable_path(path));
        Ok(())
    }
}

/// Files as given, and the images inside folders (recursively, in natural order).
/// The files to classify: files as given, folders walked by camview's folder rule.
fn expand(paths: &[PathBuf]) -> Vec<Item> {
    let mut items = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk::images_under(path, &mut |item| {
                items.push(item.map_err(|e| {
                    (
                        e.dir,
                        anyhow::Error::new(e.error).context("cannot list folder"),
                    )
                }));
            });
        } else {
            items.push(Ok(path.clone()));
        }
    }
    items
}
