//! The command line, run as a user would: classify (table, JSON, CAM grids), cam, bench.

use std::process::{Command, Output};

use crate::common::{golden, photo, read_npy, weights_path};

fn camview(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .env("CAMVIEW_WEIGHTS", weights_path())
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn classify_prints_a_readable_table() {
    let text = stdout(&camview(&["classify", photo("chelsea").to_str().unwrap()]));
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("chelsea.png  451×300  input 337×224"),
        "{text}"
    );
    assert!(
        lines[1].contains(" 1 ") && lines[1].ends_with("Egyptian cat"),
        "{text}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains(" %  ")).count(), 5);
    assert!(lines[6].starts_with("  box (top-1 CAM): x "), "{text}");
}

#[test]
fn classify_json_carries_raw_cam_grids_equal_to_the_reference_shape() {
    let text = stdout(&camview(&[
        "classify",
        "--json",
        "--cam-grid",
        "--top",
        "3",
        "--resize",
        "squash",
        photo("coffee").to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(600), Some(400))
    );
    let top = v["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    assert_eq!(top[0]["rank"], 1);
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden("coffee.squash.json")).unwrap()).unwrap();
    assert_eq!(top[0]["index"], want["top5"][0]["index"]);
    let grid = top[0]["cam"].as_array().unwrap();
    let (shape, ref_cam) = read_npy(&golden("coffee.squash.cam.npy"));
    assert_eq!(
        (grid.len(), grid[0].as_array().unwrap().len()),
        (shape[1], shape[2])
    );
    // The same photo through camview's pixels, which equal Pillow's for a PNG: the raw map
    // of the top class matches the reference's closely.
    let ours: Vec<f32> = grid
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    let theirs = &ref_cam[..ours.len()];
    let scale = theirs.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        worst <= 1e-3 * scale,
        "the raw CAM differs by {worst} (its maximum {scale})"
    );
    assert_eq!(v["method"], "cam", "the box's maps");
    let bbox = v["bbox"].as_array().unwrap();
    assert_eq!(bbox.len(), 4);
    let b: Vec<u64> = bbox.iter().map(|x| x.as_u64().unwrap()).collect();
    assert!(
        b[0] < b[2] && b[2] <= 600 && b[1] < b[3] && b[3] <= 400,
        "{b:?}"
    );
}

