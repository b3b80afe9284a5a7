//! The CAM family at layer 4, for networks that end in global average pooling and one linear
//! layer (every ResNet camview runs).
//!
//! For such a network the class score is y_c = Σ_k w_ck · mean(f_k) + b_c, so its gradient
//! with respect to the layer-4 map is the same at every cell: ∂y_c/∂f_k(x, y) = w_ck / (H·W).
//! The gradient methods therefore need no backward pass, and several coincide:
//!
//! - Grad-CAM (channel weight = mean gradient), HiResCAM (gradient × activation, summed over
//!   channels) and XGrad-CAM (Σ gradient·activation / Σ activation) all give w_ck / (H·W)
//!   for each channel: CAM times a positive constant, the same map once scaled.
//! - Grad-CAM++ weights a channel by relu(g) · Σ_xy α_xy with α = g² / (2g² + Σ_xy f_k · g³),
//!   g = w_ck / (H·W): a closed form in the weights and the map. It is written here as
//!   pytorch-grad-cam computes it (with its ε = 1e-6 in the denominator, which at ResNet-50's
//!   gradients of ~1e-4 outweighs the 2g² term, so the ε is part of the method as used).
//! - LayerCAM keeps the positive gradients only: Σ_k relu(w_ck) · f_k, CAM without the
//!   channels that speak against the class.
//! - Ablation-CAM zeroes one channel at a time and weighs it by the score's relative drop:
//!   with a linear head the drop is w_ck · mean(f_k), so the weight is w_ck · mean(f_k) / y_c
//!   — no extra forward pass.
//! - EigenCAM is the map's first principal component (class-agnostic): the cells, each a
//!   vector of channels, centred, projected on the first right singular vector.
//! - Score-CAM needs forward passes: the input masked by each channel's upsampled,
//!   min–max-scaled map, the class score of each masked input, a softmax over channels
//!   ([`score_cam_masks`], [`score_cam_weights`]).
//!
//! Every method yields a raw [`CamGrid`]; ReLU and min–max scaling happen where any CAM is
//! shown ([`CamGrid::normalised`]), as pytorch-grad-cam scales its maps.

use candle_core::{Device, Tensor};

use super::cam::CamGrid;

/// How a class's map is made from the layer-4 features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum CamMethod {
    /// Zhou et al., CVPR 2016 (equal, once scaled, to Grad-CAM, HiResCAM and XGrad-CAM here).
    #[default]
    Cam,
    /// Chattopadhay et al., WACV 2018.
    #[value(name = "gradcam++")]
    GradCamPlusPlus,
    /// Jiang et al., IEEE TIP 2021.
    #[value(name = "layercam")]
    LayerCam,
    /// Desai and Ramaswamy, WACV 2020.
    #[value(name = "ablationcam")]
    AblationCam,
    /// Muhammad and Yeasin, IJCNN 2020 (the same map for every class).
    #[value(name = "eigencam")]
    EigenCam,
    /// Wang et al., CVPR workshops 2020 (one forward pass a channel).
    #[value(name = "scorecam")]
    ScoreCam,
}

impl CamMethod {
    pub const ALL: [Self; 6] = [
        Self::Cam,
        Self::GradCamPlusPlus,
        Self::LayerCam,
        Self::AblationCam,
        Self::EigenCam,
        Self::ScoreCam,
    ];

    /// The name on the command line and on screen.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cam => "cam",
            Self::GradCamPlusPlus => "gradcam++",
            Self::LayerCam => "layercam",
            Self::AblationCam => "ablationcam",
            Self::EigenCam => "eigencam",
            Self::ScoreCam => "scorecam",
        }
    }

    /// The name as the papers and the screen write it.
    pub fn title(self) -> &'static str {
        match self {
            Self::Cam => "CAM",
            Self::GradCamPlusPlus => "Grad-CAM++",
            Self::LayerCam => "LayerCAM",
            Self::AblationCam => "Ablation-CAM",
            Self::EigenCam => "EigenCAM",
            Self::ScoreCam => "Score-CAM",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the map needs forward passes of its own (one a channel), beyond the image's.
    pub fn needs_forward_passes(self) -> bool {
        self == Self::ScoreCam
    }

    /// Whether the map depends on the class.
    pub fn is_class_specific(self) -> bool {
        self != Self::EigenCam
    }
}

/// One image's layer-4 map, channel-major: `channels` planes of `height` × `width` cells.
#[derive(Debug, Clone, Copy)]
pub struct FeatureMap<'a> {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub values: &'a [f32],
}

