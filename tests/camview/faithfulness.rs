//! Faithfulness scores against pytorch-grad-cam's own metrics
//! (`tests/fixtures/faithfulness/make_faithfulness.py`): the genuine ResNet-50, the golden
//! `center` inputs, the top-1 class's probability, CAM's and Grad-CAM++'s maps.

use camview::model::cam_methods::{CamMethod, ClassHead, class_map};
use camview::model::faithfulness::{
    Curves, Input, Noise, Order, cam_mult_image, deletion_insertion, road, upsample_like_opencv,
};
use candle_core::{D, Device, IndexOp, Tensor};

use crate::common::{Layer4, classifier, golden_input, root};

/// How far a score (a probability) may be from the library's with the imputation's noise off.
const EXACT_TOLERANCE: f32 = 2e-3;

fn reference() -> serde_json::Value {
    let path = root().join("tests/fixtures/faithfulness/faithfulness.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn floats(value: &serde_json::Value) -> Vec<f32> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn confidence_change_and_road_match_pytorch_grad_cam() {
    let reference = reference();
    let model = classifier().model();
    let device = Device::Cpu;
    for (photo, want) in reference["photos"].as_object().unwrap() {
        let class = want["class"].as_u64().unwrap() as usize;
        let x = golden_input(&format!("{photo}.center"));
        let layer4 = Layer4::of(&x);
        let logits = &layer4.logits;
        let (width, height) = (layer4.width, layer4.height);
        let features = layer4.map();
        let weights = Layer4::head_weights(class);
        let head = ClassHead {
            weights: &weights,
            logit: logits[class],
        };
        let pixels = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let input = Input {
            channels: 3,
            height: 224,
            width: 224,
            values: &pixels,
        };
        let mut score = |batch: &Tensor| -> candle_core::Result<Vec<f32>> {
            let logits = model.forward(batch)?.logits;
            candle_nn::ops::softmax(&logits, D::Minus1)?
                .i((.., class))?
                .to_vec1::<f32>()
        };
        for (name, want) in want["methods"].as_object().unwrap() {
            let method = match name.as_str() {
                "gradcam" => CamMethod::Cam,
                other => CamMethod::from_name(other).unwrap(),
            };
            let grid = class_map(method, &features, head).unwrap().normalised();
            let map = upsample_like_opencv(&grid, width, height, 224, 224);
            for probe in want["map_probes"].as_array().unwrap() {
                let probe = floats(probe);
                let (r, c) = (probe[0] as usize, probe[1] as usize);
                let got = map[r * 224 + c];
                assert!(
                    (got - probe[2]).abs() < 1e-4,
                    "{photo} {name}: map at ({r}, {c}) is {got}, the library's {}",
                    probe[2]
                );
            }
            let change = cam_mult_image(input, &map, &device, &mut score).unwrap();
            let expected = want["cam_mult_image"].as_f64().unwrap() as f32;
            println!("{photo} {name}: confidence change {change:.5} (library {expected:.5})");
            assert!(
                (change - expected).abs() < EXACT_TOLERANCE,
                "{photo} {name}: confidence change {change}, the library's {expected}"
            );
            for (order, key) in [
                (Order::MostRelevantFirst, "road_most_relevant_first"),
                (Order::LeastRelevantFirst, "road_least_relevant_first"),
            ] {
                let want = &want[key];
                let percentiles: Vec<f64> = floats(&want["percentiles"])
                    .into_iter()
                    .map(f64::from)
                    .collect();
                let exact = road(
                    input,
                    &map,
                    order,
                    &percentiles,
                    Noise {
                        amount: 0.0,
                        seed: 0,
                    },
                    &device,
                    &mut score,
                )
                .unwrap();
                let noisy = road(
                    input,
                    &map,
                    order,
                    &percentiles,
                    Noise {
                        amount: Noise::ROAD,
                        seed: 1,
                    },
                    &device,
                    &mut score,
                )
                .unwrap();
                let expected = floats(&want["noise_off"]);
                let seeds = want["noise_0.01_seeds"].as_array().unwrap();
                for (i, p) in percentiles.iter().enumerate() {
                    let runs = floats(&seeds[i]);
                    let lo = runs.iter().copied().fold(f32::INFINITY, f32::min);
                    let hi = runs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    println!(
                        "{photo} {name} {key} {p}: noise off {:.5} (library {:.5}); noise on {:.5} (library's seeds {lo:.5}..{hi:.5})",
                        exact[i], expected[i], noisy[i]
                    );
                    assert!(
                        (exact[i] - expected[i]).abs() < EXACT_TOLERANCE,
                        "{photo} {name} {key} at {p}: {}, the library's {}",
                        exact[i],
                        expected[i]
                    );
                    // Another generator's noise: it moves the score from the noise-off value
                    // by as much as the library's noise moves it (three seeds: at most twice
                    // their largest move).
                    let moved = (noisy[i] - exact[i]).abs();
                    let library_moved = runs
                        .iter()
                        .map(|r| (r - expected[i]).abs())
                        .fold(0f32, f32::max);
                    assert!(
                        moved <= 2.0 * library_moved + EXACT_TOLERANCE,
                        "{photo} {name} {key} at {p}: the noise moved the score by {moved}, the library's by up to {library_moved}"
                    );
                }
            }
        }
    }
}

fn camview(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .env("CAMVIEW_WEIGHTS", crate::common::weights_path())
        .output()
        .unwrap()
}

fn json(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn f32s(value: &serde_json::Value) -> Vec<f32> {
    floats(value)
}

/// `cam --faithfulness`'s numbers are the engine's own functions' on the same input and map
/// (computed here in-process, one function at a time).
#[test]
fn cam_faithfulness_is_the_engines_on_the_same_map() {
    const STEP: usize = 224 * 28;
    let chelsea = crate::common::photo("chelsea");
    let out = camview(&[
        "cam",
        chelsea.to_str().unwrap(),
        "--resize",
        "center",
        "--faithfulness",
        "--json",
        "--deletion-step",
        &STEP.to_string(),
        "--road-seed",
        "5",
        "--no-store",
    ]);
    let lines = json(&out);
    assert_eq!(lines.len(), 1);
    let got = &lines[0];
    assert_eq!(got["method"], "cam");
    assert_eq!(got["input"], serde_json::json!([224, 224]));
    let settings = &got["settings"];
    assert_eq!(settings["step"], STEP);
    assert_eq!(settings["road_noise"], 0.01);
    assert_eq!(settings["road_seed"], 5);
    let scores = &got["faithfulness"];
    assert_eq!(scores["class"], 285);

    let classifier = classifier();
    let img = camview::model::preprocess::load_rgb(&chelsea).unwrap();
    let prepared = classifier
        .prepare(&img, camview::model::ResizeMode::Center)
        .unwrap();
    let analysis = classifier.analyze(&prepared, 1, None).unwrap();
    let grid = &analysis.cams[0];
    let map = upsample_like_opencv(&grid.normalised(), grid.width, grid.height, 224, 224);
    let pixels = prepared
        .tensor
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let input = Input {
        channels: 3,
        height: 224,
        width: 224,
        values: &pixels,
    };
    let model = classifier.model();
    let mut score = |batch: &Tensor| -> candle_core::Result<Vec<f32>> {
        let logits = model.forward(batch)?.logits;
        candle_nn::ops::softmax(&logits, D::Minus1)?
            .i((.., 285))?
            .to_vec1::<f32>()
    };
    let device = Device::Cpu;
    let close = |what: &str, got: &serde_json::Value, want: f32| {
        let got = got.as_f64().unwrap() as f32;
        assert!(
            (got - want).abs() < 1e-5,
            "{what}: {got}, the engine's {want}"
        );
    };
    let change = cam_mult_image(input, &map, &device, &mut score).unwrap();
    close("confidence change", &scores["cam_mult_change"], change);
    close("confidence", &scores["confidence"], analysis.top[0].prob);
    let drop = (-change).max(0.0) / analysis.top[0].prob;
    close("drop", &scores["drop"], drop);
    assert_eq!(scores["increased"], change > 0.0);
    let noise = Noise {
        amount: Noise::ROAD,
        seed: 5,
    };
    let mut road_means = Vec::new();
    for (order, key) in [
        (Order::MostRelevantFirst, "road_most_relevant_first"),
        (Order::LeastRelevantFirst, "road_least_relevant_first"),
    ] {
        let want = road(
            input,
            &map,
            order,
            &[20.0, 40.0, 60.0, 80.0],
            noise,
            &device,
            &mut score,
        )
        .unwrap();
        let got = f32s(&scores[key]);
        assert_eq!(got.len(), 4);
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < 1e-5,
                "{key}: {got:?}, the engine's {want:?}"
            );
        }
        road_means.push(want.iter().sum::<f32>() / 4.0);
    }
    close(
        "ROAD combined",
        &scores["road_combined"],
        (road_means[1] - road_means[0]) / 2.0,
    );
    let curves = deletion_insertion(input, &map, STEP, 8, &device, &mut score, &mut |_, _| {
        std::ops::ControlFlow::Continue(())
    })
    .unwrap()
    .unwrap();
    // 50176 pixels, 6272 a step: 8 steps, 9 points a curve.
    assert_eq!(curves.deletion.len(), 9);
    close(
        "deletion AUC",
        &scores["deletion_auc"],
        Curves::area(&curves.deletion),
    );
    close(
        "insertion AUC",
        &scores["insertion_auc"],
        Curves::area(&curves.insertion),
    );
}

