//! `camview eval` on a labelled dataset the tests build from the sample photos: class folders
//! named three ways, two deliberately wrong labels, an unlabelled photo, a hidden file, and
//! VOC boxes written by hand. Checked against the golden reference and an IoU computed here;
//! then the store: results persist, a `kill -9` mid-sweep loses nothing, a corrupt store is
//! set aside.

use std::path::Path;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{photo, reference_json, weights_path};
use crate::labelled::{CHELSEA_BOX, COFFEE_BOX, HandBox, LAYOUT, build};

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .arg("eval")
        .args(args)
        .env("CAMVIEW_WEIGHTS", weights_path())
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "eval failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// IoU as ILSVRC counts it, computed here: boxes as inclusive pixel ranges.
fn independent_iou(cam: [u64; 4], t: &HandBox) -> f64 {
    // The CAM box is half-open [x0, x1): its last pixel is x1 − 1.
    let (ax0, ay0, ax1, ay1) = (
        cam[0] as f64,
        cam[1] as f64,
        cam[2] as f64 - 1.0,
        cam[3] as f64 - 1.0,
    );
    let (bx0, by0, bx1, by1) = (t.x0 as f64, t.y0 as f64, t.x1 as f64, t.y1 as f64);
    let iw = (ax1.min(bx1) - ax0.max(bx0) + 1.0).max(0.0);
    let ih = (ay1.min(by1) - ay0.max(by0) + 1.0).max(0.0);
    let inter = iw * ih;
    let area = |x0: f64, y0: f64, x1: f64, y1: f64| (x1 - x0 + 1.0) * (y1 - y0 + 1.0);
    inter / (area(ax0, ay0, ax1, ay1) + area(bx0, by0, bx1, by1) - inter)
}

fn by_name<'a>(lines: &'a [Value], rel: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(rel)))
        .unwrap_or_else(|| panic!("no line for {rel}"))
}

#[test]
fn eval_scores_a_labelled_folder_against_the_reference() {
    let d = build();
    let store = d.dir.path().join("store.sqlite");
    let boxes = d.dir.path().join("boxes");
    let out = eval(&[
        "--json",
        "--boxes",
        arg(&boxes),
        "--store",
        arg(&store),
        arg(&d.root()),
    ]);
    let lines = json_lines(&out);
    assert_eq!(
        lines.len(),
        LAYOUT.len() + 1,
        "one line per image and the summary"
    );
    for (rel, name, _) in LAYOUT {
        let line = by_name(&lines, rel);
        let want = &reference_json(name, "full")["top5"];
        // The reference's top five, in order, with probabilities within 0.01.
        let top = line["top"].as_array().unwrap();
        assert_eq!(top.len(), 5, "{rel}");
        for (got, want) in top.iter().zip(want.as_array().unwrap()) {
            assert_eq!(got["index"], want["index"], "{rel}");
            let dp = (got["prob"].as_f64().unwrap() - want["prob"].as_f64().unwrap()).abs();
            assert!(dp <= 0.01, "{rel}: probability off by {dp}");
        }
        let top1 = want[0]["index"].as_u64().unwrap();
        if rel == "loose.png" {
            assert!(line["truth"].is_null() && line["top1_correct"].is_null());
            continue;
        }
        let truth = line["truth"]["index"].as_u64().unwrap();
        assert_eq!(line["top1_correct"], truth == top1, "{rel}");
        // Every true class here is in the reference's top five: its rank and probability.
        let rank = want
            .as_array()
            .unwrap()
            .iter()
            .position(|p| p["index"].as_u64() == Some(truth))
            .unwrap_or_else(|| panic!("{rel}: truth outside the reference top 5"));
        assert_eq!(line["truth_rank"], rank + 1, "{rel}");
        assert_eq!(line["top5_correct"], true, "{rel}");
    }
    let truth = |rel: &str| by_name(&lines, rel)["truth"].clone();
    assert_eq!(truth("chelsea.png")["wnid"], "n02124075");
    assert_eq!(truth("coffee.png")["label"], "espresso");
    assert_eq!(truth("rocket.jpg")["index"], 812);
    assert_eq!(truth("astronaut.png")["label"], "ski");
    assert_eq!(truth("chelsea-2.png")["label"], "tabby");

    // Localisation: the reported IoU is the one computed here from the reported box.
    for (rel, hand) in [("chelsea.png", &CHELSEA_BOX), ("coffee.png", &COFFEE_BOX)] {
        let line = by_name(&lines, &format!("/{rel}"));
        let bbox: Vec<u64> = line["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let iou = independent_iou([bbox[0], bbox[1], bbox[2], bbox[3]], hand);
        let reported = line["iou"].as_f64().unwrap();
        assert!((iou - reported).abs() < 1e-9, "{rel}: {reported} vs {iou}");
        assert_eq!(line["loc_correct"], iou >= 0.5, "{rel}");
    }
    let s = &lines.last().unwrap()["summary"];
    assert_eq!(s["images"], 6);
    assert_eq!(s["unlabelled"], 1);
    assert_eq!(s["failed"], 0);
    assert_eq!(s["top1"], 0.4, "2 of 5 right");
    assert_eq!(s["top5"], 1.0);
    assert_eq!(s["boxed"], 2);
    let loc = |rel: &str| by_name(&lines, rel)["loc_correct"].as_bool().unwrap() as u8;
    assert_eq!(
        s["loc_top1"],
        f64::from(loc("/chelsea.png") + loc("/coffee.png")) / 2.0
    );
    let max = s["max_box_acc"].as_f64().unwrap();
    assert!(
        max >= s["loc_gt_known"].as_f64().unwrap(),
        "the sweep includes 20 %"
    );
    let best = s["best_threshold"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&best));
    assert_eq!(
        out.status.code(),
        Some(0),
        "wrong answers are results, not errors"
    );

    // The human-readable report says the same.
    let text = String::from_utf8(
        eval(&[
            "--boxes",
            arg(&boxes),
            "--store",
            arg(&store),
            arg(&d.root()),
        ])
        .stdout,
    )
    .unwrap();
    assert!(text.contains("top-1 accuracy    40.0 %  (2 / 5)"), "{text}");
    assert!(
        text.contains("n04266014 space shuttle → n03240683 drilling platform"),
        "{text}"
    );
}