impl<'a> FeatureMap<'a> {
    /// Panics if `values` does not hold `channels × height × width` values.
    pub fn new(channels: usize, height: usize, width: usize, values: &'a [f32]) -> Self {
        assert_eq!(values.len(), channels * height * width, "feature map size");
        Self {
            channels,
            height,
            width,
            values,
        }
    }

    fn cells(&self) -> usize {
        self.height * self.width
    }

    fn plane(&self, k: usize) -> &'a [f32] {
        &self.values[k * self.cells()..(k + 1) * self.cells()]
    }

    /// Σ_k weight_k · f_k, accumulated in f64.
    pub fn weighted_sum(&self, weights: &[f64]) -> CamGrid {
        assert_eq!(weights.len(), self.channels, "one weight a channel");
        let mut sum = vec![0f64; self.cells()];
        for (k, &weight) in weights.iter().enumerate() {
            if weight == 0.0 {
                continue;
            }
            for (s, &v) in sum.iter_mut().zip(self.plane(k)) {
                *s += weight * f64::from(v);
            }
        }
        self.grid(sum)
    }

    fn grid(&self, values: Vec<f64>) -> CamGrid {
        CamGrid {
            width: self.width,
            height: self.height,
            values: values.into_iter().map(|v| v as f32).collect(),
        }
    }
}

/// What the linear head says of one class: its weight row (one a channel) and its score
/// (the logit, bias included).
#[derive(Debug, Clone, Copy)]
pub struct ClassHead<'a> {
    pub weights: &'a [f32],
    pub logit: f32,
}

/// pytorch-grad-cam's ε in Grad-CAM++'s denominator.
const GRADCAM_PLUS_PLUS_EPS: f64 = 1e-6;

/// The raw map of `method` for one class, for every method but Score-CAM (which needs forward
/// passes: [`score_cam_weights`]); `None` for Score-CAM.
pub fn class_map(method: CamMethod, features: &FeatureMap, head: ClassHead) -> Option<CamGrid> {
    assert_eq!(
        head.weights.len(),
        features.channels,
        "one weight a channel"
    );
    let cells = features.cells() as f64;
    let weights = head.weights.iter().map(|&w| f64::from(w));
    let channel_weights: Vec<f64> = match method {
        CamMethod::Cam => weights.collect(),
        CamMethod::GradCamPlusPlus => weights
            .enumerate()
            .map(|(k, w)| {
                let g = w / cells;
                if g <= 0.0 {
                    return 0.0;
                }
                let sum: f64 = features.plane(k).iter().map(|&v| f64::from(v)).sum();
                let alpha = g * g / (2.0 * g * g + sum * g * g * g + GRADCAM_PLUS_PLUS_EPS);
                // Σ over the cells of relu(g) · α, the same at every cell.
                cells * g * alpha
            })
            .collect(),
        CamMethod::LayerCam => weights.map(|w| w.max(0.0)).collect(),
        CamMethod::AblationCam => {
            let score = f64::from(head.logit);
            weights
                .enumerate()
                .map(|(k, w)| {
                    let mean = features.plane(k).iter().map(|&v| f64::from(v)).sum::<f64>() / cells;
                    w * mean / score
                })
                .collect()
        }
        CamMethod::EigenCam => return Some(eigen_cam(features)),
        CamMethod::ScoreCam => return None,
    };
    Some(features.weighted_sum(&channel_weights))
}

