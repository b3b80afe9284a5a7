//! Class Activation Maps for display (Zhou et al., "Learning Deep Features for Discriminative
//! Localization", CVPR 2016): ReLU and min–max normalisation of the raw map, bilinear
//! upsampling onto the image, colormaps, alpha blending, and the paper's bounding box.

use image::{Rgb, RgbImage};

use super::preprocess::Region;

/// A raw CAM on the layer-4 grid: fc row · features, no bias, no ReLU, no scaling.
#[derive(Debug, Clone, PartialEq)]
pub struct CamGrid {
    pub width: usize,
    pub height: usize,
    /// Row-major, `height` rows of `width` values.
    pub values: Vec<f32>,
}

impl CamGrid {
    /// Rows of values, for JSON output.
    pub fn rows(&self) -> Vec<&[f32]> {
        self.values.chunks(self.width.max(1)).collect()
    }

    /// ReLU, then min–max normalised to 0..1 (all zeros when the map is flat).
    pub fn normalised(&self) -> Vec<f32> {
        let relu: Vec<f32> = self.values.iter().map(|v| v.max(0.0)).collect();
        let (lo, hi) = relu
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let span = hi - lo;
        if span > 0.0 && span.is_finite() {
            relu.iter().map(|v| (v - lo) / span).collect()
        } else {
            vec![0.0; relu.len()]
        }
    }
}

/// A heat map at image resolution, values in 0..1.
#[derive(Debug, Clone, PartialEq)]
pub struct Heat {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

/// Upsamples the normalised `grid` bilinearly onto a `width` × `height` image whose pixels
/// in `region` are the ones the network saw; pixels outside it (the crop margin of `center`
/// mode) get 0. Sample positions use pixel centres, as `align_corners=False` does.
pub fn upsample(grid: &CamGrid, region: Region, width: u32, height: u32) -> Heat {
    let norm = grid.normalised();
    let (gw, gh) = (grid.width, grid.height);
    let mut values = vec![0f32; width as usize * height as usize];
    if gw == 0 || gh == 0 {
        return Heat {
            width,
            height,
            values,
        };
    }
    let axis = |p: u32, lo: f32, hi: f32, n: usize| -> Option<(usize, usize, f32)> {
        let centre = p as f32 + 0.5;
        if centre < lo || centre > hi {
            return None;
        }
        let g = ((centre - lo) / (hi - lo) * n as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i0 = g.floor() as usize;
        let i1 = (i0 + 1).min(n - 1);
        Some((i0, i1, g - i0 as f32))
    };
    let cols: Vec<_> = (0..width)
        .map(|x| axis(x, region.x0, region.x1, gw))
        .collect();
    for y in 0..height {
        let Some((r0, r1, fy)) = axis(y, region.y0, region.y1, gh) else {
            continue;
        };
        let row = &mut values[y as usize * width as usize..][..width as usize];
        for (out, col) in row.iter_mut().zip(&cols) {
            let Some((c0, c1, fx)) = *col else { continue };
            let top = norm[r0 * gw + c0] * (1.0 - fx) + norm[r0 * gw + c1] * fx;
            let bottom = norm[r1 * gw + c0] * (1.0 - fx) + norm[r1 * gw + c1] * fx;
            *out = top * (1.0 - fy) + bottom * fy;
        }
    }
    Heat {
        width,
        height,
        values,
    }
}

/// Colour scales for the heat map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Colormap {
    /// The classic rainbow of the CAM paper and OpenCV's `COLORMAP_JET`.
    #[default]
    Jet,
    /// Google's improved rainbow.
    Turbo,
    /// Perceptually uniform, colour-blind friendly.
    Viridis,
    /// Perceptually uniform, black → yellow.
    Inferno,
}

impl Colormap {
    /// All colormaps, in the order the UI cycles through them.
    pub const ALL: [Colormap; 4] = [
        Colormap::Jet,
        Colormap::Turbo,
        Colormap::Viridis,
        Colormap::Inferno,
    ];

    /// The colour of `t` in 0..1.
    pub fn color(self, t: f32) -> Rgb<u8> {
        let t = t.clamp(0.0, 1.0);
        let from = |g: colorous::Gradient| {
            let c = g.eval_continuous(f64::from(t));
            Rgb([c.r, c.g, c.b])
        };
        match self {
            // colorous has no jet; it is three clamped ramps.
            Colormap::Jet => {
                let ramp = |centre: f32| {
                    ((1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8
                };
                Rgb([ramp(3.0), ramp(2.0), ramp(1.0)])
            }
            Colormap::Turbo => from(colorous::TURBO),
            Colormap::Viridis => from(colorous::VIRIDIS),
            Colormap::Inferno => from(colorous::INFERNO),
        }
    }

    /// The lower-case name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Colormap::Jet => "jet",
            Colormap::Turbo => "turbo",
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
        }
    }

