//! How faithful a map is to the model: the model's confidence in a class when the input is
//! changed where the map says it looks.
//!
//! - **Confidence change** when the input is multiplied by the map (Chattopadhay et al.,
//!   Grad-CAM++, WACV 2018): its average drop max(−change, 0) / before and its increase
//!   (change > 0) over a dataset; computed as pytorch-grad-cam's `cam_mult_image.py` does.
//! - **ROAD** (Rong et al., ICML 2022): the pixels the map ranks most (or least) relevant are
//!   removed and filled in by noisy linear imputation — each removed pixel the weighted mean of
//!   its eight neighbours, solved for all of them at once — and the confidence change read, as
//!   pytorch-grad-cam's `road.py` does (its percentile: "most relevant first at 80" keeps the
//!   80 % below the map's 80th percentile and imputes the rest).
//! - **Deletion and insertion** (Petsiuk et al., RISE, BMVC 2018): pixels removed from the
//!   image (set to 0 in the normalised input), or inserted into a blurred copy, most salient
//!   first, a step at a time; the area under the confidence curve.
//!
//! Inputs are normalised network inputs, channel-major (3 × H × W); maps are H × W in 0..1 at
//! the input's size ([`upsample_like_opencv`] brings a layer-4 grid there as pytorch-grad-cam
//! does). The model is reached through a `score` function: a batch of inputs (n × 3 × H × W)
//! → the class's probability for each.

use candle_core::{Device, Tensor};
use rayon::prelude::*;

/// The model's confidence in one class for each input of a batch.
pub type Score<'a> = dyn FnMut(&Tensor) -> candle_core::Result<Vec<f32>> + 'a;

/// A network input, channel-major.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub values: &'a [f32],
}

impl Input<'_> {
    fn pixels(&self) -> usize {
        self.height * self.width
    }

    fn tensor(&self, batch: Vec<f32>, device: &Device) -> candle_core::Result<Tensor> {
        let n = batch.len() / (self.channels * self.pixels());
        Tensor::from_vec(batch, (n, self.channels, self.height, self.width), device)
    }
}

/// A layer-4 map scaled to 0..1 brought to `width` × `height` the way pytorch-grad-cam does:
/// OpenCV's bilinear resize (pixel centres aligned, edges clamped), then min–max scaling again
/// (ε = 1e-7 in the span, as the library's `scale_cam_image`).
pub fn upsample_like_opencv(
    grid: &[f32],
    grid_width: usize,
    grid_height: usize,
    width: usize,
    height: usize,
) -> Vec<f32> {
    let taps = |out: usize, src: usize| -> Vec<(usize, usize, f32)> {
        let scale = src as f64 / out as f64;
        (0..out)
            .map(|o| {
                let f = ((o as f64 + 0.5) * scale - 0.5) as f32;
                let mut s = f.floor() as isize;
                let mut frac = f - s as f32;
                if s < 0 {
                    s = 0;
                    frac = 0.0;
                }
                if s as usize >= src - 1 {
                    s = src as isize - 1;
                    frac = 0.0;
                }
                let s = s as usize;
                (s, (s + 1).min(src - 1), frac)
            })
            .collect()
    };
    let rows = taps(height, grid_height);
    let cols = taps(width, grid_width);
    let mut map = Vec::with_capacity(width * height);
    for &(r0, r1, fy) in &rows {
        for &(c0, c1, fx) in &cols {
            let top = grid[r0 * grid_width + c0] * (1.0 - fx) + grid[r0 * grid_width + c1] * fx;
            let bottom = grid[r1 * grid_width + c0] * (1.0 - fx) + grid[r1 * grid_width + c1] * fx;
            map.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    let lo = map.iter().copied().fold(f32::INFINITY, f32::min);
    map.iter_mut().for_each(|v| *v -= lo);
    let hi = map.iter().copied().fold(0f32, f32::max);
    map.iter_mut().for_each(|v| *v /= 1e-7 + hi);
    map
}

/// The confidence change when the input is multiplied by the map: after − before.
pub fn cam_mult_image(
    input: Input,
    map: &[f32],
    device: &Device,
    score: &mut Score,
) -> candle_core::Result<f32> {
    let pixels = input.pixels();
    let mut batch = input.values.to_vec();
    batch.extend(
        input
            .values
            .chunks(pixels)
            .flat_map(|plane| plane.iter().zip(map).map(|(v, m)| v * m)),
    );
    let scores = score(&input.tensor(batch, device)?)?;
    Ok(scores[1] - scores[0])
}

/// Which pixels ROAD removes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    MostRelevantFirst,
    LeastRelevantFirst,
}

/// The noise ROAD adds to imputed pixels: `amount` × N(0, 1) (pytorch-grad-cam: 0.01; 0 for
/// a deterministic result), from a generator seeded with `seed`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Noise {
    pub amount: f32,
    pub seed: u64,
}