/// Ctrl-C while the passes run stops them: status 130, a line that says so, nothing on
/// stdout.
#[test]
fn cam_faithfulness_stops_on_ctrl_c() {
    use std::io::{BufRead, BufReader};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args([
            "cam",
            crate::common::photo("chelsea").to_str().unwrap(),
            "--faithfulness",
            "--json",
            "--no-store",
        ])
        .env("CAMVIEW_WEIGHTS", crate::common::weights_path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The caption comes just before the passes start.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut caption = String::new();
    stderr.read_line(&mut caption).unwrap();
    assert!(caption.contains("Egyptian cat"), "{caption}");
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{rest}");
    assert!(rest.contains("faithfulness stopped (Ctrl-C)"), "{rest}");
    assert!(out.stdout.is_empty());
}

/// `eval --faithfulness`: the true class's map (a coffee filed under tench, far below its top
/// 5), else the top-1's; the dataset means are the means of the images' scores; the scores
/// are stored, and a second run reads them (the photos are broken by then: nothing could be
/// measured again).
#[test]
fn eval_faithfulness_means_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("n01440764")).unwrap();
    std::fs::copy(
        crate::common::photo("coffee"),
        data.join("n01440764/coffee.png"),
    )
    .unwrap();
    std::fs::copy(crate::common::photo("chelsea"), data.join("loose.png")).unwrap();
    let store = dir.path().join("store.sqlite");
    let args = [
        "eval",
        data.to_str().unwrap(),
        "--resize",
        "center",
        "--store",
        store.to_str().unwrap(),
        "--faithfulness",
        "--deletion-step",
        "12544",
        "--json",
    ];
    let first_out = camview(&args);
    let first = json(&first_out);
    let stderr = String::from_utf8_lossy(&first_out.stderr);
    assert!(
        stderr.contains("faithfulness of 2 images measured"),
        "{stderr}"
    );
    let image = |lines: &[serde_json::Value], name: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(name)))
            .unwrap()["faithfulness"]
            .clone()
    };
    assert_eq!(image(&first, "coffee.png")["class"], 0, "the true class");
    assert_eq!(image(&first, "loose.png")["class"], 285, "the top-1");
    let tench = image(&first, "coffee.png")["confidence"].as_f64().unwrap();
    assert!(tench < 0.01, "tench is far from coffee's top 5: {tench}");

    let summary = &first.last().unwrap()["summary"]["faithfulness"];
    assert_eq!(summary["method"], "cam");
    assert_eq!(summary["images"], 2);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["settings"]["step"], 12544);
    let means = &summary["means"];
    let images = [image(&first, "coffee.png"), image(&first, "loose.png")];
    let mean_of = |f: &dyn Fn(&serde_json::Value) -> f64| images.iter().map(f).sum::<f64>() / 2.0;
    let close = |what: &str, got: &serde_json::Value, want: f64| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() < 1e-6, "{what}: {got}, the mean {want}");
    };
    for key in ["deletion_auc", "insertion_auc"] {
        close(key, &means[key], mean_of(&|i| i[key].as_f64().unwrap()));
    }
    close(
        "average drop",
        &means["average_drop"],
        mean_of(&|i| i["drop"].as_f64().unwrap()),
    );
    close(
        "increase in confidence",
        &means["increase_in_confidence"],
        mean_of(&|i| f64::from(u8::from(i["increased"].as_bool().unwrap()))),
    );
    for key in ["road_most_relevant_first", "road_least_relevant_first"] {
        for p in 0..4 {
            close(
                key,
                &means[key][p],
                mean_of(&|i| i[key][p].as_f64().unwrap()),
            );
        }
    }
    close(
        "ROAD combined",
        &means["road_combined"],
        mean_of(&|i| i["road_combined"].as_f64().unwrap()),
    );

    // Stored: one row an image.
    let rows: i64 = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM faithfulness", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2);
    // Neither photo can be decoded now: only the store can answer.
    crate::common::break_keeping_identity(&data.join("n01440764/coffee.png"));
    crate::common::break_keeping_identity(&data.join("loose.png"));
    let second_out = camview(&args);
    let second = json(&second_out);
    let stderr = String::from_utf8_lossy(&second_out.stderr);
    assert!(
        stderr.contains("all 2 faithfulness results from the store"),
        "{stderr}"
    );
    assert_eq!(first, second);
    // The report says the same means.
    let text_args: Vec<&str> = args.iter().copied().filter(|a| *a != "--json").collect();
    let report = String::from_utf8(camview(&text_args).stdout).unwrap();
    assert!(
        report.contains("faithfulness of the cam maps over 2 images"),
        "{report}"
    );
    let deletion = format!("{:.4}", means["deletion_auc"].as_f64().unwrap());
    assert!(report.contains(&deletion), "{report}");
}

