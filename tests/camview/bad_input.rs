//! Bad inputs get a clear message and nothing breaks: each kind of broken image and weights
//! file, through the library and through the binary.

use std::path::Path;
use std::process::Command;

use camview::model::preprocess::{ImageError, load_rgb};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[test]
fn zero_byte_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_rgb(&write(dir.path(), "empty.jpg", b"")).unwrap_err();
    assert!(matches!(e, ImageError::Empty { .. }));
    assert!(
        e.to_string().ends_with("empty.jpg is empty (0 bytes)"),
        "{e}"
    );
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(crate::common::photo("rocket")).unwrap();
    // A JPEG decoder shows what arrived and fills the rest (as browsers do): it must either
    // fail cleanly or give the full-size picture, never panic.
    match load_rgb(&write(dir.path(), "cut.jpg", &full[..full.len() / 2])) {
        Ok(img) => assert_eq!(img.dimensions(), (640, 427)),
        Err(e) => assert!(matches!(e, ImageError::Decode { .. }), "{e}"),
    }
    let png = std::fs::read(crate::common::photo("chelsea")).unwrap();
    let e = load_rgb(&write(dir.path(), "cut.png", &png[..png.len() / 2])).unwrap_err();
    assert!(matches!(e, ImageError::Decode { .. }), "{e}");
    assert!(e.to_string().contains("cannot decode"), "{e}");
}

#[test]
fn text_with_an_image_extension() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_rgb(&write(
        dir.path(),
        "notes.png",
        b"hello, I am not a picture\n",
    ))
    .unwrap_err();
    assert!(matches!(e, ImageError::Decode { .. }), "{e}");
}

#[test]
fn decompression_bomb_is_refused_not_allocated() {
    // A valid PNG header claiming 100 000 × 100 000 pixels (30 GB of RGB).
    let mut bytes = png_bytes(1, 1);
    bytes[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    // Fix the IHDR CRC so the decoder reads the dimensions rather than rejecting the chunk.
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let e = load_rgb(&write(dir.path(), "bomb.png", &bytes)).unwrap_err();
    let msg = format!("{:#}", anyhow::Error::new(e));
    assert!(msg.to_lowercase().contains("limit"), "{msg}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "locked.png", &png_bytes(4, 4));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    let result = load_rgb(&p);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    // root can read anything; elsewhere this must be an Open error.
    if let Err(e) = result {
        assert!(matches!(e, ImageError::Open { .. }), "{e}");
    }
    let e = load_rgb(&dir.path().join("missing.png")).unwrap_err();
    assert!(matches!(e, ImageError::Open { .. }), "{e}");
}

#[test]
fn a_one_pixel_image_still_classifies() {
    let dir = tempfile::tempdir().unwrap();
    let img = load_rgb(&write(dir.path(), "dot.png", &png_bytes(1, 1))).unwrap();
    let c = crate::common::classifier();
    for mode in [
        camview::model::ResizeMode::Full,
        camview::model::ResizeMode::Center,
    ] {
        let prepared = c.prepare(&img, mode).unwrap();
        assert_eq!(c.analyze(&prepared, 5, None).unwrap().top.len(), 5);
    }
}

#[test]
fn exif_orientation_is_applied() {
    // A 64×32 JPEG tagged "rotate 90° CW" (orientation 6) must come out 32×64 and turned the
    // right way. Three colours, so that no other turn or mirror gives the same picture: the
    // left half red above green, the right half blue (blocks wide enough for JPEG's colour
    // subsampling to leave their middles alone).
    let img = image::RgbImage::from_fn(64, 32, |x, y| match (x < 32, y < 16) {
        (true, true) => image::Rgb([220, 0, 0]),
        (true, false) => image::Rgb([0, 220, 0]),
        (false, _) => image::Rgb([0, 0, 220]),
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    img.write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
    let jpeg = jpeg.into_inner();
    // Insert an APP1 Exif segment right after SOI: a little-endian TIFF with one IFD entry.
    let mut tiff = b"II*\0\x08\0\0\0\x01\0".to_vec();
    tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]); // Orientation = 6
    tiff.extend_from_slice(&[0, 0, 0, 0]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    let dir = tempfile::tempdir().unwrap();
    let loaded = load_rgb(&write(dir.path(), "rotated.jpg", &out)).unwrap();
    assert_eq!(loaded.dimensions(), (32, 64));
    // Turned clockwise, the left half is on top (green on the left, red on the right) and
    // the right half at the bottom; turned the other way the blue would be on top.
    let colour = |x: u32, y: u32| {
        let [r, g, b] = loaded.get_pixel(x, y).0;
        match () {
            _ if r > 150 && g < 80 && b < 80 => "red",
            _ if g > 150 && r < 80 && b < 80 => "green",
            _ if b > 150 && r < 80 && g < 80 => "blue",
            _ => "unclear",
        }
    };
    let seen = [colour(8, 16), colour(24, 16), colour(16, 48)];
    assert_eq!(seen, ["green", "red", "blue"]);
}

fn camview(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .env("CAMVIEW_WEIGHTS", crate::common::weights_path())
        .output()
        .unwrap()
}

#[test]
fn classify_reports_each_bad_file_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a-empty.png", b"");
    write(dir.path(), "b-junk.jpg", b"junk");
    std::fs::copy(
        crate::common::photo("chelsea"),
        dir.path().join("c-cat.png"),
    )
    .unwrap();
    let out = camview(&["classify", "--json", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failure must show in the exit code"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["error"].as_str().unwrap().contains("empty"));
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("cannot decode")
    );
    assert_eq!(lines[2]["top"][0]["label"], "Egyptian cat");
}

#[test]
fn a_wrong_weights_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = write(
        dir.path(),
        "junk.safetensors",
        b"\x10\0\0\0\0\0\0\0{\"a\":1}         ",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["classify", "--weights"])
        .arg(&junk)
        .arg(crate::common::photo("chelsea"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a fatal error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.safetensors is not a safetensors or PyTorch"),
        "{err}"
    );

    // A real safetensors file that is no ResNet says what it holds.
    let small = dir.path().join("small.safetensors");
    let t =
        candle_core::Tensor::zeros(3, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("x".to_string(), t)]),
        &small,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["classify", "--weights"])
        .arg(&small)
        .arg(crate::common::photo("chelsea"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "small.safetensors is not a usable ResNet: it holds 1 tensor, `x`: camview reads"
        ),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args([
            "classify",
            "--weights",
            "/nonexistent/w.safetensors",
            "x.png",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");
}

/// Regression: a weights file short of one tensor printed its cause twice, once inside the
/// load error's message and again as its source (`cannot load X: X is not a usable ResNet-50:
/// … (get genuine weights …): X is not a usable ResNet-50: …`).
#[test]
fn a_missing_tensor_is_named_once() {
    use camview::model::weights::Weights;

    let genuine = Weights::load(crate::common::weights_path()).unwrap();
    let tensors = genuine
        .names()
        .into_iter()
        .filter(|&name| name != "fc.bias")
        .map(|name| (name.to_string(), genuine.get(name, &[]).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.safetensors");
    Weights::from_tensors(tensors, None)
        .save(&short, camview::model::Arch::V1_5, &[])
        .unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["classify", "--weights"])
        .arg(&short)
        .arg(crate::common::photo("chelsea"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a fatal error");
    let err = String::from_utf8_lossy(&out.stderr);
    for once in [
        "short.safetensors",
        "is not a usable ResNet",
        "tensor `fc.bias` is missing",
        "camview weights fetch",
    ] {
        assert_eq!(err.matches(once).count(), 1, "`{once}` once in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
}