impl Noise {
    /// pytorch-grad-cam's amount.
    pub const ROAD: f32 = 0.01;
}

/// ROAD's confidence change for each percentile (pytorch-grad-cam's meaning, see the module
/// docs), the removed pixels imputed with `noise` added.
pub fn road(
    input: Input,
    map: &[f32],
    order: Order,
    percentiles: &[f64],
    noise: Noise,
    device: &Device,
    score: &mut Score,
) -> candle_core::Result<Vec<f32>> {
    let ranked: Vec<f32> = match order {
        Order::MostRelevantFirst => map.to_vec(),
        Order::LeastRelevantFirst => map.iter().map(|m| 1.0 - m).collect(),
    };
    let keeps: Vec<Vec<bool>> = percentiles
        .iter()
        .map(|&p| {
            let threshold = percentile(&ranked, p);
            ranked.iter().map(|&v| v < threshold).collect()
        })
        .collect();
    // The percentiles' systems are independent: solved in parallel, their noise then drawn
    // in order, as one after the other would.
    let imputed: Vec<Vec<f32>> = keeps
        .par_iter()
        .map(|keep| impute_exact(input, keep))
        .collect();
    let mut normal = Normal::new(noise.seed);
    let mut batch = input.values.to_vec();
    for (mut values, keep) in imputed.into_iter().zip(&keeps) {
        add_noise(&mut values, input.pixels(), keep, noise.amount, &mut normal);
        batch.extend(values);
    }
    let scores = score(&input.tensor(batch, device)?)?;
    Ok(scores[1..].iter().map(|s| s - scores[0]).collect())
}

/// numpy's `percentile` (linear interpolation between the closest ranks).
pub fn percentile(values: &[f32], p: f64) -> f32 {
    let mut sorted: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    (sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)) as f32
}

/// ROAD's neighbours and their weights: the four sides count twice the four corners.
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// The input with every pixel not kept replaced by the weighted mean of its neighbours inside
/// the image — one linear system for all of them, solved by conjugate gradients (the system
/// is symmetric and diagonally dominant) — plus noise.
#[cfg(test)]
fn impute(input: Input, keep: &[bool], noise: f32, normal: &mut Normal) -> Vec<f32> {
    let mut out = impute_exact(input, keep);
    add_noise(&mut out, input.pixels(), keep, noise, normal);
    out
}

/// `noise` × standard normal samples added to the pixels not kept, plane after plane.
fn add_noise(values: &mut [f32], pixels: usize, keep: &[bool], noise: f32, normal: &mut Normal) {
    if noise == 0.0 {
        return;
    }
    for plane in values.chunks_mut(pixels) {
        for (value, _) in plane.iter_mut().zip(keep).filter(|(_, kept)| !**kept) {
            *value += noise * normal.sample();
        }
    }
}

