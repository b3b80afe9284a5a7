//! `camview bench`: times the forward pass in-process, after a warm-up, on the real weights.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use candle_core::{DType, Tensor};
use clap::Args;

use super::ModelArgs;
use crate::model::kernels::fastconv::{self, LayerTime};

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
    /// Also time every convolution of the CPU fast path and print a table of their medians.
    #[arg(long)]
    pub layers: bool,
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
        "weights {} ({}) load_ms={load_ms:.1} device={} precision={} kernel={} \
         input={batch}x3x{h}x{w}",
        args.model.weights.display(),
        classifier.model().arch(),
        crate::model::classifier::device_name(&device),
        classifier.precision_name(),
        classifier.kernel_name(),
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
    fastconv::record_layer_times(args.layers);
    let times = (0..args.iters)
        .map(|_| forward())
        .collect::<anyhow::Result<Vec<f64>>>();
    fastconv::record_layer_times(false);
    let mut times = times?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    if args.layers {
        write_layer_table(
            &mut out,
            fastconv::take_layer_times(),
            args.iters as usize,
            median,
        )?;
    }
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

/// One row per convolution of a pass: its median time over the passes and its rate.
fn write_layer_table(
    out: &mut impl Write,
    times: Vec<LayerTime>,
    passes: usize,
    pass_ms: f64,
) -> anyhow::Result<()> {
    if times.is_empty() {
        writeln!(
            out,
            "layers: none timed (the fast path runs on the CPU only)"
        )?;
        return Ok(());
    }
    let per_pass = times.len() / passes;
    writeln!(
        out,
        "layer  kernel  input          out  path      median_us   GMAC/s"
    )?;
    let mut total_us = 0.0;
    for (i, layer) in times[..per_pass].iter().enumerate() {
        let mut us: Vec<f64> = times
            .iter()
            .skip(i)
            .step_by(per_pass)
            .map(|t| t.micros)
            .collect();
        us.sort_by(f64::total_cmp);
        let median = us[us.len() / 2];
        total_us += median;
        let (h, w, c) = layer.input;
        let (k, s) = (layer.kernel, layer.stride);
        writeln!(
            out,
            "{:>5}  {:<6}  {:<13} {:>4}  {:<8} {:>10.1} {:>8.1}",
            i + 1,
            format!("{k}x{k}/{s}"),
            format!("{h}x{w}x{c}"),
            layer.out_c,
            if layer.winograd { "winograd" } else { "direct" },
            median,
            layer.macs as f64 / median / 1e3,
        )?;
    }
    writeln!(
        out,
        "convolutions: {:.2} ms of the {pass_ms:.2} ms median pass",
        total_us / 1e3
    )?;
    Ok(())
}
