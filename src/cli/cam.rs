//! `camview cam`: one image's CAM overlay, written as PNG or printed inline in the terminal.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::faithfulness::{FaithfulnessArgs, INTERRUPTED, Interrupt, PassLine};
use super::{ModelArgs, StoreArgs};
use crate::analysis::{self, ImageKey};
use crate::faithfulness_run::{self, ImageScores, SettingsJson};
use crate::model::cam::Colormap;
use crate::model::cam_methods::CamMethod;
use crate::model::faithfulness::{ROAD_PERCENTILES, Scores, Settings, mean};
use crate::model::preprocess::load_rgb;
use crate::model::{Classifier, Prediction};
use crate::overlay::{self, Style, View};
use crate::results::{Results, Target};
use crate::store::MapKey;
use crate::term::Protocol;

#[derive(Debug, Args)]
pub struct CamArgs {
    /// The image.
    pub image: PathBuf,
    /// Show the CAM of the class ranked R (1 = the best guess).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1000), conflicts_with = "class")]
    pub rank: u16,
    /// Show the CAM of ImageNet class IDX (0–999) whatever its rank.
    #[arg(long = "class", value_name = "IDX")]
    pub class: Option<usize>,
    /// How the map is made: CAM, or another method of the CAM family (Score-CAM runs a
    /// forward pass for each of the network's feature channels).
    #[arg(long, env = "CAMVIEW_METHOD", value_enum, default_value_t = CamMethod::Cam)]
    pub method: CamMethod,
    /// Colour scale of the heat map.
    #[arg(long, value_enum, default_value_t = Colormap::Jet)]
    pub colormap: Colormap,
    /// Weight of the heat map in the blend (0 = photo only, 1 = heat map only).
    #[arg(long, default_value_t = 0.5, value_parser = parse_alpha)]
    pub alpha: f32,
    /// Draw the CAM paper's bounding box (20 % of the maximum, largest region).
    #[arg(long)]
    pub bbox: bool,
    /// Draw the top five classes' CAMs side by side (the chosen one framed) and the photo.
    #[arg(long)]
    pub grid: bool,
    /// Write the PNG here; without it the overlay is shown inline (stdout must be a terminal).
    #[arg(short, long, value_name = "OUT.png")]
    pub output: Option<PathBuf>,
    /// Graphics protocol for the inline picture (auto asks the terminal, as the browser does).
    #[arg(long, value_enum, default_value_t = Protocol::Auto, conflicts_with = "output")]
    pub protocol: Protocol,
    #[command(flatten)]
    pub faithfulness: FaithfulnessArgs,
    /// Print the faithfulness scores as one JSON object on stdout instead of a table (the
    /// picture is then drawn only into -o's file).
    #[arg(long, requires = "faithfulness", conflicts_with = "protocol")]
    pub json: bool,
    /// Where --faithfulness keeps its scores (`eval`'s store: a second run reads them).
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_alpha(s: &str) -> Result<f32, String> {
    let a: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if (0.0..=1.0).contains(&a) {
        Ok(a)
    } else {
        Err(format!("alpha must lie in 0..=1, got {a}"))
    }
}

/// Draws the map (and measures it with `--faithfulness`); the exit status.
pub fn run(args: &CamArgs) -> anyhow::Result<i32> {
    // Validate before the slow work: with no -o we need a terminal to draw on.
    if args.output.is_none() && !args.json {
        crate::term::inline::check_terminal()?;
    }
    let classifier = args.model.load_classifier()?;
    let results = args
        .faithfulness
        .faithfulness
        .then(|| open_store(args, &classifier));
    // The file as it is before it is read, as `eval` keys it.
    let key = ImageKey::of(&args.image);
    if let Some(results) = &results
        && args.json
        && args.output.is_none()
        && let Some(stored) = stored_scores(args, results, &key)
    {
        eprintln!(
            "{}: rank {} {} ({}) {:.2} %, {}; faithfulness from the store",
            args.image.display(),
            stored.class.rank,
            stored.class.label,
            stored.class.index,
            stored.class.prob * 100.0,
            args.method.name()
        );
        return print_json(args, &stored.class, stored.input, &stored.scores);
    }
    let img = load_rgb(&args.image)?;
    let prepared = classifier.prepare(&img, args.model.resize)?;
    let rank = usize::from(args.rank);
    // The grid shows the top five whatever the rank asked for.
    let top = if args.grid { rank.max(5) } else { rank };
    // Every method but Score-CAM comes from the one forward pass; Score-CAM's maps are made
    // below for the classes shown only, as each takes a pass a feature channel.
    let first = if args.method.needs_forward_passes() {
        CamMethod::Cam
    } else {
        args.method
    };
    let mut analysis = classifier.analyze_by(&prepared, top, args.class, first)?;
    let index = match args.class {
        Some(class) => analysis.top.iter().position(|p| p.index == class),
        None => Some(rank - 1),
    }
    .context("the requested class has no CAM")?;
    if args.method != first {
        // The maps drawn: the chosen class's, or every one the grid shows.
        let shown: Vec<usize> = if args.grid {
            (0..analysis.top.len()).collect()
        } else {
            vec![index]
        };
        let classes: Vec<usize> = shown.iter().map(|&i| analysis.top[i].index).collect();
        let mut progress = |done: usize, total: usize| {
            eprint!("\r{}: {done}/{total} masked passes", args.method.name());
            if done == total {
                eprintln!();
            }
            std::ops::ControlFlow::Continue(())
        };
        let maps = classifier
            .method_maps(
                &prepared,
                &classes,
                args.method,
                crate::pipeline::score_cam_batch(classifier.device()),
                &mut progress,
            )?
            .context("the map was not finished")?;
        for (i, map) in shown.into_iter().zip(maps) {
            analysis.cams[i] = map;
        }
    }
    let chosen = &analysis.top[index];
    let style = Style {
        view: if args.grid { View::Grid } else { View::Overlay },
        colormap: args.colormap,
        alpha: args.alpha,
        bbox: args.bbox,
    };
    let picture = overlay::render(&img, img.dimensions(), Some(&analysis), index, style);
    let caption = format!(
        "{}: rank {} {} ({}) {:.2} %, {}",
        args.image.display(),
        chosen.rank,
        chosen.label,
        chosen.index,
        chosen.prob * 100.0,
        args.method.name()
    );
    // Caught before the caption, which tells a watcher that the passes are about to start.
    let interrupt = args.faithfulness.faithfulness.then(Interrupt::catch);
    match &args.output {
        Some(out) => {
            overlay::write_png(&picture, out)?;
            eprintln!("{caption}\nwrote {}", out.display());
        }
        None if args.json => eprintln!("{caption}"),
        None => {
            // Under the picture, which may scroll everything above it away.
            let shown = crate::term::inline::print_picture(picture, args.protocol)?;
            eprintln!("{caption} ({shown})");
        }
    }
    if !args.faithfulness.faithfulness {
        return Ok(0);
    }
    let settings = args.faithfulness.settings();
    let results = results.unwrap_or_else(|| Results::unkept(args.model.resize));
    let settings_key = settings.key();
    let map_key = MapKey {
        method: args.method,
        class: chosen.index,
        settings: &settings_key,
    };
    let scores = match results.stored_faithfulness(&key, map_key) {
        Some(scores) => {
            eprintln!("camview: faithfulness from the store");
            scores
        }
        None => {
            let interrupt = interrupt.unwrap_or_else(Interrupt::catch);
            let mut line = PassLine::new();
            let scores = faithfulness_run::measure_grid(
                &classifier,
                &prepared,
                chosen.index,
                &analysis.cams[index],
                settings,
                &mut |stage, done, total| line.update(&interrupt, stage, done, total),
            )?;
            line.clear();
            let Some(scores) = scores else {
                eprintln!("camview: faithfulness stopped (Ctrl-C)");
                return Ok(INTERRUPTED);
            };
            keep(
                &classifier,
                &results,
                &key,
                (&img, &prepared),
                map_key,
                &scores,
            );
            scores
        }
    };
    if args.json {
        return print_json(args, chosen, prepared.input, &scores);
    }
    let stdout = std::io::stdout();
    let written = write_scores(
        &mut stdout.lock(),
        args.method,
        chosen,
        prepared.input,
        &scores,
        settings,
    );
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

/// The result store `--faithfulness` reads and writes, as `eval` opens it.
fn open_store(args: &CamArgs, classifier: &Classifier) -> Results {
    let path = args.store.path();
    let (results, notes) = Results::open(path.as_deref(), classifier, args.model.resize);
    for note in notes {
        eprintln!("camview: {note}");
    }
    results
}

/// What `cam --faithfulness --json` prints, when the store has all of it.
struct Stored {
    class: Prediction,
    input: (u32, u32),
    scores: Scores,
}

/// The scores of the map asked for, from the store alone, without reading the photo: the
/// class (by rank or index) from a stored analysis of the file, then its map's scores.
fn stored_scores(args: &CamArgs, results: &Results, key: &ImageKey) -> Option<Stored> {
    let target = Target {
        key: key.clone(),
        truth: None,
    };
    // The classes and their probabilities are the same by every method.
    let record = results.stored_by(&target, CamMethod::Cam)?;
    let class = record.analysis.top.into_iter().find(|p| match args.class {
        Some(class) => p.index == class,
        None => p.rank == usize::from(args.rank),
    })?;
    let settings_key = args.faithfulness.settings().key();
    let map = MapKey {
        method: args.method,
        class: class.index,
        settings: &settings_key,
    };
    let scores = results.stored_faithfulness(key, map)?;
    Some(Stored {
        class,
        input: record.analysis.input,
        scores,
    })
}

/// Stores the scores, and the file's analysis where the store lacks it, so that a second
/// run finds its class without reading the photo; what cannot be stored is said.
fn keep(
    classifier: &Classifier,
    results: &Results,
    key: &ImageKey,
    (img, prepared): (&image::RgbImage, &crate::model::preprocess::Prepared),
    map: MapKey,
    scores: &Scores,
) {
    if !results.is_kept() {
        return;
    }
    if let Err(e) = results.put_faithfulness(key, map, scores) {
        let e = crate::model::chain(&e);
        eprintln!("camview: cannot store the faithfulness scores: {e}");
        return;
    }
    let target = Target {
        key: key.clone(),
        truth: None,
    };
    if results.stored_by(&target, CamMethod::Cam).is_some() {
        return;
    }
    let kept = match analysis::analyse(classifier, img.dimensions(), prepared, None) {
        Ok(record) => results
            .put(key, CamMethod::Cam, &record)
            .map_err(|e| crate::model::chain(&e)),
        Err(e) => Err(crate::model::chain(&e)),
    };
    if let Err(e) = kept {
        eprintln!("camview: cannot store the analysis of the photo: {e}");
    }
}

/// The scores as one JSON object on stdout.
fn print_json(
    args: &CamArgs,
    class: &Prediction,
    (width, height): (u32, u32),
    scores: &Scores,
) -> anyhow::Result<i32> {
    let settings = args.faithfulness.settings();
    let json = serde_json::json!({
        "path": crate::text::printable_path(&args.image),
        "method": args.method.name(),
        "class": class,
        "input": [width, height],
        "faithfulness": ImageScores::of(class.index, scores),
        "settings": SettingsJson::of(settings),
    });
    match writeln!(std::io::stdout().lock(), "{json}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(0),
    }
}

/// One map's scores as a table, each with what better means.
fn write_scores(
    out: &mut impl Write,
    method: CamMethod,
    class: &crate::model::Prediction,
    (width, height): (u32, u32),
    s: &Scores,
    settings: Settings,
) -> std::io::Result<()> {
    writeln!(
        out,
        "faithfulness of the {} map of {} ({}), rank {}, on the {width} × {height} input:",
        method.name(),
        class.label,
        class.index,
        class.rank
    )?;
    writeln!(out, "  confidence        {:>8.4}", s.confidence)?;
    let change = if s.increased() {
        format!("{:+.4}: an increase", s.cam_mult_change)
    } else {
        format!(
            "{:+.4}: a drop of {:.1} %",
            s.cam_mult_change,
            s.drop() * 100.0
        )
    };
    writeln!(
        out,
        "  map multiplied in {:>8.4}  ({change})",
        s.confidence + s.cam_mult_change
    )?;
    writeln!(
        out,
        "  deletion AUC      {:>8.4}  (RISE; lower is better)",
        s.deletion_auc
    )?;
    writeln!(
        out,
        "  insertion AUC     {:>8.4}  (RISE; higher is better)",
        s.insertion_auc
    )?;
    let percentiles: Vec<String> = ROAD_PERCENTILES
        .iter()
        .map(|p| format!("{:>6}", format!("{p} %")))
        .collect();
    writeln!(
        out,
        "  ROAD at              {}    mean",
        percentiles.join("  ")
    )?;
    for (name, values, better) in [
        ("most relevant first ", &s.road_most_relevant_first, "lower"),
        (
            "least relevant first",
            &s.road_least_relevant_first,
            "higher",
        ),
    ] {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:+.3}")).collect();
        writeln!(
            out,
            "    {name} {}  {:+.3}  ({better} is better)",
            cells.join("  "),
            mean(values)
        )?;
    }
    writeln!(
        out,
        "  ROAD combined     {:>+8.4}  ((LeRF − MoRF) / 2, pytorch-grad-cam's ROADCombined)",
        s.road_combined()
    )?;
    writeln!(
        out,
        "settings: {}",
        faithfulness_run::settings_line(settings)
    )
}