    /// The next colormap in [`Colormap::ALL`], wrapping around.
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}

/// The heat map alone, coloured.
pub fn colorize(heat: &Heat, cmap: Colormap) -> RgbImage {
    let lut = lookup_table(cmap);
    RgbImage::from_fn(heat.width, heat.height, |x, y| {
        lut[quantise(heat.values[(y * heat.width + x) as usize])]
    })
}

/// `img` with the coloured heat map laid over it: (1 − α)·image + α·colour.
/// `img` and `heat` must have the same size.
pub fn blend(img: &RgbImage, heat: &Heat, cmap: Colormap, alpha: f32) -> RgbImage {
    let lut = lookup_table(cmap);
    let alpha = alpha.clamp(0.0, 1.0);
    let mut out = img.clone();
    for (px, &v) in out.pixels_mut().zip(&heat.values) {
        let c = lut[quantise(v)];
        for i in 0..3 {
            px[i] = (f32::from(px[i]) * (1.0 - alpha) + f32::from(c[i]) * alpha).round() as u8;
        }
    }
    out
}

fn quantise(v: f32) -> usize {
    (v.clamp(0.0, 1.0) * 255.0).round() as usize
}

fn lookup_table(cmap: Colormap) -> Vec<Rgb<u8>> {
    (0..256).map(|i| cmap.color(i as f32 / 255.0)).collect()
}

/// An axis-aligned box in image pixels: `x0 ≤ x < x1`, `y0 ≤ y < y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct BBox {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl BBox {
    /// The box scaled from an image of `from` size to one of `to` size.
    pub fn scaled(self, from: (u32, u32), to: (u32, u32)) -> Self {
        let sx = f64::from(to.0) / f64::from(from.0.max(1));
        let sy = f64::from(to.1) / f64::from(from.1.max(1));
        let s = |v: u32, k: f64, max: u32| ((f64::from(v) * k).round() as u32).min(max);
        Self {
            x0: s(self.x0, sx, to.0),
            y0: s(self.y0, sy, to.1),
            x1: s(self.x1, sx, to.0),
            y1: s(self.y1, sy, to.1),
        }
    }
}

/// The CAM paper's localisation threshold: 20 % of the map's maximum.
pub const BBOX_THRESHOLD: f32 = 0.2;

/// The box around the largest 8-connected region whose heat is at least `threshold` times the
/// maximum, or `None` when the map is all zero.
pub fn bbox(heat: &Heat, threshold: f32) -> Option<BBox> {
    let max = heat.values.iter().copied().fold(0f32, f32::max);
    if max <= 0.0 {
        return None;
    }
    let cut = threshold * max;
    let (w, h) = (heat.width as usize, heat.height as usize);
    let mut seen = vec![false; w * h];
    let mut best: Option<(usize, BBox)> = None;
    let mut stack = Vec::new();
    for start in 0..w * h {
        if seen[start] || heat.values[start] < cut {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut count, mut b) = (
            0usize,
            BBox {
                x0: u32::MAX,
                y0: u32::MAX,
                x1: 0,
                y1: 0,
            },
        );
        while let Some(i) = stack.pop() {
            count += 1;
            let (x, y) = (i % w, i / w);
            b.x0 = b.x0.min(x as u32);
            b.y0 = b.y0.min(y as u32);
            b.x1 = b.x1.max(x as u32 + 1);
            b.y1 = b.y1.max(y as u32 + 1);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if !seen[j] && heat.values[j] >= cut {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        if best.is_none_or(|(n, _)| count > n) {
            best = Some((count, b));
        }
    }
    best.map(|(_, b)| b)
}

/// The boxes [`bbox`] gives at the thresholds `0 / steps`, `1 / steps`, … `(steps − 1) /
/// steps`, all from one pass (the localisation sweep of Choe et al., CVPR 2020): pixels join
/// threshold by threshold from the top, 8-connected regions merge in a union-find, and as
/// each threshold is crossed the largest region so far is taken (ties, as in [`bbox`], to
/// the region that starts first in scan order).
pub fn bbox_sweep(heat: &Heat, steps: usize) -> Vec<Option<BBox>> {
    let mut boxes = vec![None; steps];
    let max = heat.values.iter().copied().fold(0f32, f32::max);
    if max <= 0.0 || steps == 0 {
        return boxes;
    }
    let (w, h) = (heat.width as usize, heat.height as usize);
    // Pixels are bucketed by the highest threshold they reach: within a bucket the order
    // they join in changes nothing, so no sort is needed.
    let cut = |step: usize| step as f32 / steps as f32 * max;
    let mut buckets: Vec<Vec<u32>> = vec![Vec::new(); steps];
    for (i, &v) in heat.values.iter().enumerate() {
        if v < cut(0) {
            continue;
        }
        let mut step = ((v / max * steps as f32) as usize).min(steps - 1);
        while step + 1 < steps && v >= cut(step + 1) {
            step += 1;
        }
        while step > 0 && v < cut(step) {
            step -= 1;
        }
        buckets[step].push(i as u32);
    }
    let mut regions = Regions::new(w * h);
    let mut best: Option<usize> = None;
    for step in (0..steps).rev() {
        for &i in &buckets[step] {
            let i = i as usize;
            let (x, y) = (i % w, i / w);
            regions.add(i, x as u32, y as u32);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let j = ny * w + nx;
                    if j != i && regions.added(j) {
                        regions.union(i, j);
                    }
                }
            }
            let root = regions.find(i);
            let holder = best.map(|b| regions.find(b));
            if holder.is_none_or(|b| regions.beats(root, b)) {
                best = Some(root);
            }
        }
        if let Some(b) = best {
            let root = regions.find(b);
            boxes[step] = Some(regions.bbox[root]);
        }
    }
    boxes
}