/// Runs eval as JSON with `store` and returns its lines without the summary's.
fn results(root: &Path, store: &[&str]) -> Vec<Value> {
    let mut args = vec!["--json"];
    args.extend_from_slice(store);
    args.push(arg(root));
    json_lines(&eval(&args))
}

#[test]
fn results_persist_in_the_store_and_are_used_again() {
    let d = build();
    let store = d.dir.path().join("store.sqlite");
    let first = results(&d.root(), &["--store", arg(&store)]);
    // Break a photo without changing its size or time: only the store can still answer.
    crate::common::break_keeping_identity(&d.root().join("espresso/coffee.png"));
    let second = results(&d.root(), &["--store", arg(&store)]);
    assert_eq!(first, second, "the second run reads the store");
    // Without the store the broken photo fails, and the exit status says so.
    let out = eval(&["--json", "--no-store", arg(&d.root())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"error\""));
}

#[test]
fn a_sweep_killed_mid_way_loses_nothing_when_run_again() {
    let d = build();
    // 24 more photos, so the sweep is still running when it is killed.
    for i in 0..24 {
        let to = d.root().join(format!("n02124075/copy-{i:02}.png"));
        std::fs::copy(photo("chelsea"), to).unwrap();
    }
    let store = d.dir.path().join("store.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["eval", "--json", "--store", arg(&store), arg(&d.root())])
        .env("CAMVIEW_WEIGHTS", weights_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let stored = rusqlite::Connection::open(&store)
            .and_then(|c| c.query_row("SELECT COUNT(*) FROM results", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0);
        if stored >= 3 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no results stored"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "eval ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let resumed = results(&d.root(), &["--store", arg(&store)]);
    let clean = results(&d.root(), &["--no-store"]);
    assert_eq!(resumed, clean);
}

#[test]
fn a_corrupt_store_is_set_aside_and_a_new_one_made() {
    let d = build();
    let store = d.dir.path().join("store.sqlite");
    std::fs::write(&store, vec![0x42; 4096]).unwrap();
    let out = eval(&["--store", arg(&store), arg(&d.root())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was unreadable") && stderr.contains("moved it to"),
        "{stderr}"
    );
    let aside = std::fs::read_dir(d.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("store.sqlite.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
}

#[test]
fn class_folders_that_are_not_classes_are_named_with_the_nearest() {
    let d = build();
    std::fs::create_dir(d.root().join("egyptain cat")).unwrap();
    std::fs::copy(photo("chelsea"), d.root().join("egyptain cat/c.png")).unwrap();
    let out = eval(&["--no-store", arg(&d.root())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("class folder egyptain cat/"), "{stderr}");
    assert!(
        stderr.contains("nearest: n02124075 (285, Egyptian cat)"),
        "{stderr}"
    );

    let crane = tempfile::tempdir().unwrap();
    std::fs::create_dir(crane.path().join("crane")).unwrap();
    std::fs::copy(photo("rocket"), crane.path().join("crane/r.jpg")).unwrap();
    let out = eval(&["--no-store", arg(crane.path())]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("n02012849 (134, crane) or n03126707 (517, crane)"),
        "{stderr}"
    );
}

#[test]
fn a_loc_solution_file_gives_labels_and_boxes() {
    let flat = tempfile::tempdir().unwrap();
    std::fs::copy(
        photo("chelsea"),
        flat.path().join("ILSVRC2012_val_00000001.png"),
    )
    .unwrap();
    std::fs::copy(
        photo("coffee"),
        flat.path().join("ILSVRC2012_val_00000002.png"),
    )
    .unwrap();
    std::fs::copy(
        photo("rocket"),
        flat.path().join("ILSVRC2012_val_00000003.jpg"),
    )
    .unwrap();
    let b = &CHELSEA_BOX;
    let csv = flat.path().join("LOC_val_solution.csv");
    std::fs::write(
        &csv,
        format!(
            "ImageId,PredictionString\n\
             ILSVRC2012_val_00000001,{} {} {} {} {} \n\
             ILSVRC2012_val_00000002,n07920052 80 30 540 380 n07920052 0 0 10 10 \n",
            b.wnid, b.x0, b.y0, b.x1, b.y1
        ),
    )
    .unwrap();
    let lines = json_lines(&eval(&[
        "--json",
        "--no-store",
        "--labels",
        arg(&csv),
        arg(flat.path()),
    ]));
    assert_eq!(by_name(&lines, "00000001.png")["truth"]["index"], 285);
    assert_eq!(by_name(&lines, "00000002.png")["truth"]["index"], 967);
    assert!(
        by_name(&lines, "00000003.jpg")["truth"].is_null(),
        "not in the file: unlabelled"
    );
    let s = &lines.last().unwrap()["summary"];
    assert_eq!(
        (s["boxed"].as_u64(), s["unlabelled"].as_u64()),
        (Some(2), Some(1))
    );
}

/// `eval --save-cams DIR`: each image's map of its true class (the WSOL convention: here a
/// coffee photo filed under tench, far below its top 5) at the network input's size, 0..1,
/// at DIR/<path below the dataset>.npy.
#[test]
fn eval_saves_the_true_class_map_of_each_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("n02124075")).unwrap();
    std::fs::create_dir_all(data.join("n01440764")).unwrap();
    std::fs::copy(photo("chelsea"), data.join("n02124075/chelsea.png")).unwrap();
    std::fs::copy(photo("coffee"), data.join("n01440764/coffee.png")).unwrap();
    let maps = dir.path().join("maps");
    let out = eval(&[
        arg(&data),
        "--no-store",
        "--json",
        "--save-cams",
        arg(&maps),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let classifier = crate::common::classifier();
    for (file, class) in [("n02124075/chelsea.png", 285), ("n01440764/coffee.png", 0)] {
        let img = camview::model::preprocess::load_rgb(&data.join(file)).unwrap();
        let prepared = classifier
            .prepare(&img, camview::model::ResizeMode::Full)
            .unwrap();
        let analysis = classifier.analyze(&prepared, 5, Some(class)).unwrap();
        let index = analysis.top.iter().position(|p| p.index == class).unwrap();
        let grid = &analysis.cams[index];
        let (w, h) = analysis.input;
        let want = camview::model::faithfulness::upsample_like_opencv(
            &grid.normalised(),
            grid.width,
            grid.height,
            w as usize,
            h as usize,
        );
        let (shape, got) = crate::common::read_npy(&maps.join(format!("{file}.npy")));
        assert_eq!(shape, [h as usize, w as usize]);
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-4, "{file}: {worst}");
    }
}
