//! `--faithfulness` on `cam` and `eval`: the options, Ctrl-C as a request to stop between
//! forward passes, and the progress shown while the passes run.

use std::io::Write;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::faithfulness_run::{
    Event, ImageScores, MethodSummary, Request, SettingsJson, Stage, measure_dataset, settings_line,
};
use crate::model::Classifier;
use crate::model::cam_methods::CamMethod;
use crate::model::faithfulness::{Noise, Settings};
use crate::results::Results;

/// Options of the faithfulness metrics.
#[derive(Debug, Clone, Args)]
pub struct FaithfulnessArgs {
    /// Measure how faithful the map is to the model: RISE's deletion and insertion AUC, the
    /// confidence change with the map multiplied in (average drop, increase in confidence)
    /// and ROAD most and least relevant first at 20/40/60/80 % — about 470 forward passes
    /// for a 224 × 224 input.
    #[arg(long)]
    pub faithfulness: bool,
    /// Pixels removed (deletion) or inserted (insertion) a step of RISE's curves.
    #[arg(long, value_name = "PIXELS", default_value_t = Settings::STEP, value_parser = parse_step, requires = "faithfulness")]
    pub deletion_step: usize,
    /// ROAD's imputation noise: AMOUNT × N(0, 1) added to the imputed pixels
    /// (pytorch-grad-cam's 0.01; 0 for a deterministic score).
    #[arg(long, value_name = "AMOUNT", default_value_t = Noise::ROAD, value_parser = parse_noise, requires = "faithfulness")]
    pub road_noise: f32,
    /// Seed of ROAD's noise.
    #[arg(
        long,
        value_name = "SEED",
        default_value_t = 0,
        requires = "faithfulness"
    )]
    pub road_seed: u64,
}

impl FaithfulnessArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            step: self.deletion_step,
            noise: Noise {
                amount: self.road_noise,
                seed: self.road_seed,
            },
        }
    }
}