/// Union-find over pixels, with each region's size, box and first pixel in scan order.
struct Regions {
    parent: Vec<u32>,
    size: Vec<u32>,
    first: Vec<u32>,
    bbox: Vec<BBox>,
}

impl Regions {
    const ABSENT: u32 = u32::MAX;

    fn new(n: usize) -> Self {
        Self {
            parent: vec![Self::ABSENT; n],
            size: vec![0; n],
            first: vec![0; n],
            bbox: vec![
                BBox {
                    x0: 0,
                    y0: 0,
                    x1: 0,
                    y1: 0
                };
                n
            ],
        }
    }

    fn added(&self, i: usize) -> bool {
        self.parent[i] != Self::ABSENT
    }

    fn add(&mut self, i: usize, x: u32, y: u32) {
        self.parent[i] = i as u32;
        self.size[i] = 1;
        self.first[i] = i as u32;
        self.bbox[i] = BBox {
            x0: x,
            y0: y,
            x1: x + 1,
            y1: y + 1,
        };
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] as usize != i {
            let up = self.parent[self.parent[i] as usize];
            self.parent[i] = up;
            i = up as usize;
        }
        i
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        let (big, small) = if self.size[a] >= self.size[b] {
            (a, b)
        } else {
            (b, a)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        self.first[big] = self.first[big].min(self.first[small]);
        let (p, q) = (self.bbox[big], self.bbox[small]);
        self.bbox[big] = BBox {
            x0: p.x0.min(q.x0),
            y0: p.y0.min(q.y0),
            x1: p.x1.max(q.x1),
            y1: p.y1.max(q.y1),
        };
    }

    /// True when region `a` is preferred to region `b`: larger, or as large and first.
    fn beats(&self, a: usize, b: usize) -> bool {
        (self.size[a], std::cmp::Reverse(self.first[a]))
            > (self.size[b], std::cmp::Reverse(self.first[b]))
    }
}

