//! `camview bench`: times the forward pass in-process, after a warm-up, on the real weights.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use clap::Args;

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Timed forward passes.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed passes first (buffers grow, threads and caches warm up).
    #[arg(long, default_value_t = 3)]
    pub warmup: u32,
    /// Input size as HxW.
    #[arg(long, default_value = "224x224", value_parser = parse_size)]
    pub size: (usize, usize),
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub batch: u32,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (h, w) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not HxW, e.g. 224x224"))?;
    let side = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| (1..=4096).contains(&n))
            .ok_or_else(|| format!("`{v}` is not a side length in 1..=4096"))
    };
    Ok((side(h)?, side(w)?))
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    let classifier = args.model.load_classifier()?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let (h, w) = args.size;
    let batch = args.batch as usize;
    let device = classifier.device().clone();
    // A fixed pseudo-random input: the forward pass costs the same for any values.
    let input = Tensor::randn(0f32, 1.0, (batch, 3, h, w), &device)?.to_dtype(DType::F32)?;
    writeln!(
        out,
        "weights {} ({}) load_ms={load_ms:.1} device={} input={batch}x3x{h}x{w}",
        args.model.weights.display(),
        classifier.model().arch(),
        crate::model::classifier::device_name(&device),
    )?;
    let forward = || -> anyhow::Result<f64> {
        let t = Instant::now();
        let out = classifier.model().forward(&input)?;
        // Reading the logits back waits for asynchronous devices to finish.
        out.logits.to_vec2::<f32>().context("reading logits")?;
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let warm = (0..args.warmup)
        .map(|_| forward())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let warm: Vec<String> = warm.iter().map(|ms| format!("{ms:.1}")).collect();
    writeln!(out, "warm-up ms=[{}]", warm.join(", "))?;
    let mut times = (0..args.iters)
        .map(|_| forward())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let min = times[0];
    writeln!(
        out,
        "per-image median_ms={:.2} images_per_s={:.1}",
        median / batch as f64,
        batch as f64 * 1e3 / median
    )?;
    writeln!(
        out,
        "forward median_ms={median:.2} min_ms={min:.2} iters={}",
        args.iters
    )?;
    Ok(())
}
