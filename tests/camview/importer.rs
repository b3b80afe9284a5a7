//! The TF.js importer: equal to the reference conversion (`shared/reference/convert_tfjs.py`),
//! and clear errors for broken exports.

use std::path::Path;
use std::process::Command;

use camview::model::tfjs::{self, ImportError};
use camview::model::weights::Weights;

use crate::common::{reference, shared_tarball, weights_path};

/// Unpacks the npm tarball into a temporary folder and returns it with the model folder.
fn unpacked() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(shared_tarball()).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();
    let model = dir.path().join("package/ResNet50");
    (dir, model)
}

fn python_has(modules: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn imported_tensors_equal_the_reference_conversion() {
    // The reference conversion needs numpy + safetensors; CI installs them and sets
    // CAMVIEW_REQUIRE_PYTHON so this can never silently pass there.
    if !python_has("numpy, safetensors") {
        assert!(
            std::env::var_os("CAMVIEW_REQUIRE_PYTHON").is_none(),
            "python3 with numpy and safetensors is required"
        );
        eprintln!("skipped: python3 with numpy + safetensors not found");
        return;
    }
    let (_dir, model) = unpacked();
    let out = tempfile::tempdir().unwrap();
    let reference_file = out.path().join("reference.safetensors");
    let status = Command::new("python3")
        .arg(reference("convert_tfjs.py"))
        .arg(&reference_file)
        .arg(&model)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "convert_tfjs.py failed");
    let theirs = Weights::load(&reference_file).unwrap();
    let ours = Weights::load(weights_path()).unwrap();
    let skip = |n: &&str| !n.ends_with("num_batches_tracked");
    let their_names: Vec<&str> = theirs.names().into_iter().filter(skip).collect();
    assert_eq!(
        ours.names().into_iter().filter(skip).collect::<Vec<_>>(),
        their_names
    );
    for name in their_names {
        let a = ours.get(name, &[]).unwrap();
        let b = theirs.get(name, &[]).unwrap();
        assert_eq!(a.dims(), b.dims(), "{name}");
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{name}: differs by {diff:e}");
    }
}

#[test]
fn imports_the_same_from_a_folder_as_from_the_tarball() {
    let (_dir, model) = unpacked();
    let from_dir = tfjs::import(&model).unwrap();
    let from_tgz = Weights::load(weights_path()).unwrap();
    assert_eq!(from_dir.names(), from_tgz.names());
    let a = from_dir
        .get("layer3.2.conv2.weight", &[])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = from_tgz
        .get("layer3.2.conv2.weight", &[])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(a, b);
}

/// Copies the model folder, lets `edit` break it, and returns the import error.
fn import_broken(edit: impl FnOnce(&Path)) -> ImportError {
    let (_dir, model) = unpacked();
    edit(&model);
    match tfjs::import(&model) {
        Ok(_) => panic!("a broken export was imported"),
        Err(e) => e,
    }
}

fn edit_manifest(model: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = model.join("model.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    f(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
}

#[test]
fn a_short_shard_names_the_tensor_that_runs_past_the_end() {
    let e = import_broken(|m| {
        let shard = m.join("group1-shard25of25.bin");
        let len = std::fs::metadata(&shard).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(len - 100)
            .unwrap();
    });
    assert!(matches!(e, ImportError::ShortShard { .. }), "{e}");
    assert!(e.to_string().contains("tensor `"), "{e}");
}

#[test]
fn a_missing_shard_is_named() {
    let e = import_broken(|m| std::fs::remove_file(m.join("group1-shard3of25.bin")).unwrap());
    assert_eq!(
        e.to_string(),
        "weight shard `group1-shard3of25.bin` named in model.json is missing"
    );
}

#[test]
fn a_wrong_dtype_is_named() {
    let e = import_broken(|m| {
        edit_manifest(m, |j| {
            j["weightsManifest"][0]["weights"][0]["dtype"] = "int32".into()
        })
    });
    assert!(
        e.to_string()
            .starts_with("tensor `bn2a_branch1/gamma` has dtype int32"),
        "{e}"
    );
}

#[test]
fn a_renamed_tensor_is_reported_missing_or_unknown() {
    let e = import_broken(|m| {
        edit_manifest(m, |j| {
            j["weightsManifest"][0]["weights"][0]["name"] = "mystery/gamma".into()
        })
    });
    assert_eq!(
        e.to_string(),
        "tensor `bn2a_branch1/gamma` is missing: this is not a Keras ResNet-50"
    );
}

#[test]
fn a_wrong_shape_is_named() {
    // Same byte count, different shape: only the shape check can catch it.
    let e = import_broken(|m| {
        edit_manifest(m, |j| {
            let w = j["weightsManifest"][0]["weights"].as_array_mut().unwrap();
            let conv = w
                .iter_mut()
                .find(|w| w["name"] == "res2a_branch2b/kernel")
                .unwrap();
            conv["shape"] = serde_json::json!([3, 3, 32, 128]);
        });
    });
    assert!(
        e.to_string()
            .starts_with("tensor `res2a_branch2b/kernel` has shape [3, 3, 32, 128]"),
        "{e}"
    );
}

#[test]
fn a_failed_import_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let bin = env!("CARGO_BIN_EXE_camview");
    let status = Command::new(bin)
        .args(["weights", "import-tfjs"])
        .arg(dir.path())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!status.status.success());
    assert!(String::from_utf8_lossy(&status.stderr).contains("holds no model.json"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing may be left behind"
    );
}