/// The cells' projection on the first principal component of the map (cells as samples,
/// channels as variables). With X the centred cells × channels matrix, the projection X·v₁
/// equals σ₁·u₁, u₁ the leading eigenvector of the small cells × cells matrix X·Xᵀ, so no
/// channels × channels matrix is formed. A singular vector's sign is arbitrary: it is chosen
/// so that the projection's largest magnitude is positive (what the eye reads as the object).
pub fn eigen_cam(features: &FeatureMap) -> CamGrid {
    let n = features.cells();
    let k = features.channels;
    // Centre each channel over the cells.
    let centred: Vec<f64> = (0..k)
        .flat_map(|c| {
            let plane = features.plane(c);
            let mean = plane.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            plane.iter().map(move |&v| f64::from(v) - mean)
        })
        .collect();
    let mut gram = vec![0f64; n * n];
    for c in 0..k {
        let plane = &centred[c * n..(c + 1) * n];
        for i in 0..n {
            let a = plane[i];
            if a == 0.0 {
                continue;
            }
            for j in i..n {
                gram[i * n + j] += a * plane[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            gram[i * n + j] = gram[j * n + i];
        }
    }
    let (value, vector) = leading_eigenpair(&gram, n);
    let sigma = value.max(0.0).sqrt();
    let mut projection: Vec<f64> = vector.iter().map(|u| sigma * u).collect();
    let largest = projection
        .iter()
        .copied()
        .fold(0f64, |m, v| if v.abs() > m.abs() { v } else { m });
    if largest < 0.0 {
        projection.iter_mut().for_each(|v| *v = -*v);
    }
    features.grid(projection)
}

/// The largest eigenvalue of a symmetric positive semi-definite n × n matrix and its unit
/// eigenvector, by power iteration (n² a step: a few milliseconds where Jacobi rotations took
/// n³ a sweep, 17 ms for a 7 × 11 map and seconds for the largest). It converges at the rate
/// λ₂/λ₁; where the two are nearly equal the leading direction is not defined by the map
/// either, and any vector of that plane is as good an answer.
fn leading_eigenpair(matrix: &[f64], n: usize) -> (f64, Vec<f64>) {
    let product = |v: &[f64]| -> Vec<f64> {
        matrix
            .chunks(n)
            .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
            .collect()
    };
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    // Start from the matrix's row sums (plus a ramp, in case they vanish): not orthogonal to
    // the leading direction unless by an exact coincidence.
    let mut v: Vec<f64> = matrix
        .chunks(n)
        .enumerate()
        .map(|(i, row)| row.iter().sum::<f64>() + 1e-3 * (i + 1) as f64)
        .collect();
    let length = norm(&v);
    if length == 0.0 || !length.is_finite() {
        return (0.0, vec![0.0; n]);
    }
    v.iter_mut().for_each(|x| *x /= length);
    let mut value = 0.0;
    for _ in 0..10_000 {
        let next = product(&v);
        let length = norm(&next);
        if length == 0.0 {
            return (0.0, v);
        }
        let next: Vec<f64> = next.into_iter().map(|x| x / length).collect();
        let moved = next
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        v = next;
        value = length;
        if moved < 1e-13 {
            break;
        }
    }
    (value, v)
}

/// Score-CAM's masks for channels `range` of the map: each channel upsampled to the input's
/// `height` × `width` (bilinear, corners aligned, as torch's `UpsamplingBilinear2d`), scaled
/// to 0..1 (min–max, + 1e-8 in the span), one mask a row: `range.len()` × height × width.
pub fn score_cam_masks(
    features: &FeatureMap,
    range: std::ops::Range<usize>,
    height: usize,
    width: usize,
) -> Vec<f32> {
    let (h, w) = (features.height, features.width);
    // Where each output row and column falls on the grid, corners aligned.
    let taps = |out: usize, grid: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|o| {
                let x = if out > 1 {
                    o as f32 * (grid - 1) as f32 / (out - 1) as f32
                } else {
                    0.0
                };
                let lo = (x.floor() as usize).min(grid - 1);
                let hi = (lo + 1).min(grid - 1);
                (lo, hi, x - lo as f32)
            })
            .collect()
    };
    let rows = taps(height, h);
    let cols = taps(width, w);
    let mut masks = Vec::with_capacity(range.len() * height * width);
    for k in range {
        let plane = features.plane(k);
        let start = masks.len();
        for &(r0, r1, fy) in &rows {
            for &(c0, c1, fx) in &cols {
                let top = plane[r0 * w + c0] * (1.0 - fx) + plane[r0 * w + c1] * fx;
                let bottom = plane[r1 * w + c0] * (1.0 - fx) + plane[r1 * w + c1] * fx;
                masks.push(top * (1.0 - fy) + bottom * fy);
            }
        }
        let mask = &mut masks[start..];
        let (lo, hi) = mask
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = hi - lo + 1e-8;
        mask.iter_mut().for_each(|v| *v = (*v - lo) / span);
    }
    masks
}

/// The network inputs Score-CAM scores for channels `range`: the image's input
/// (1 × 3 × H × W) times each channel's mask, `range.len()` × 3 × H × W on `device`.
pub fn score_cam_inputs(
    input: &Tensor,
    features: &FeatureMap,
    range: std::ops::Range<usize>,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (_, _, height, width) = input.dims4()?;
    let count = range.len();
    let masks = score_cam_masks(features, range, height, width);
    let masks = Tensor::from_vec(masks, (count, 1, height, width), device)?;
    masks.broadcast_mul(&input.to_device(device)?)
}

