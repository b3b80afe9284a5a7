//! `camview classify`: top classes of many images, as a table or JSON lines, in the order of
//! the files. A file that fails is reported and the run goes on; the exit code says whether
//! any failed. Files are decoded ahead of the forward pass and run in batches (8 on the CPU,
//! 64 on a GPU fed by every core).

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::ModelArgs;
use super::faithfulness::INTERRUPTED;
use super::score_cam;
use crate::model::cam_methods::CamMethod;
use crate::model::{Classifier, Prediction};
use crate::overlay;
use crate::pipeline::{self, Job, Run};
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
    /// How each class's map (and so the box) is made: CAM, or another method of the CAM
    /// family (Score-CAM runs a forward pass a layer-4 channel, 2048 an image for a
    /// ResNet-50, one image at a time).
    #[arg(long, env = "CAMVIEW_METHOD", value_enum, default_value_t = CamMethod::Cam)]
    pub method: CamMethod,
    /// Write each image's top-1 map (of `--method`) into DIR as a float32 .npy at the network
    /// input's size, scaled to 0..1, named by its path below the folder given plus `.npy`
    /// (a file given by itself: its name), as WSOL tools (wsolevaluation's `CamDataset`) read.
    #[arg(long, value_name = "DIR")]
    pub save_cams: Option<PathBuf>,
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
    /// The method of the maps the box (and `cam`) come from.
    method: &'static str,
    bbox: Option<[u32; 4]>,
}

#[derive(Serialize)]
struct JsonError {
    path: String,
    error: String,
}

pub fn run(args: &ClassifyArgs) -> anyhow::Result<i32> {
    let items = expand(&args.paths);
    let classifier = args.model.load_classifier()?;
    // Files go through the pipeline (decoding ahead, batches); results are written in the
    // order of the files, so a finished one waits for those before it.
    let mut jobs = Vec::new();
    let mut item_of_job = Vec::new();
    let mut output = Output {
        ready: BTreeMap::new(),
        next: 0,
        total: items.len(),
        failed: 0,
        closed: false,
    };
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Ok(path) => {
                jobs.push(Job { path, pinned: None });
                item_of_job.push(i);
            }
            Err(failed) => {
                output.ready.insert(i, Err(failed));
            }
        }
    }
    let top = usize::from(args.top);
    if args.method.needs_forward_passes() {
        if !score_cam_each(&classifier, &jobs, &item_of_job, top, args, &mut output) {
            return Ok(INTERRUPTED);
        }
    } else {
        let (out, jobs_ref, item_of_job) = (&mut output, &jobs, &item_of_job);
        pipeline::analyse_all(
            &classifier,
            jobs_ref,
            Run {
                method: args.method,
                ..Run::new(&classifier, args.model.resize, top)
            },
            move |job, outcome| {
                let result = finish(&jobs_ref[job].path, outcome, args);
                out.ready.insert(item_of_job[job], result);
                out.write_ready(args)
            },
        )?;
    }
    // Failures listed after the last analysed file; a closed stdout is no error.
    let _ = output.write_ready(args);
    Ok(i32::from(output.failed > 0))
}

/// Score-CAM's analyses of `jobs`, one image at a time (its passes go in batches through
/// the engine), each written as it is finished; false when Ctrl-C stopped them.
fn score_cam_each(
    classifier: &Classifier,
    jobs: &[Job],
    item_of_job: &[usize],
    top: usize,
    args: &ClassifyArgs,
    output: &mut Output,
) -> bool {
    let mut progress = score_cam::Progress::start(classifier, jobs.len());
    for (n, job) in jobs.iter().enumerate() {
        let analysed =
            pipeline::analyse_score_cam(classifier, job, args.model.resize, top, &mut |d, t| {
                progress.update(n, d, t)
            });
        progress.clear();
        let outcome = match analysed {
            Ok(Some(done)) => Ok(done),
            Ok(None) => {
                eprintln!(
                    "camview: Score-CAM stopped (Ctrl-C) after {n} of {} images",
                    jobs.len()
                );
                return false;
            }
            Err(e) => Err(e),
        };
        output
            .ready
            .insert(item_of_job[n], finish(&job.path, outcome, args));
        if output.write_ready(args).is_break() {
            break;
        }
    }
    true
}

/// A file's analysis as written: its map saved with `--save-cams`, its box found.
fn finish(
    path: &Path,
    outcome: pipeline::Outcome,
    args: &ClassifyArgs,
) -> Result<One, (PathBuf, anyhow::Error)> {
    let saved = match (&outcome, &args.save_cams) {
        (Ok((analysis, _)), Some(dir)) => {
            overlay::write_map_npy(&dir.join(saved_name(path, &args.paths)), analysis, 0)
                .map_err(anyhow::Error::new)
        }
        _ => Ok(()),
    };
    match (outcome, saved) {
        (Ok((analysis, size)), Ok(())) => {
            let bbox = overlay::bbox(&analysis, 0, size);
            Ok(One {
                path: path.to_path_buf(),
                size,
                analysis,
                bbox,
            })
        }
        (Ok(_), Err(e)) => Err((path.to_path_buf(), e.context("cannot save its map"))),
        (Err(e), _) => Err((path.to_path_buf(), anyhow::Error::new(e))),
    }
}

/// Results waiting for their turn to be written.
struct Output {
    ready: BTreeMap<usize, Result<One, (PathBuf, anyhow::Error)>>,
    /// The next file to write.
    next: usize,
    total: usize,
    failed: usize,
    /// stdout was closed: nothing more is written.
    closed: bool,
}

impl Output {
    /// Writes the results whose turn it is; `Break` once stdout is closed.
    fn write_ready(&mut self, args: &ClassifyArgs) -> ControlFlow<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        while !self.closed
            && self.next < self.total
            && let Some(result) = self.ready.remove(&self.next)
        {
            self.next += 1;
            let written = match result {
                Ok(one) => write_result(&mut out, args, &one),
                Err((path, e)) => {
                    self.failed += 1;
                    write_error(&mut out, args, &path, &e)
                }
            };
            if let Err(e) = written {
                // A closed pipe (`camview classify … | head`) is the reader's choice, not an
                // error; any other write error ends the run the same way, said once.
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("camview: cannot write the results: {e}");
                    self.failed += 1;
                }
                self.closed = true;
            }
        }
        if self.closed {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

struct One {
    path: PathBuf,
    size: (u32, u32),
    analysis: crate::model::Analysis,
    bbox: Option<crate::model::cam::BBox>,
}

type Item = Result<PathBuf, (PathBuf, anyhow::Error)>;

fn write_result(out: &mut impl Write, args: &ClassifyArgs, one: &One) -> std::io::Result<()> {
    let (a, path) = (&one.analysis, &one.path);
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
            method: args.method.name(),
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
                "  box (top-1 {}): x {}..{}  y {}..{}",
                args.method.title(),
                b.x0,
                b.x1,
                b.y0,
                b.y1
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

/// Where `--save-cams` puts the map of `path`: its path below the folder it was found in,
/// else its file name, with `.npy` added.
fn saved_name(path: &Path, given: &[PathBuf]) -> PathBuf {
    let below = given
        .iter()
        .filter(|g| g.is_dir())
        .find_map(|g| path.strip_prefix(g).ok())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| path.file_name().map(PathBuf::from).unwrap_or_default());
    let mut name = below.into_os_string();
    name.push(".npy");
    PathBuf::from(name)
}