/// Draws the outline of `b`, `thickness` pixels wide, onto `img`.
pub fn draw_bbox(img: &mut RgbImage, b: BBox, color: Rgb<u8>, thickness: u32) {
    let (w, h) = img.dimensions();
    if b.x1 <= b.x0 || b.y1 <= b.y0 {
        return;
    }
    for y in b.y0..b.y1.min(h) {
        for x in b.x0..b.x1.min(w) {
            let edge = x < b.x0 + thickness
                || x + thickness >= b.x1
                || y < b.y0 + thickness
                || y + thickness >= b.y1;
            if edge {
                img.put_pixel(x, y, color);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_gives_the_box_of_each_threshold() {
        // Random maps with several blobs: every threshold's box equals bbox() at it.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32
        };
        for (w, h) in [(1, 1), (7, 5), (40, 23), (64, 64)] {
            let values: Vec<f32> = (0..w * h)
                .map(|i| {
                    let (x, y) = ((i % w) as f32, (i / w) as f32);
                    let blob = (-((x - 5.0).powi(2) + (y - 3.0).powi(2)) / 20.0).exp();
                    blob * 0.8 + next() * 0.4 - 0.1
                })
                .collect();
            let heat = Heat {
                width: w as u32,
                height: h as u32,
                values,
            };
            let sweep = bbox_sweep(&heat, 100);
            for (step, got) in sweep.iter().enumerate() {
                let want = bbox(&heat, step as f32 / 100.0);
                assert_eq!(*got, want, "{w}×{h} at {step} %");
            }
        }
        let zero = Heat {
            width: 3,
            height: 2,
            values: vec![0.0; 6],
        };
        assert!(bbox_sweep(&zero, 10).iter().all(Option::is_none));
    }

    fn grid(width: usize, height: usize, values: Vec<f32>) -> CamGrid {
        CamGrid {
            width,
            height,
            values,
        }
    }

    #[test]
    fn normalised_applies_relu_then_min_max() {
        let g = grid(2, 2, vec![-3.0, 0.0, 2.0, 4.0]);
        assert_eq!(g.normalised(), vec![0.0, 0.0, 0.5, 1.0]);
        assert_eq!(grid(2, 1, vec![-1.0, -2.0]).normalised(), vec![0.0, 0.0]);
    }

    #[test]
    fn upsample_keeps_corners_and_interpolates_between() {
        // A 2×1 grid [0, 1] on a 4-pixel-wide image: cell centres sit at x = 1 and x = 3.
        let g = grid(2, 1, vec![0.0, 1.0]);
        let full = Region {
            x0: 0.0,
            y0: 0.0,
            x1: 4.0,
            y1: 1.0,
        };
        let heat = upsample(&g, full, 4, 1);
        assert_eq!(heat.values, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn upsample_leaves_outside_the_region_cold() {
        let g = grid(1, 1, vec![5.0]);
        let centre = Region {
            x0: 1.0,
            y0: 0.0,
            x1: 3.0,
            y1: 1.0,
        };
        // A flat map normalises to zeros, so use two cells.
        let g2 = grid(2, 1, vec![1.0, 1.0 + f32::EPSILON * 4.0]);
        let heat = upsample(&g2, centre, 4, 1);
        assert_eq!(heat.values[0], 0.0);
        assert_eq!(heat.values[3], 0.0);
        assert!(heat.values[2] > 0.0);
        assert_eq!(upsample(&g, centre, 4, 1).values, vec![0.0; 4]);
    }

    #[test]
    fn bbox_picks_the_largest_component_above_threshold() {
        #[rustfmt::skip]
        let values = vec![
            1.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.5, 0.6, 0.0,
            0.0, 0.0, 0.3, 0.9, 0.0,
            0.0, 0.0, 0.0, 0.1, 0.0,
        ];
        let heat = Heat {
            width: 5,
            height: 4,
            values,
        };
        let b = bbox(&heat, BBOX_THRESHOLD).unwrap();
        assert_eq!(
            b,
            BBox {
                x0: 2,
                y0: 1,
                x1: 4,
                y1: 3
            }
        );
        let cold = Heat {
            width: 2,
            height: 1,
            values: vec![0.0, 0.0],
        };
        assert_eq!(bbox(&cold, BBOX_THRESHOLD), None);
    }

    #[test]
    fn colormaps_run_from_cold_to_hot() {
        assert_eq!(Colormap::Jet.color(0.0), Rgb([0, 0, 128]));
        assert_eq!(Colormap::Jet.color(1.0), Rgb([128, 0, 0]));
        assert_eq!(Colormap::Jet.color(0.5), Rgb([128, 255, 128]));
        let dark = |c: Rgb<u8>| c.0.iter().map(|&v| u32::from(v)).sum::<u32>();
        for cmap in [Colormap::Viridis, Colormap::Inferno] {
            assert!(dark(cmap.color(0.0)) < dark(cmap.color(1.0)), "{cmap:?}");
        }
        assert_eq!(Colormap::Inferno.next(), Colormap::Jet);
    }

    #[test]
    fn blend_mixes_by_alpha() {
        let img = RgbImage::from_pixel(1, 1, Rgb([100, 100, 100]));
        let heat = Heat {
            width: 1,
            height: 1,
            values: vec![1.0],
        };
        assert_eq!(
            blend(&img, &heat, Colormap::Jet, 0.0)[(0, 0)],
            Rgb([100, 100, 100])
        );
        assert_eq!(
            blend(&img, &heat, Colormap::Jet, 1.0)[(0, 0)],
            Rgb([128, 0, 0])
        );
        assert_eq!(
            blend(&img, &heat, Colormap::Jet, 0.5)[(0, 0)],
            Rgb([114, 50, 50])
        );
    }
}