/// [`impute`] without the noise. The unknowns' links are kept as flat arrays (CSR), and the
/// channels' systems, which share their matrix, are solved side by side: one walk over the
/// links a step serves all of them (with a `Vec` of enum links per pixel and one channel at a
/// time, ROAD took 12 s an image). The arithmetic is the same, in the same order.
fn impute_exact(input: Input, keep: &[bool]) -> Vec<f32> {
    let (h, w) = (input.height as isize, input.width as isize);
    let unknown: Vec<usize> = (0..keep.len()).filter(|&i| !keep[i]).collect();
    let mut slot = vec![usize::MAX; keep.len()];
    for (n, &i) in unknown.iter().enumerate() {
        slot[i] = n;
    }
    // Each unknown's links to other unknowns (CSR: `starts`, `to`, `weight`), its links to
    // known pixels, and its diagonal.
    let mut starts = Vec::with_capacity(unknown.len() + 1);
    let (mut to, mut weight) = (Vec::new(), Vec::new());
    let mut known: Vec<Vec<(usize, f64)>> = Vec::with_capacity(unknown.len());
    let mut diagonal = Vec::with_capacity(unknown.len());
    starts.push(0);
    for &i in &unknown {
        let (y, x) = ((i as isize) / w, (i as isize) % w);
        let mut own_known = Vec::new();
        let mut sum = 0.0;
        for ((dy, dx), link) in NEIGHBOURS {
            let (ny, nx) = (y + dy, x + dx);
            if ny < 0 || nx < 0 || ny >= h || nx >= w {
                continue;
            }
            let j = (ny * w + nx) as usize;
            sum += link;
            if keep[j] {
                own_known.push((j, link));
            } else {
                to.push(slot[j]);
                weight.push(link);
            }
        }
        starts.push(to.len());
        known.push(own_known);
        diagonal.push(sum);
    }
    let pixels = input.pixels();
    let planes: Vec<&[f32]> = input.values.chunks(pixels).collect();
    // M x = b with M = diag(sum) − W_unknown, b = W_known · image, one column per channel.
    let b: Vec<Vec<f64>> = planes
        .iter()
        .map(|image| {
            known
                .iter()
                .map(|own| {
                    own.iter()
                        .map(|&(j, link)| link * f64::from(image[j]))
                        .sum()
                })
                .collect()
        })
        .collect();
    let apply = |x: &[Vec<f64>], active: &[bool]| -> Vec<Vec<f64>> {
        let mut product: Vec<Vec<f64>> = active
            .iter()
            .map(|&a| {
                if a {
                    vec![0.0; diagonal.len()]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let running: Vec<usize> = (0..active.len()).filter(|&k| active[k]).collect();
        for (u, d) in diagonal.iter().enumerate() {
            let links = starts[u]..starts[u + 1];
            let (to, weight) = (&to[links.clone()], &weight[links]);
            for &k in &running {
                let x = &x[k];
                let neighbours: f64 = to.iter().zip(weight).map(|(&s, link)| link * x[s]).sum();
                product[k][u] = d * x[u] - neighbours;
            }
        }
        product
    };
    let solutions = conjugate_gradients(apply, &b);
    let mut out = input.values.to_vec();
    for (plane, solution) in out.chunks_mut(pixels).zip(solutions) {
        for (&i, value) in unknown.iter().zip(solution) {
            plane[i] = value as f32;
        }
    }
    out
}

/// Solves M x = b for a symmetric positive-definite M given as a product, for several right
/// sides at once: each its own conjugate-gradient run, stopped when it converges, but one call
/// of `apply` a step for all those still running (`apply(p, active)` multiplies `p[k]` where
/// `active[k]`).
fn conjugate_gradients(
    apply: impl Fn(&[Vec<f64>], &[bool]) -> Vec<Vec<f64>>,
    b: &[Vec<f64>],
) -> Vec<Vec<f64>> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let len = b.first().map_or(0, Vec::len);
    let mut x = vec![vec![0f64; len]; b.len()];
    let mut r = b.to_vec();
    let mut p = r.clone();
    let mut rr: Vec<f64> = r.iter().map(|r| dot(r, r)).collect();
    let goal: Vec<f64> = b
        .iter()
        .map(|b| 1e-24 * dot(b, b).max(f64::MIN_POSITIVE))
        .collect();
    for _ in 0..10 * len.max(1) {
        let active: Vec<bool> = rr.iter().zip(&goal).map(|(rr, goal)| rr > goal).collect();
        if !active.contains(&true) {
            break;
        }
        let mp = apply(&p, &active);
        for k in (0..b.len()).filter(|&k| active[k]) {
            let step = rr[k] / dot(&p[k], &mp[k]);
            for ((xi, ri), (pi, mpi)) in x[k]
                .iter_mut()
                .zip(r[k].iter_mut())
                .zip(p[k].iter().zip(&mp[k]))
            {
                *xi += step * pi;
                *ri -= step * mpi;
            }
            let next = dot(&r[k], &r[k]);
            let keep = next / rr[k];
            rr[k] = next;
            for (pi, ri) in p[k].iter_mut().zip(&r[k]) {
                *pi = ri + keep * *pi;
            }
        }
    }
    x
}

/// Standard normal samples from a seeded generator (splitmix64, Box–Muller).
struct Normal {
    state: u64,
    spare: Option<f32>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits in (0, 1].
        ((z >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let radius = (-2.0 * self.uniform().ln()).sqrt();
        let angle = std::f64::consts::TAU * self.uniform();
        self.spare = Some((radius * angle.sin()) as f32);
        (radius * angle.cos()) as f32
    }
}

/// RISE's deletion and insertion curves: the confidence after each step of `step` pixels,
/// first point the untouched start.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub deletion: Vec<f32>,
    pub insertion: Vec<f32>,
}

impl Curves {
    /// Area under a curve drawn over 0..1 (trapezoids, as RISE's `auc`).
    pub fn area(curve: &[f32]) -> f32 {
        if curve.len() < 2 {
            return curve.first().copied().unwrap_or(0.0);
        }
        let sum: f32 = curve.iter().sum();
        (sum - curve[0] / 2.0 - curve[curve.len() - 1] / 2.0) / (curve.len() - 1) as f32
    }
}

/// RISE's blur for insertion's start: an 11 × 11 Gaussian of σ = 5, zero padding outside.
fn blurred(input: Input) -> Vec<f32> {
    const SIDE: usize = 11;
    const SIGMA: f64 = 5.0;
    let half = (SIDE / 2) as isize;
    // A sampled, normalised Gaussian, separable. (RISE makes its kernel by Gaussian-filtering
    // a point inside the 11 × 11 window, which folds the tails back in: slightly flatter.)
    let taps: Vec<f64> = (-half..=half)
        .map(|i| (-(i * i) as f64 / (2.0 * SIGMA * SIGMA)).exp())
        .collect();
    let total: f64 = taps.iter().sum();
    let taps: Vec<f64> = taps.iter().map(|t| t / total).collect();
    let (h, w) = (input.height as isize, input.width as isize);
    let mut out = Vec::with_capacity(input.values.len());
    for plane in input.values.chunks(input.pixels()) {
        let mut across = vec![0f64; plane.len()];
        for y in 0..h {
            for x in 0..w {
                across[(y * w + x) as usize] = (-half..=half)
                    .filter(|d| (0..w).contains(&(x + d)))
                    .map(|d| taps[(d + half) as usize] * f64::from(plane[(y * w + x + d) as usize]))
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                let v: f64 = (-half..=half)
                    .filter(|d| (0..h).contains(&(y + d)))
                    .map(|d| taps[(d + half) as usize] * across[((y + d) * w + x) as usize])
                    .sum();
                out.push(v as f32);
            }
        }
    }
    out
}

/// Deletion (pixels set to 0, the mean colour once normalised) and insertion (pixels copied
/// into a blurred input), most salient first, `step` pixels a step, scored `batch` inputs at
/// a time. `progress(done, total)` after each batch; `Break` stops and gives `None`.
pub fn deletion_insertion(
    input: Input,
    map: &[f32],
    step: usize,
    batch: usize,
    device: &Device,
    score: &mut Score,
    progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>,
) -> candle_core::Result<Option<Curves>> {
    let pixels = input.pixels();
    let step = step.max(1);
    let mut order: Vec<usize> = (0..pixels).collect();
    // Most salient first; equal saliency in pixel order.
    order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
    let steps = pixels.div_ceil(step);
    let blur = blurred(input);
    let total = 2 * (steps + 1);
    let mut done = 0;
    let mut curves = Vec::with_capacity(2);
    for (start, finish) in [
        (input.values.to_vec(), vec![0f32; input.values.len()]),
        (blur, input.values.to_vec()),
    ] {
        let mut current = start;
        let mut curve = Vec::with_capacity(steps + 1);
        let mut pending = Vec::new();
        for i in 0..=steps {
            if i > 0 {
                for &p in &order[(i - 1) * step..(i * step).min(pixels)] {
                    for c in 0..input.channels {
                        current[c * pixels + p] = finish[c * pixels + p];
                    }
                }
            }
            pending.extend_from_slice(&current);
            if pending.len() == batch.max(1) * current.len() || i == steps {
                let scored = std::mem::take(&mut pending);
                let n = scored.len() / current.len();
                curve.extend(score(&input.tensor(scored, device)?)?);
                done += n;
                if progress(done, total).is_break() {
                    return Ok(None);
                }
            }
        }
        curves.push(curve);
    }
    let insertion = curves.pop().unwrap_or_default();
    let deletion = curves.pop().unwrap_or_default();
    Ok(Some(Curves {
        deletion,
        insertion,
    }))
}

/// The percentiles at which ROAD is read, in pytorch-grad-cam's meaning (see the module docs).
pub const ROAD_PERCENTILES: [f64; 4] = [20.0, 40.0, 60.0, 80.0];

/// How the scores of one map are measured. The substrates are fixed: deletion sets pixels to
/// 0 in the normalised input (the mean colour), insertion starts from [`blurred`]'s copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Pixels removed (or inserted) a step of the deletion and insertion curves.
    pub step: usize,
    /// ROAD's imputation noise.
    pub noise: Noise,
}

impl Settings {
    /// RISE's step for a 224 × 224 input: one row's worth of pixels.
    pub const STEP: usize = 224;

    /// Every setting in one line: equal lines, equal scores (the result store's key).
    pub fn key(&self) -> String {
        let percentiles: Vec<String> = ROAD_PERCENTILES.iter().map(|p| p.to_string()).collect();
        format!(
            "deletion=zero insertion=blur11s5 step={} road={} noise={} seed={}",
            self.step,
            percentiles.join(","),
            self.noise.amount,
            self.noise.seed
        )
    }

    /// The forward passes (network inputs) that measuring an input of `pixels` takes.
    pub fn passes(&self, pixels: usize) -> usize {
        let road = 2 * (1 + ROAD_PERCENTILES.len());
        let curves = 2 * (pixels.div_ceil(self.step.max(1)) + 1);
        2 + road + curves
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            step: Self::STEP,
            noise: Noise {
                amount: Noise::ROAD,
                seed: 0,
            },
        }
    }
}