fn parse_step(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{s}` is not a positive number of pixels")),
    }
}

fn parse_noise(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(a) if a.is_finite() && a >= 0.0 => Ok(a),
        _ => Err(format!(
            "`{s}` is not a noise amount (a number ≥ 0, e.g. 0.01)"
        )),
    }
}

/// Ctrl-C while it lives: the first asks the work to stop (see [`Interrupt::requested`]),
/// a second ends the process at once. The default returns when it is dropped.
pub struct Interrupt {
    flag: Arc<AtomicBool>,
    handlers: Vec<signal_hook::SigId>,
}

/// The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
pub const INTERRUPTED: i32 = 130;

impl Interrupt {
    pub fn catch() -> Self {
        let flag = Arc::new(AtomicBool::new(false));
        let sigint = signal_hook::consts::SIGINT;
        // The shutdown goes first: it sees the flag the first Ctrl-C set only on the second.
        let handlers = [
            signal_hook::flag::register_conditional_shutdown(sigint, INTERRUPTED, flag.clone()),
            signal_hook::flag::register(sigint, flag.clone()),
        ]
        .into_iter()
        .filter_map(Result::ok)
        .collect();
        Self { flag, handlers }
    }

    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// A one-line count of forward passes on stderr (`faithfulness: 120/470 passes`), rewritten
/// in place and cleared at the end or when stopped.
pub struct PassLine {
    /// Only a terminal gets the line: a log would get every rewrite of it.
    terminal: bool,
    shown: bool,
}

impl PassLine {
    pub fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// Shows the count; `Break` when Ctrl-C asked to stop.
    pub fn update(
        &mut self,
        interrupt: &Interrupt,
        stage: Stage,
        done: usize,
        total: usize,
    ) -> ControlFlow<()> {
        self.show(&format!("{}: {done}/{total} passes", stage.name()));
        if interrupt.requested() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    /// Shows `text` in place of the line before, on a terminal; whether it was shown.
    pub fn show(&mut self, text: &str) -> bool {
        if self.terminal {
            eprint!("\r\x1b[2K{text}");
            self.shown = true;
        }
        self.terminal
    }

    /// Clears the line, leaving the cursor at its start.
    pub fn clear(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprint!("\r\x1b[2K");
        }
    }
}

impl Default for PassLine {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PassLine {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `eval --faithfulness`: every analysed image's scores, in the dataset's order, and their
/// means.
pub struct EvalFaithfulness {
    pub settings: Settings,
    /// Each image's scores, or why it has none; `None` for an image without an analysis.
    pub per_image: Vec<Option<Result<ImageScores, String>>>,
    /// The means over the images measured; `None` when none was.
    pub summary: Option<MethodSummary>,
    pub method: CamMethod,
}

/// `--json`'s summary of the faithfulness scores.
#[derive(Debug, Serialize)]
pub struct SummaryJson {
    pub method: &'static str,
    /// Images measured.
    pub images: usize,
    /// Images whose map could not be measured.
    pub failed: usize,
    /// The means; `null` when no image was measured.
    pub means: Option<MethodSummary>,
    pub settings: SettingsJson,
}

impl EvalFaithfulness {
    pub fn failed(&self) -> usize {
        self.per_image
            .iter()
            .filter(|s| matches!(s, Some(Err(_))))
            .count()
    }

    pub fn summary_json(&self) -> SummaryJson {
        SummaryJson {
            method: self.method.name(),
            images: self.summary.as_ref().map_or(0, |s| s.images),
            failed: self.failed(),
            means: self.summary.clone(),
            settings: SettingsJson::of(self.settings),
        }
    }

    /// The report's section: the means, or why there are none.
    pub fn write_report(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(s) = &self.summary else {
            return writeln!(out, "faithfulness: no image measured");
        };
        writeln!(
            out,
            "faithfulness of the {} maps over {} images (the true class's map, else the top-1's):",
            self.method.name(),
            s.images
        )?;
        for line in s.lines() {
            writeln!(out, "{line}")?;
        }
        writeln!(out, "  settings: {}", settings_line(self.settings))
    }
}

/// Measures the map of each request (one an image of the dataset, `None` for an image
/// without an analysis) from the store or afresh, with a progress bar; `None` when Ctrl-C
/// stopped it (what was measured is stored). `name(i)` names image `i` in messages.
pub fn measure_eval(
    classifier: &Classifier,
    results: &Results,
    requests: &[Option<Request>],
    method: CamMethod,
    settings: Settings,
    name: &dyn Fn(usize) -> String,
) -> Option<EvalFaithfulness> {
    let index: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].is_some())
        .collect();
    let wanted: Vec<Request> = requests.iter().flatten().cloned().collect();
    let interrupt = Interrupt::catch();
    let started = Instant::now();
    let bar = ProgressBar::hidden();
    let mut missing = 0;
    let measured = measure_dataset(
        classifier,
        results,
        &wanted,
        method,
        settings,
        &mut |event| {
            match event {
                Event::Start { missing: n } => {
                    missing = n;
                    if n > 0 {
                        bar.set_length(n as u64);
                        bar.set_draw_target(ProgressDrawTarget::stderr());
                        if let Ok(style) = ProgressStyle::with_template(
                            "{wide_bar} {pos}/{len} images  {msg}  eta {eta}",
                        ) {
                            bar.set_style(style);
                        }
                    }
                }
                Event::Passes { stage, done, total } => {
                    bar.set_message(format!("{} {done}/{total} passes", stage.name()));
                }
                Event::Finished {
                    index: done,
                    not_stored,
                } => {
                    if let Some(e) = not_stored {
                        let which = name(index[done]);
                        bar.suspend(|| {
                            eprintln!(
                                "camview: cannot store the faithfulness of {which}: {}",
                                crate::model::chain(e)
                            );
                        });
                    }
                    bar.inc(1);
                }
            }
            if interrupt.requested() {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        },
    );
    bar.finish_and_clear();
    let measured_now = measured
        .scores
        .iter()
        .filter(|s| s.is_some())
        .count()
        .saturating_sub(measured.from_store);
    if measured.stopped {
        eprintln!(
            "camview: faithfulness stopped (Ctrl-C) after {measured_now} of {missing} images; \
             their scores are stored, run again to go on"
        );
        return None;
    }
    if missing > 0 {
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "camview: faithfulness of {missing} images measured in {seconds:.1} s ({:.1} s an image); {} from the store",
            seconds / missing as f64,
            measured.from_store
        );
    } else {
        eprintln!(
            "camview: all {} faithfulness results from the store",
            measured.from_store
        );
    }
    let mut per_image: Vec<Option<Result<ImageScores, String>>> = vec![None; requests.len()];
    let mut ok = Vec::new();
    for ((&i, request), scores) in index.iter().zip(&wanted).zip(measured.scores) {
        per_image[i] = scores.map(|s| {
            s.map(|s| {
                ok.push(s);
                ImageScores::of(request.class, &s)
            })
        });
        if let Some(Err(e)) = &per_image[i] {
            eprintln!("camview: no faithfulness for {}: {e}", name(i));
        }
    }
    Some(EvalFaithfulness {
        settings,
        per_image,
        summary: MethodSummary::of(method, &ok),
        method,
    })
}