/// `eval --faithfulness` killed (SIGKILL) after its first image's scores were stored: the
/// store opens, keeps them, and the next run reads them and measures only the rest.
#[test]
fn eval_faithfulness_killed_mid_way_keeps_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["a.png", "b.png"] {
        std::fs::copy(crate::common::photo("chelsea"), data.join(name)).unwrap();
    }
    let store = dir.path().join("store.sqlite");
    let args = [
        "eval",
        data.to_str().unwrap(),
        "--resize",
        "center",
        "--store",
        store.to_str().unwrap(),
        "--faithfulness",
        "--deletion-step",
        "12544",
        "--json",
    ];
    let rows = || {
        rusqlite::Connection::open(&store)
            .and_then(|c| {
                c.query_row("SELECT COUNT(*) FROM faithfulness", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .unwrap_or(0)
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .env("CAMVIEW_WEIGHTS", crate::common::weights_path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while rows() < 1 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(600),
            "nothing stored"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "eval ended before it was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let kept = rows();
    assert!(kept >= 1);
    let out = camview(&args);
    let lines = json(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if kept == 1 {
        assert!(
            stderr.contains("faithfulness of 1 images measured")
                && stderr.contains("1 from the store"),
            "{stderr}"
        );
    }
    assert_eq!(rows(), 2);
    // The same photo twice: the stored scores and the new ones agree.
    let (a, b) = (&lines[0]["faithfulness"], &lines[1]["faithfulness"]);
    for key in [
        "confidence",
        "cam_mult_change",
        "deletion_auc",
        "insertion_auc",
    ] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!((x - y).abs() < 1e-5, "{key}: {x} and {y}");
    }
}