/// Every faithfulness score of one map of one class.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// The class's probability on the untouched input.
    pub confidence: f32,
    /// The probability's change when the input is multiplied by the map (after − before).
    pub cam_mult_change: f32,
    /// ROAD's confidence change at each of [`ROAD_PERCENTILES`], most relevant first.
    pub road_most_relevant_first: [f32; 4],
    /// The same, least relevant first.
    pub road_least_relevant_first: [f32; 4],
    /// Area under RISE's deletion curve (lower: the map finds what the model needs).
    pub deletion_auc: f32,
    /// Area under RISE's insertion curve (higher: the map finds what the model needs).
    pub insertion_auc: f32,
}

impl Scores {
    /// The drop in confidence with the map multiplied in, relative to the confidence
    /// (Grad-CAM++'s max(Y − O, 0) / Y); 0 where the confidence rose.
    pub fn drop(&self) -> f32 {
        if self.confidence > 0.0 {
            (-self.cam_mult_change).max(0.0) / self.confidence
        } else {
            0.0
        }
    }

    /// Whether the confidence rose with the map multiplied in.
    pub fn increased(&self) -> bool {
        self.cam_mult_change > 0.0
    }

    /// pytorch-grad-cam's `ROADCombined`: (mean least-relevant-first − mean
    /// most-relevant-first) / 2 over the percentiles; higher is better.
    pub fn road_combined(&self) -> f32 {
        (mean(&self.road_least_relevant_first) - mean(&self.road_most_relevant_first)) / 2.0
    }
}