#[test]
fn cam_writes_a_png_of_the_original_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cam.png");
    let run = camview(&[
        "cam",
        photo("rocket").to_str().unwrap(),
        "--class",
        "812",
        "--colormap",
        "turbo",
        "--bbox",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("(812)"));
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (640, 427));
    let original = image::open(photo("rocket")).unwrap().to_rgb8();
    assert_ne!(
        img.to_rgb8(),
        original,
        "the overlay must change the picture"
    );

    // --grid: the same canvas, five overlays and the photo, the chosen class framed in white.
    let grid = dir.path().join("grid.png");
    let run = camview(&[
        "cam",
        photo("rocket").to_str().unwrap(),
        "--grid",
        "-o",
        grid.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let grid = image::open(&grid).unwrap().to_rgb8();
    assert_eq!(grid.dimensions(), (640, 427));
    assert_ne!(grid, img.to_rgb8());
    // 3 × 2 tiles of 212 × 141 (the photo's aspect), centred: the first tile's top edge
    // is the frame of rank 1, and the last tile is the photo, scaled.
    let (tile, origin) = ((212, 141), (0, 71));
    assert_eq!(
        *grid.get_pixel(origin.0 + tile.0 / 2, origin.1),
        image::Rgb([255, 255, 255])
    );
    let small = camview::overlay::scale(&original, tile);
    let last = image::imageops::crop_imm(
        &grid,
        origin.0 + 2 * (tile.0 + 2),
        origin.1 + tile.1 + 2,
        tile.0,
        tile.1,
    )
    .to_image();
    assert!(last == small, "the last tile is the photo");
}

#[test]
fn cam_without_output_needs_a_terminal() {
    let run = camview(&["cam", photo("rocket").to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("pass -o OUT.png"));
}

/// `--precision bf16` classifies as f32 does: with the native kernel where the CPU has
/// AVX512_BF16, else after a one-line note, in f32 (and in the emulated kernel when asked).
#[test]
fn bf16_classifies_like_f32_or_says_why_it_runs_f32() {
    use camview::model::kernels::packed_gemm::bf16_kernel_available;
    let chelsea = photo("chelsea");
    let args = ["classify", "--precision", "bf16", chelsea.to_str().unwrap()];
    let out = camview(&args);
    let note = "camview: bf16 needs a CPU with AVX512_BF16, which this one lacks: running in f32";
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.contains(note), !bf16_kernel_available(), "{stderr}");
    let text = stdout(&out);
    assert!(
        text.lines().nth(1).unwrap().ends_with("Egyptian cat"),
        "{text}"
    );

    let emulated = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args([
            "bench",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--size",
            "64x64",
            "--precision",
            "bf16",
        ])
        .env("CAMVIEW_WEIGHTS", weights_path())
        .env("CAMVIEW_BF16_EMULATE", "1")
        .output()
        .unwrap();
    let text = stdout(&emulated);
    let precision = if bf16_kernel_available() {
        "bf16"
    } else {
        "bf16-emulated"
    };
    assert!(
        text.lines()
            .next()
            .unwrap()
            .contains(&format!(" precision={precision} ")),
        "{text}"
    );
}

/// Files go through batches and a decoder ahead of the forward pass; the lines still come
/// in the order of the arguments, a failure in its place, and each result is what the
/// file gets alone.
#[test]
fn classify_writes_results_in_the_order_of_the_files() {
    let names = [
        "coffee",
        "chelsea",
        "astronaut",
        "rocket",
        "chelsea",
        "coffee",
    ];
    // One input size (squash), so decoded files are batched together.
    let mut args: Vec<String> = ["classify", "--json", "--resize", "squash"]
        .map(String::from)
        .to_vec();
    for (i, name) in names.iter().enumerate() {
        args.push(photo(name).to_str().unwrap().into());
        if i == 1 {
            args.push("no-such-file.png".into());
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = camview(&args);
    assert_eq!(out.status.code(), Some(1), "one file failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), names.len() + 1, "{text}");
    assert!(lines[2]["error"].is_string(), "{text}");
    let alone = |name: &str| -> serde_json::Value {
        let path = photo(name);
        let args = [
            "classify",
            "--json",
            "--resize",
            "squash",
            path.to_str().unwrap(),
        ];
        let text = stdout(&camview(&args));
        serde_json::from_str(text.lines().next().unwrap()).unwrap()
    };
    let results: Vec<&serde_json::Value> = lines.iter().filter(|l| l["error"].is_null()).collect();
    for (line, name) in results.iter().zip(names) {
        assert!(line["path"].as_str().unwrap().contains(name), "{text}");
        let single = alone(name);
        assert_eq!(line["top"][0]["index"], single["top"][0]["index"], "{name}");
        assert_eq!(line["bbox"], single["bbox"], "{name}");
    }
}

#[test]
fn bench_ends_with_the_summary_line() {
    let text = stdout(&camview(&["bench", "--iters", "2", "--size", "64x96"]));
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("forward median_ms="), "{text}");
    assert!(
        last.contains(" min_ms=") && last.ends_with(" iters=2"),
        "{text}"
    );
}

#[test]
fn bench_layers_lists_every_convolution_of_the_network() {
    // 64×96: stage 1's 3×3 layers go through Winograd (24 tiles), stages 2–3's (≤ 6 tiles)
    // do not, stage 4's always do (they keep only F(2×2) weights).
    let args = [
        "bench", "--iters", "2", "--warmup", "0", "--size", "64x96", "--layers",
    ];
    let text = stdout(&camview(&args));
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    // The stem, 16 bottlenecks of three convolutions, four downsample convolutions.
    assert_eq!(rows.len(), 1 + 16 * 3 + 4, "{text}");
    assert!(
        rows[0].contains("7x7/2") && rows[0].contains("64x96x3"),
        "{text}"
    );
    assert!(rows[2].contains("winograd"), "{text}");
    assert!(
        rows[12].contains("3x3") && rows[12].contains("direct"),
        "{text}"
    );
    assert!(
        rows[48].contains("3x3") && rows[48].contains("winograd"),
        "{text}"
    );
    assert!(rows.last().unwrap().contains("direct"), "{text}");
    assert!(text.contains("convolutions: "), "{text}");
    assert!(
        text.lines()
            .last()
            .unwrap()
            .starts_with("forward median_ms="),
        "{text}"
    );
}

#[test]
fn bad_arguments_are_refused_before_work() {
    let run = camview(&["cam", "x.png", "--alpha", "1.5", "-o", "/tmp/never.png"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("alpha must lie in 0..=1"));
    let run = camview(&["bench", "--size", "0x3"]);
    assert_eq!(run.status.code(), Some(2));
}

#[test]
fn odd_file_names_are_handled() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9 \x1b[31mcat.png");
    std::fs::copy(photo("chelsea"), dir.path().join(name)).unwrap();
    let out = camview(&["classify", "--json", dir.path().to_str().unwrap()]);
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["top"][0]["label"], "Egyptian cat");
    assert!(
        !text.contains('\x1b'),
        "raw escape bytes must not reach the terminal"
    );
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    // `camview … | head -0`: the reader leaves before camview writes (weights take a moment to
    // load); camview must end quietly with status 0, not panic.
    for args in [
        &["bench", "--iters", "1", "--size", "32x32"][..],
        &["classify", "images"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_camview"))
            .args(args)
            .current_dir(crate::common::root())
            .env("CAMVIEW_WEIGHTS", weights_path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Runs `camview classify chelsea.png` in `cwd`, with `cache` as the user's cache folder and
/// no `$CAMVIEW_WEIGHTS`: the weights are wherever camview looks by default.
fn classify_by_default(cwd: &std::path::Path, cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["classify", photo("chelsea").to_str().unwrap()])
        .current_dir(cwd)
        .env_remove("CAMVIEW_WEIGHTS")
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap()
}

#[test]
// `XDG_CACHE_HOME` names the cache on Linux only.
#[cfg(target_os = "linux")]
fn default_weights_are_in_models_or_else_in_the_users_cache() {
    let genuine = std::fs::canonicalize(weights_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (anywhere, cache) = (dir.path().join("anywhere"), dir.path().join("cache"));
    std::fs::create_dir_all(cache.join("camview")).unwrap();
    std::fs::create_dir_all(&anywhere).unwrap();
    let cached = cache.join("camview/resnet50.safetensors");

    // A folder without models/: the cache is where camview looks.
    std::os::unix::fs::symlink(&genuine, &cached).unwrap();
    let text = stdout(&classify_by_default(&anywhere, &cache));
    assert!(
        text.lines().nth(1).unwrap().ends_with("Egyptian cat"),
        "{text}"
    );

    // What is there is what gets loaded: a broken cached file is named in the error.
    std::fs::remove_file(&cached).unwrap();
    std::fs::write(&cached, b"not weights").unwrap();
    let run = classify_by_default(&anywhere, &cache);
    assert_eq!(run.status.code(), Some(2), "no model is fatal");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains(&cached.display().to_string()), "{err}");

    // A folder with models/ (a checkout) uses its own weights, not the cache.
    std::fs::create_dir(anywhere.join("models")).unwrap();
    std::os::unix::fs::symlink(&genuine, anywhere.join("models/resnet50.safetensors")).unwrap();
    let text = stdout(&classify_by_default(&anywhere, &cache));
    assert!(
        text.lines().nth(1).unwrap().ends_with("Egyptian cat"),
        "{text}"
    );
}

/// `cam --method` draws that method's map: the engine's (checked against pytorch-grad-cam in
/// `cam_methods`), a class-agnostic map alike for every rank, and an unknown name refused.
#[test]
fn cam_draws_the_method_asked_for() {
    use camview::model::cam_methods::CamMethod;
    use camview::overlay::{self, Style};

    let dir = tempfile::tempdir().unwrap();
    let chelsea = photo("chelsea");
    let draw = |method: &str, rank: &str| {
        let out = dir.path().join(format!("{method}-{rank}.png"));
        let run = camview(&[
            "cam",
            chelsea.to_str().unwrap(),
            "--method",
            method,
            "--rank",
            rank,
            "-o",
            out.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{stderr}");
        assert!(
            stderr.contains(method),
            "the caption names the method: {stderr}"
        );
        image::open(&out).unwrap().to_rgb8()
    };
    let layercam = draw("layercam", "1");
    let cam = draw("cam", "1");
    assert_ne!(layercam, cam, "LayerCAM's map is not CAM's");
    assert_ne!(cam, draw("cam", "2"), "CAM differs from class to class");
    assert_eq!(
        draw("eigencam", "1"),
        draw("eigencam", "2"),
        "EigenCAM is the same map for every class"
    );

    // The picture is the engine's LayerCAM map drawn as every CAM is.
    let classifier = crate::common::classifier();
    let img = camview::model::preprocess::load_rgb(&chelsea).unwrap();
    let prepared = classifier
        .prepare(&img, camview::model::ResizeMode::Full)
        .unwrap();
    let mut analysis = classifier.analyze(&prepared, 1, None).unwrap();
    let classes = [analysis.top[0].index];
    let maps = classifier
        .method_maps(&prepared, &classes, CamMethod::LayerCam, 16, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    analysis.cams[0] = maps[0].clone();
    // `cam`'s defaults: an overlay, jet, alpha 0.5, no box.
    let expected = overlay::render(&img, img.dimensions(), Some(&analysis), 0, Style::default());
    assert!(
        expected == layercam,
        "cam --method layercam draws the engine's map"
    );

    let run = camview(&[
        "cam",
        chelsea.to_str().unwrap(),
        "--method",
        "nosuch",
        "-o",
        "x.png",
    ]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("gradcam++") && stderr.contains("scorecam"),
        "{stderr}"
    );
}

/// `classify --method` gives each class the method's map (here LayerCAM, as the engine makes
/// it for one image) and its box (Score-CAM: `score_cam.rs`).
#[test]
fn classify_gives_the_maps_of_the_method_asked_for() {
    use camview::model::cam_methods::CamMethod;

    let chelsea = photo("chelsea");
    let text = stdout(&camview(&[
        "classify",
        "--json",
        "--cam-grid",
        "--top",
        "2",
        "--method",
        "layercam",
        chelsea.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let top = v["top"].as_array().unwrap();
    let classifier = crate::common::classifier();
    let img = camview::model::preprocess::load_rgb(&chelsea).unwrap();
    let prepared = classifier
        .prepare(&img, camview::model::ResizeMode::Full)
        .unwrap();
    let classes: Vec<usize> = top
        .iter()
        .map(|t| t["index"].as_u64().unwrap() as usize)
        .collect();
    let maps = classifier
        .method_maps(&prepared, &classes, CamMethod::LayerCam, 16, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    for (t, map) in top.iter().zip(&maps) {
        let grid: Vec<f32> = t["cam"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        let scale = map.values.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = grid
            .iter()
            .zip(&map.values)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert_eq!(grid.len(), map.values.len());
        assert!(worst <= 1e-5 * scale, "{}: {worst} of {scale}", t["label"]);
    }
    // LayerCAM's maps are not CAM's.
    let cam_text = stdout(&camview(&[
        "classify",
        "--json",
        "--cam-grid",
        "--top",
        "1",
        chelsea.to_str().unwrap(),
    ]));
    let cam: serde_json::Value = serde_json::from_str(cam_text.trim()).unwrap();
    assert_ne!(cam["top"][0]["cam"], top[0]["cam"]);
}

/// `classify --save-cams DIR`: each image's top-1 map as a float32 .npy at the network
/// input's size, scaled to 0..1, named by its path below the folder given (a file given by
/// itself: its name) — the grid `--cam-grid` prints, upsampled as pytorch-grad-cam does.
#[test]
fn classify_saves_each_map_where_wsol_tools_read_it() {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("cats")).unwrap();
    std::fs::copy(photo("chelsea"), photos.join("cats/chelsea.png")).unwrap();
    let rocket = photo("rocket");
    let maps = dir.path().join("maps");
    let text = stdout(&camview(&[
        "classify",
        "--json",
        "--cam-grid",
        "--top",
        "1",
        "--save-cams",
        maps.to_str().unwrap(),
        photos.to_str().unwrap(),
        rocket.to_str().unwrap(),
    ]));
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, saved, input) in [
        (&lines[0], maps.join("cats/chelsea.png.npy"), (337, 224)),
        (&lines[1], maps.join("rocket.jpg.npy"), (336, 224)),
    ] {
        let (shape, values) = read_npy(&saved);
        assert_eq!(shape, [input.1, input.0], "{}", saved.display());
        let grid: Vec<Vec<f32>> = line["top"][0]["cam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect();
        let cam = camview::model::cam::CamGrid {
            width: grid[0].len(),
            height: grid.len(),
            values: grid.concat(),
        };
        let want = camview::model::faithfulness::upsample_like_opencv(
            &cam.normalised(),
            cam.width,
            cam.height,
            input.0,
            input.1,
        );
        let worst = values
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-5, "{}: {worst}", saved.display());
        let (lo, hi) = values
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(lo.abs() < 1e-6 && (hi - 1.0).abs() < 1e-5, "{lo}..{hi}");
    }
}