/// Score-CAM's map of `class` for one image: its `input` (1 × 3 × H × W) and layer-4
/// `features`, the masked inputs scored `batch` at a time by `forward` (inputs → logits,
/// n × classes). `progress(done, total)` is called after each batch; `Break` stops the
/// passes and gives `None`.
pub fn score_cam(
    input: &Tensor,
    features: &FeatureMap,
    class: usize,
    batch: usize,
    forward: impl FnMut(&Tensor) -> candle_core::Result<Tensor>,
    progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
) -> candle_core::Result<Option<CamGrid>> {
    let maps = score_cam_classes(input, features, &[class], batch, forward, progress)?;
    Ok(maps.and_then(|maps| maps.into_iter().next()))
}

/// Score-CAM's maps of several `classes` from one set of masked passes (each pass scores
/// every class at once), as [`score_cam`] makes one class's.
pub fn score_cam_classes(
    input: &Tensor,
    features: &FeatureMap,
    classes: &[usize],
    batch: usize,
    mut forward: impl FnMut(&Tensor) -> candle_core::Result<Tensor>,
    mut progress: impl FnMut(usize, usize) -> std::ops::ControlFlow<()>,
) -> candle_core::Result<Option<Vec<CamGrid>>> {
    let total = features.channels;
    // One row of scores a class, one score a channel.
    let mut scores = vec![Vec::with_capacity(total); classes.len()];
    let mut start = 0;
    while start < total {
        let end = (start + batch.max(1)).min(total);
        let masked = score_cam_inputs(input, features, start..end, input.device())?;
        let logits = forward(&masked)?;
        for (row, &class) in scores.iter_mut().zip(classes) {
            row.extend(
                logits
                    .narrow(1, class, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        start = end;
        if progress(start, total).is_break() {
            return Ok(None);
        }
    }
    let maps = scores
        .iter()
        .map(|row| features.weighted_sum(&score_cam_weights(row)))
        .collect();
    Ok(Some(maps))
}

/// Score-CAM's channel weights from each masked input's class score: a softmax over channels.
pub fn score_cam_weights(scores: &[f32]) -> Vec<f64> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = scores.iter().map(|&s| f64::from(s - max).exp()).collect();
    let total: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_data::noise;

    fn relu_noise(count: usize, seed: u32) -> Vec<f32> {
        noise(count, seed).into_iter().map(|v| v.max(0.0)).collect()
    }

    #[test]
    fn the_leading_eigenpair_is_found() {
        // A symmetric matrix with known spectrum: Q diag(5, 2, 0.5) Qᵀ for a rotation Q.
        let (c, s) = (0.6f64, 0.8f64);
        let q = [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0];
        let d = [5.0, 2.0, 0.5];
        let mut m = [0f64; 9];
        for i in 0..3 {
            for j in 0..3 {
                m[i * 3 + j] = (0..3).map(|k| q[i * 3 + k] * d[k] * q[j * 3 + k]).sum();
            }
        }
        let (value, vector) = leading_eigenpair(&m, 3);
        assert!((value - 5.0).abs() < 1e-12, "{value}");
        let dot = vector[0] * c + vector[1] * s;
        assert!((dot.abs() - 1.0).abs() < 1e-12, "{vector:?}");
    }

    #[test]
    fn the_gradient_methods_weigh_channels_as_their_closed_forms_say() {
        let (k, h, w) = (6, 3, 4);
        let values = relu_noise(k * h * w, 1);
        let features = FeatureMap::new(k, h, w, &values);
        let weights = noise(k, 2);
        let head = ClassHead {
            weights: &weights,
            logit: 1.5,
        };
        let cam = class_map(CamMethod::Cam, &features, head).unwrap();
        // CAM by hand at one cell.
        let cell = 5;
        let by_hand: f32 = (0..k).map(|c| weights[c] * values[c * h * w + cell]).sum();
        assert!((cam.values[cell] - by_hand).abs() < 1e-5);
        // LayerCAM: the negative weights' channels contribute nothing.
        let layer = class_map(CamMethod::LayerCam, &features, head).unwrap();
        let by_hand: f32 = (0..k)
            .map(|c| weights[c].max(0.0) * values[c * h * w + cell])
            .sum();
        assert!((layer.values[cell] - by_hand).abs() < 1e-5);
        // Ablation-CAM: zeroing channel c lowers the score by w_c · mean(f_c).
        let ablation = class_map(CamMethod::AblationCam, &features, head).unwrap();
        let by_hand: f32 = (0..k)
            .map(|c| {
                let plane = &values[c * h * w..(c + 1) * h * w];
                let mean = plane.iter().sum::<f32>() / (h * w) as f32;
                weights[c] * mean / 1.5 * plane[cell]
            })
            .sum();
        assert!((ablation.values[cell] - by_hand).abs() < 1e-5);
    }

    #[test]
    fn eigen_cam_is_the_first_principal_component() {
        // Cells that vary along one direction of channel space (plus a little noise) project
        // onto that direction.
        let (k, h, w) = (8, 2, 5);
        let direction = noise(k, 3);
        let amount = noise(h * w, 4);
        let jitter = noise(k * h * w, 5);
        let values: Vec<f32> = (0..k)
            .flat_map(|c| {
                let (direction, amount, jitter) = (&direction, &amount, &jitter);
                (0..h * w).map(move |i| direction[c] * amount[i] + 1e-3 * jitter[c * h * w + i])
            })
            .collect();
        let grid = eigen_cam(&FeatureMap::new(k, h, w, &values));
        let mean = amount.iter().sum::<f32>() / amount.len() as f32;
        let centred: Vec<f32> = amount.iter().map(|a| a - mean).collect();
        let norm = direction.iter().map(|d| d * d).sum::<f32>().sqrt();
        for (g, a) in grid.values.iter().zip(&centred) {
            assert!(
                (g.abs() - (a * norm).abs()).abs() < 1e-2,
                "{g} vs {}",
                a * norm
            );
        }
    }

    #[test]
    fn score_cam_masks_span_zero_to_one_and_keep_the_corners() {
        let (k, h, w) = (2, 3, 3);
        let values = relu_noise(k * h * w, 6);
        let features = FeatureMap::new(k, h, w, &values);
        let masks = score_cam_masks(&features, 0..2, 9, 5);
        assert_eq!(masks.len(), 2 * 9 * 5);
        for (c, mask) in masks.chunks(45).enumerate() {
            let plane = &values[c * 9..(c + 1) * 9];
            let lo = plane.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = plane.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let scaled = |v: f32| (v - lo) / (hi - lo + 1e-8);
            // Aligned corners: the mask's corners are the grid's corners.
            assert!((mask[0] - scaled(plane[0])).abs() < 1e-6);
            assert!((mask[4] - scaled(plane[2])).abs() < 1e-6);
            assert!((mask[40] - scaled(plane[6])).abs() < 1e-6);
            assert!((mask[44] - scaled(plane[8])).abs() < 1e-6);
            // The centre cell of the grid lands on the centre pixel.
            assert!((mask[4 * 5 + 2] - scaled(plane[4])).abs() < 1e-6);
        }
        let weights = score_cam_weights(&[1.0, 2.0, 3.0]);
        assert!((weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(weights[2] > weights[1] && weights[1] > weights[0]);
    }

    #[test]
    fn score_cam_scores_every_channel_in_batches_and_can_stop() {
        let (k, h, w) = (5, 2, 2);
        let values = relu_noise(k * h * w, 7);
        let features = FeatureMap::new(k, h, w, &values);
        let pixels = noise(3 * 8 * 8, 8);
        let input = Tensor::from_vec(pixels.clone(), (1, 3, 8, 8), &Device::Cpu).unwrap();
        // A stand-in network with two classes: class 1 scores the masked input's sum.
        let forward = |x: &Tensor| {
            let sum = x.flatten_from(1)?.sum_keepdim(1)?;
            Tensor::cat(&[&sum.zeros_like()?, &sum], 1)
        };
        let mut batches = 0;
        let map = score_cam(&input, &features, 1, 2, forward, |_, _| {
            batches += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(batches, 3, "5 channels, 2 a batch");
        let masks = score_cam_masks(&features, 0..k, 8, 8);
        let scores: Vec<f32> = masks
            .chunks(64)
            .map(|mask| {
                (0..3)
                    .map(|c| (0..64).map(|i| mask[i] * pixels[c * 64 + i]).sum::<f32>())
                    .sum()
            })
            .collect();
        let by_hand = features.weighted_sum(&score_cam_weights(&scores));
        for (a, b) in map.values.iter().zip(&by_hand.values) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let stopped = score_cam(&input, &features, 1, 2, forward, |_, _| {
            std::ops::ControlFlow::Break(())
        })
        .unwrap();
        assert!(stopped.is_none());
        // Several classes from one set of passes: each as if it were made alone.
        let mut batches = 0;
        let both = score_cam_classes(&input, &features, &[0, 1], 2, forward, |_, _| {
            batches += 1;
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
        assert_eq!(batches, 3, "one set of passes for both classes");
        assert_eq!(both[1], map);
        // Class 0 scores 0 on every masked input: equal weights.
        let uniform = features.weighted_sum(&vec![1.0 / k as f64; k]);
        for (a, b) in both[0].values.iter().zip(&uniform.values) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn methods_have_names() {
        for m in CamMethod::ALL {
            assert_eq!(CamMethod::from_name(m.name()), Some(m));
        }
    }
}