/// The mean of a few scores.
pub fn mean(values: &[f32]) -> f32 {
    values.iter().sum::<f32>() / values.len().max(1) as f32
}

/// Every score of `map` for the class `score` reads: the confidence change with the map
/// multiplied in, ROAD both ways at [`ROAD_PERCENTILES`], and the areas under the deletion
/// and insertion curves, `batch` inputs to a forward pass. `progress(done, total)` counts
/// network inputs (see [`Settings::passes`]); `Break` stops and gives `None`.
pub fn measure(
    input: Input,
    map: &[f32],
    settings: Settings,
    batch: usize,
    device: &Device,
    score: &mut Score,
    progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>,
) -> candle_core::Result<Option<Scores>> {
    let total = settings.passes(input.pixels());
    let mut done = 0;
    let mut step =
        |n: usize, progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>| {
            done += n;
            progress(done, total).is_break()
        };
    let cam_mult_change = cam_mult_image(input, map, device, score)?;
    if step(2, progress) {
        return Ok(None);
    }
    let mut road_orders = [[0f32; 4]; 2];
    for (scores, order) in road_orders
        .iter_mut()
        .zip([Order::MostRelevantFirst, Order::LeastRelevantFirst])
    {
        let changes = road(
            input,
            map,
            order,
            &ROAD_PERCENTILES,
            settings.noise,
            device,
            score,
        )?;
        scores.copy_from_slice(&changes);
        if step(1 + ROAD_PERCENTILES.len(), progress) {
            return Ok(None);
        }
    }
    let before = done;
    let curves = deletion_insertion(
        input,
        map,
        settings.step,
        batch,
        device,
        score,
        &mut |curve_done, _| progress(before + curve_done, total),
    )?;
    let Some(curves) = curves else {
        return Ok(None);
    };
    let [road_most_relevant_first, road_least_relevant_first] = road_orders;
    Ok(Some(Scores {
        confidence: curves.deletion.first().copied().unwrap_or(0.0),
        cam_mult_change,
        road_most_relevant_first,
        road_least_relevant_first,
        deletion_auc: Curves::area(&curves.deletion),
        insertion_auc: Curves::area(&curves.insertion),
    }))
}

