//! Ground truth against a model's own classes: `camview eval` on ImageFolder datasets (folders
//! named after a timm folder's classes; folders that name a model nothing else names, by
//! torchvision's sorted-folder rule; a folder count that differs from the head's) with the
//! tiny models of `tests/fixtures/models`. The truth is what the folders say, checked here
//! from the folder each image was copied into.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::common::{PHOTOS, photo};

fn model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/models/{name}"))
}

/// `camview eval --model MODEL ARGS`, with a store of its own in `store`.
fn eval(model: &Path, store: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .arg("eval")
        .arg("--model")
        .arg(model)
        .arg("--store")
        .arg(store)
        .args(args)
        .env_remove("CAMVIEW_MODEL")
        .env_remove("CAMVIEW_WEIGHTS")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An ImageFolder in a temp dir: each of the sample photos copied into a folder, the i-th
/// photo into `folders[i % folders.len()]`. Returns the dir and each image's folder, by its
/// path below the root.
fn image_folder(folders: &[&str]) -> (tempfile::TempDir, BTreeMap<String, String>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut truth = BTreeMap::new();
    for folder in folders {
        std::fs::create_dir_all(root.join(folder)).unwrap();
    }
    for (i, name) in PHOTOS.iter().enumerate() {
        let from = photo(name);
        let file = from.file_name().unwrap().to_str().unwrap().to_string();
        let folder = folders[i % folders.len()];
        std::fs::copy(&from, root.join(folder).join(&file)).unwrap();
        truth.insert(format!("{folder}/{file}"), folder.to_string());
    }
    (dir, truth)
}

/// The per-image lines of `eval --json` by path below `root`, and the summary.
fn json(out: &Output, root: &Path) -> (BTreeMap<String, Value>, Value) {
    assert!(out.status.success(), "eval failed: {}", text(&out.stderr));
    let mut lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap()["summary"].clone();
    let images = lines
        .into_iter()
        .map(|l| {
            let path = PathBuf::from(l["path"].as_str().unwrap());
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            (rel, l)
        })
        .collect();
    (images, summary)
}

#[test]
fn eval_reads_class_folders_named_by_a_timm_folders_classes() {
    // timm_resnetd's config.json names its classes scratch, dent, clean; the folders are
    // written as a user might, case and separators aside.
    let (dir, folders) = image_folder(&["Scratch", "dent", "CLEAN"]);
    let root = dir.path().join("data");
    let store = dir.path().join("store.sqlite");
    let timm = model("timm_resnetd");
    let out = eval(&timm, &store, &["--json", root.to_str().unwrap()]);
    let (images, summary) = json(&out, &root);
    assert_eq!(images.len(), PHOTOS.len());
    assert_eq!(summary["unlabelled"], 0, "{summary}");
    let index = |folder: &str| match folder {
        "Scratch" => 0,
        "dent" => 1,
        "CLEAN" => 2,
        other => panic!("{other}"),
    };
    let names = ["scratch", "dent", "clean"];
    let mut hits = 0;
    for (rel, line) in &images {
        let class = index(&folders[rel]);
        assert_eq!(line["truth"]["index"], class, "{rel}: {line}");
        assert_eq!(line["truth"]["label"], names[class], "{rel}: {line}");
        assert_eq!(line["truth"]["wnid"], "", "no WordNet IDs: {line}");
        let top1 = &line["top"][0];
        let predicted = top1["index"].as_u64().unwrap() as usize;
        assert_eq!(top1["label"], names[predicted], "{line}");
        hits += usize::from(predicted == class);
    }
    assert_eq!(
        summary["top1"].as_f64().unwrap(),
        hits as f64 / PHOTOS.len() as f64
    );

    // The report, from the store this time: every image labelled, the classes by name.
    let out = eval(&timm, &store, &[root.to_str().unwrap()]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        report.contains("4 images, 4 labelled (labels from class folders)"),
        "{report}"
    );
    assert!(
        text(&out.stderr).contains("all 4 results from the store"),
        "{}",
        text(&out.stderr)
    );
    for name in report
        .lines()
        .skip_while(|l| !l.starts_with("per class"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.rsplit("  ").next().unwrap().trim())
    {
        assert!(names.contains(&name), "`{name}` in\n{report}");
    }
}

#[test]
fn eval_names_a_numbered_models_classes_after_the_sorted_folders() {
    // basic.pth is a bare checkpoint with a 7-class head: nothing names its classes. Seven
    // folders (three of them empty), in code point order `Zinc` before `apple` (Python's
    // sorted(), as torchvision's ImageFolder numbers them), and `10` before `9`.
    let folders = ["apple", "Zinc", "9", "fig", "10", "pear", "kiwi"];
    let sorted = ["10", "9", "Zinc", "apple", "fig", "kiwi", "pear"];
    let (dir, truth) = image_folder(&folders);
    let root = dir.path().join("data");
    let store = dir.path().join("store.sqlite");
    let basic = model("basic.pth");
    let out = eval(&basic, &store, &["--json", root.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    let (images, summary) = json(&out, &root);
    let note = format!(
        "camview: the model's 7 classes are named after the sorted class folders of {} \
         (torchvision's ImageFolder rule): 10, 9, Zinc, apple, fig, kiwi, pear",
        root.display()
    );
    assert!(stderr.lines().any(|l| l == note), "{stderr}");
    assert_eq!(summary["unlabelled"], 0, "{summary}");
    for (rel, line) in &images {
        let folder = &truth[rel];
        let class = sorted.iter().position(|f| f == folder).unwrap();
        assert_eq!(line["truth"]["index"], class, "{rel}: {line}");
        assert_eq!(line["truth"]["label"], folder.as_str(), "{line}");
        for p in line["top"].as_array().unwrap() {
            let i = p["index"].as_u64().unwrap() as usize;
            assert_eq!(p["label"], sorted[i], "predictions by folder name: {line}");
        }
    }

    // The report's confusions name the folders: one line per miss pair, as the JSON says.
    let out = eval(
        &basic,
        &store,
        &["--top-confusions", "50", root.to_str().unwrap()],
    );
    let report = text(&out.stdout);
    assert!(report.contains("4 images, 4 labelled"), "{report}");
    let mut expected: Vec<String> = images
        .values()
        .filter(|l| l["top1_correct"] == false)
        .map(|l| {
            let truth = l["truth"]["label"].as_str().unwrap();
            let top1 = l["top"][0]["label"].as_str().unwrap();
            format!("{truth} → {top1}")
        })
        .collect();
    expected.sort();
    expected.dedup();
    let mut listed: Vec<String> = report
        .lines()
        .skip_while(|l| !l.starts_with("most frequent confusions"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().split_once("  ").unwrap().1.trim().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "{report}");
}

#[test]
fn eval_with_a_folder_count_unlike_the_heads_says_both_numbers() {
    let (dir, _) = image_folder(&["scratch", "dent", "clean"]);
    let root = dir.path().join("data");
    let out = eval(
        &model("basic.pth"),
        &dir.path().join("store.sqlite"),
        &[root.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("has 3 class folders but the model's head has 7 classes"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("4 images, 0 labelled (no labels found)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn eval_reads_a_labels_file_against_the_models_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("flat");
    std::fs::create_dir(&root).unwrap();
    for name in PHOTOS {
        let from = photo(name);
        std::fs::copy(&from, root.join(from.file_name().unwrap())).unwrap();
    }
    let labels = dir.path().join("labels.csv");
    std::fs::write(
        &labels,
        "path,label\nastronaut.png,Dent\nchelsea.png,2\ncoffee.png,scratch\n",
    )
    .unwrap();
    let out = eval(
        &model("timm_resnetd"),
        &dir.path().join("store.sqlite"),
        &[
            "--json",
            "--labels",
            labels.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    let (images, summary) = json(&out, &root);
    assert_eq!(summary["unlabelled"], 1, "{summary}");
    assert_eq!(images["astronaut.png"]["truth"]["label"], "dent");
    assert_eq!(images["chelsea.png"]["truth"]["label"], "clean");
    assert_eq!(images["coffee.png"]["truth"]["index"], 0);
    assert!(images["rocket.jpg"]["truth"].is_null());

    // An ImageNet name is no class of this model: the error says which are near.
    std::fs::write(&labels, "path,label\nchelsea.png,Egyptian cat\n").unwrap();
    let out = eval(
        &model("timm_resnetd"),
        &dir.path().join("store.sqlite"),
        &["--labels", labels.to_str().unwrap(), root.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`Egyptian cat` is not one of the model's 3 classes"),
        "{stderr}"
    );
}

/// IoU of a reported half-open CAM box `[x0, y0, x1, y1)` and a VOC box (both ends included),
/// computed here as ILSVRC counts it.
fn iou(cam: &Value, voc: [f64; 4]) -> f64 {
    let c: Vec<f64> = cam
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (ax0, ay0, ax1, ay1) = (c[0], c[1], c[2] - 1.0, c[3] - 1.0);
    let [bx0, by0, bx1, by1] = voc;
    let iw = (ax1.min(bx1) - ax0.max(bx0) + 1.0).max(0.0);
    let ih = (ay1.min(by1) - ay0.max(by0) + 1.0).max(0.0);
    let inter = iw * ih;
    let area = |x0: f64, y0: f64, x1: f64, y1: f64| (x1 - x0 + 1.0) * (y1 - y0 + 1.0);
    inter / (area(ax0, ay0, ax1, ay1) + area(bx0, by0, bx1, by1) - inter)
}

#[test]
fn truth_boxes_are_read_by_the_models_class_names() {
    // VOC files naming the timm folder's classes as a user might write them: each image has a
    // box of its own class (the photo's left half) and one of another class (its right half,
    // which must not count), and one file names a class the model does not have.
    let (dir, folders) = image_folder(&["Scratch", "dent", "CLEAN"]);
    let root = dir.path().join("data");
    let boxes = dir.path().join("boxes");
    std::fs::create_dir(&boxes).unwrap();
    let written = |class: &str| match class {
        "Scratch" => "scratch",
        "dent" => "Dent",
        "CLEAN" => "clean",
        other => panic!("{other}"),
    };
    let other = |class: &str| if class == "dent" { "clean" } else { "dent" };
    let mut own = BTreeMap::new();
    for (rel, folder) in &folders {
        let (w, h) = image::image_dimensions(root.join(rel)).unwrap();
        let stem = Path::new(rel).file_stem().unwrap().to_str().unwrap();
        let left = [0.0, 0.0, f64::from(w / 2 - 1), f64::from(h - 1)];
        let object = |name: &str, b: [f64; 4]| {
            format!(
                "<object><name>{name}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin>\
                 <xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
                b[0], b[1], b[2], b[3]
            )
        };
        let xml = format!(
            "<annotation>{}{}</annotation>",
            object(written(folder), left),
            object(
                other(folder),
                [f64::from(w / 2), 0.0, f64::from(w - 1), f64::from(h - 1)]
            )
        );
        std::fs::write(boxes.join(format!("{stem}.xml")), xml).unwrap();
        own.insert(rel.clone(), left);
    }
    std::fs::write(
        boxes.join("stray.xml"),
        "<annotation><object><name>Egyptian cat</name><bndbox><xmin>1</xmin><ymin>1</ymin>\
         <xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>",
    )
    .unwrap();

    let out = eval(
        &model("timm_resnetd"),
        &dir.path().join("store.sqlite"),
        &[
            "--json",
            "--boxes",
            boxes.to_str().unwrap(),
            root.to_str().unwrap(),
        ],
    );
    let (images, summary) = json(&out, &root);
    assert_eq!(summary["boxed"], PHOTOS.len(), "{summary}");
    let mut loc_hits = 0;
    for (rel, line) in &images {
        // The reported IoU is the one of the top-1 box with the true class's box alone.
        let want = iou(&line["bbox"], own[rel]);
        let got = line["iou"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-9, "{rel}: {got} vs {want}: {line}");
        let hit = line["top1_correct"] == true && want >= 0.5;
        assert_eq!(line["loc_correct"], hit, "{rel}: {line}");
        loc_hits += usize::from(hit);
    }
    assert_eq!(
        summary["loc_top1"].as_f64().unwrap(),
        loc_hits as f64 / PHOTOS.len() as f64
    );
}