/// [`measure`] with a classifier's model: `class`'s softmax probability, on the input the
/// model was given (1 × 3 × H × W on the model's device), `map` at the input's size.
pub fn measure_class(
    model: &super::resnet::ResNet,
    input: &Tensor,
    class: usize,
    map: &[f32],
    settings: Settings,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize) -> std::ops::ControlFlow<()>,
) -> candle_core::Result<Option<Scores>> {
    let (_, channels, height, width) = input.dims4()?;
    let values = input.flatten_all()?.to_vec1::<f32>()?;
    let input_values = Input {
        channels,
        height,
        width,
        values: &values,
    };
    let mut score = |x: &Tensor| -> candle_core::Result<Vec<f32>> {
        let logits = model.forward(x)?.logits;
        candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?
            .narrow(1, class, 1)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    measure(
        input_values,
        map,
        settings,
        batch,
        input.device(),
        &mut score,
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_percentiles() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 50.0) - 2.5).abs() < 1e-6);
        assert!((percentile(&v, 20.0) - 1.6).abs() < 1e-6);
    }

    #[test]
    fn imputed_pixels_are_the_weighted_mean_of_their_neighbours() {
        let (h, w) = (6, 7);
        let values: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 37) % 11) as f32 / 3.0)
            .collect();
        let input = Input {
            channels: 2,
            height: h,
            width: w,
            values: &values,
        };
        let keep: Vec<bool> = (0..h * w)
            .map(|i| !(i % 5 == 0 || i == 8 || i == 9))
            .collect();
        let out = impute(input, &keep, 0.0, &mut Normal::new(0));
        for c in 0..2 {
            let plane = &out[c * h * w..(c + 1) * h * w];
            for i in (0..h * w).filter(|&i| !keep[i]) {
                let (y, x) = ((i / w) as isize, (i % w) as isize);
                let (mut sum, mut weights) = (0f64, 0f64);
                for ((dy, dx), weight) in NEIGHBOURS {
                    let (ny, nx) = (y + dy, x + dx);
                    if (0..h as isize).contains(&ny) && (0..w as isize).contains(&nx) {
                        sum += weight * f64::from(plane[(ny * w as isize + nx) as usize]);
                        weights += weight;
                    }
                }
                assert!(
                    (f64::from(plane[i]) - sum / weights).abs() < 1e-5,
                    "pixel {i}"
                );
            }
            for i in (0..h * w).filter(|&i| keep[i]) {
                assert_eq!(plane[i], values[c * h * w + i]);
            }
        }
    }

    #[test]
    fn normal_samples_look_normal() {
        let mut normal = Normal::new(7);
        let samples: Vec<f64> = (0..20000).map(|_| f64::from(normal.sample())).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }

    #[test]
    fn opencv_upsampling_keeps_a_flat_map_and_interpolates_between_centres() {
        // 2 × 1 grid → 4 × 1: pixel centres at 0.25, 0.75, 1.25, 1.75 of the grid's cells.
        let map = upsample_like_opencv(&[0.0, 1.0], 2, 1, 4, 1);
        // Before min–max: 0, 0.25, 0.75, 1 (the outer pixels clamp to the edge cells).
        let expected = [0.0, 0.25, 0.75, 1.0];
        for (m, e) in map.iter().zip(expected) {
            assert!((m - e).abs() < 1e-6, "{map:?}");
        }
    }

    #[test]
    fn deletion_and_insertion_walk_from_start_to_finish_in_saliency_order() {
        let (h, w) = (3, 4);
        let values: Vec<f32> = (0..3 * h * w).map(|i| 1.0 + (i % 7) as f32).collect();
        let input = Input {
            channels: 3,
            height: h,
            width: w,
            values: &values,
        };
        let map: Vec<f32> = (0..h * w).map(|i| ((i * 5) % 12) as f32 / 11.0).collect();
        // A stand-in model: the confidence is the input's sum.
        let mut score = |x: &Tensor| -> candle_core::Result<Vec<f32>> {
            x.flatten_from(1)?.sum(1)?.to_vec1::<f32>()
        };
        let mut calls = 0;
        let curves =
            deletion_insertion(input, &map, 5, 2, &Device::Cpu, &mut score, &mut |_, _| {
                calls += 1;
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            .unwrap();
        // 12 pixels, 5 a step: 3 steps, 4 points a curve.
        assert_eq!(curves.deletion.len(), 4);
        assert_eq!(curves.insertion.len(), 4);
        assert_eq!(calls, 4, "two batches of two points a curve");
        let total: f32 = values.iter().sum();
        assert!((curves.deletion[0] - total).abs() < 1e-3);
        assert!(curves.deletion[3].abs() < 1e-3);
        assert!((curves.insertion[3] - total).abs() < 1e-3);
        // The first deletion step removes the five most salient pixels.
        let mut order: Vec<usize> = (0..h * w).collect();
        order.sort_by(|&a, &b| map[b].total_cmp(&map[a]).then(a.cmp(&b)));
        let removed: f32 = order[..5]
            .iter()
            .map(|&p| (0..3).map(|c| values[c * h * w + p]).sum::<f32>())
            .sum();
        assert!((curves.deletion[1] - (total - removed)).abs() < 1e-3);
        assert!((Curves::area(&[1.0, 0.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn measure_gathers_the_single_scores_and_counts_its_passes() {
        let (h, w) = (5, 6);
        let values: Vec<f32> = (0..3 * h * w)
            .map(|i| ((i * 13) % 9) as f32 / 4.0 - 1.0)
            .collect();
        let input = Input {
            channels: 3,
            height: h,
            width: w,
            values: &values,
        };
        let map: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 30) as f32 / 29.0).collect();
        // A stand-in model whose confidence is a logistic of the input's weighted sum.
        let mut score = |x: &Tensor| -> candle_core::Result<Vec<f32>> {
            let sums = x.flatten_from(1)?.sum(1)?.to_vec1::<f32>()?;
            Ok(sums
                .iter()
                .map(|s| 1.0 / (1.0 + (-s / 20.0).exp()))
                .collect())
        };
        let settings = Settings {
            step: 7,
            noise: Noise {
                amount: Noise::ROAD,
                seed: 3,
            },
        };
        let mut last = (0, 0);
        let scores = measure(
            input,
            &map,
            settings,
            3,
            &Device::Cpu,
            &mut score,
            &mut |d, t| {
                assert!(d > last.0 && d <= t, "progress goes forward: {d} of {t}");
                last = (d, t);
                std::ops::ControlFlow::Continue(())
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(last.0, last.1, "ends at its total");
        assert_eq!(last.1, settings.passes(h * w));
        // 30 pixels, 7 a step: 5 steps, 6 points a curve.
        assert_eq!(last.1, 2 + 10 + 12);
        let mut score_alone = |x: &Tensor| -> candle_core::Result<Vec<f32>> {
            let sums = x.flatten_from(1)?.sum(1)?.to_vec1::<f32>()?;
            Ok(sums
                .iter()
                .map(|s| 1.0 / (1.0 + (-s / 20.0).exp()))
                .collect())
        };
        let device = Device::Cpu;
        let change = cam_mult_image(input, &map, &device, &mut score_alone).unwrap();
        assert_eq!(scores.cam_mult_change, change);
        for (order, got) in [
            (Order::MostRelevantFirst, scores.road_most_relevant_first),
            (Order::LeastRelevantFirst, scores.road_least_relevant_first),
        ] {
            let want = road(
                input,
                &map,
                order,
                &ROAD_PERCENTILES,
                settings.noise,
                &device,
                &mut score_alone,
            )
            .unwrap();
            assert_eq!(got.to_vec(), want);
        }
        let curves =
            deletion_insertion(input, &map, 7, 3, &device, &mut score_alone, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            .unwrap();
        assert_eq!(scores.confidence, curves.deletion[0]);
        assert_eq!(scores.deletion_auc, Curves::area(&curves.deletion));
        assert_eq!(scores.insertion_auc, Curves::area(&curves.insertion));

        // Stopped after ROAD: no scores, and no curve was scored.
        let mut calls = 0;
        let stopped = measure(
            input,
            &map,
            settings,
            3,
            &device,
            &mut score_alone,
            &mut |d, _| {
                calls += 1;
                if d >= 12 {
                    std::ops::ControlFlow::Break(())
                } else {
                    std::ops::ControlFlow::Continue(())
                }
            },
        )
        .unwrap();
        assert_eq!(stopped, None);
        assert_eq!(calls, 3);
    }

    #[test]
    fn the_derived_scores_by_hand() {
        let scores = Scores {
            confidence: 0.8,
            cam_mult_change: -0.2,
            road_most_relevant_first: [-0.1, -0.2, -0.3, -0.4],
            road_least_relevant_first: [0.0, -0.1, 0.1, 0.2],
            deletion_auc: 0.1,
            insertion_auc: 0.6,
        };
        assert!((scores.drop() - 0.25).abs() < 1e-6);
        assert!(!scores.increased());
        // (0.05 − (−0.25)) / 2
        assert!((scores.road_combined() - 0.15).abs() < 1e-6);
        let rose = Scores {
            cam_mult_change: 0.1,
            ..scores
        };
        assert_eq!(rose.drop(), 0.0);
        assert!(rose.increased());
    }
}
