//! `camview eval` by other methods of the CAM family: `--method` (maps, boxes and the store
//! keyed by it), `--methods` (one table), and `--box-metric v2` (MaxBoxAccV2) against
//! clovaai's wsolevaluation (`tests/fixtures/wsol/`, made by its `make_maxboxacc.py`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use camview::box_v2;
use camview::model::ResizeMode;
use camview::model::cam_methods::{CamMethod, ClassHead, class_map};
use camview::model::faithfulness::upsample_like_opencv;
use serde_json::Value;

use crate::common::{Layer4, classifier, photo, read_npy, root, weights_path};
use crate::labelled::build;

fn eval(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_camview"));
    command
        .arg("eval")
        .args(args)
        .env("CAMVIEW_WEIGHTS", weights_path());
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
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

fn summary(lines: &[Value]) -> &Value {
    &lines.last().unwrap()["summary"]
}

/// The map of `method` for `class` made here from the test's own read of the forward pass
/// (the engine's closed forms, checked against pytorch-grad-cam in `cam_methods.rs`), at
/// the network input's size as `--save-cams` writes maps.
fn engine_map(file: &Path, class: usize, method: CamMethod) -> (usize, usize, Vec<f32>) {
    let img = camview::model::preprocess::load_rgb(file).unwrap();
    let prepared = classifier().prepare(&img, ResizeMode::Full).unwrap();
    let layer4 = Layer4::of(&prepared.tensor);
    let weights = Layer4::head_weights(class);
    let head = ClassHead {
        weights: &weights,
        logit: layer4.logits[class],
    };
    let grid = class_map(method, &layer4.map(), head).unwrap();
    let (w, h) = (prepared.input.0 as usize, prepared.input.1 as usize);
    let map = upsample_like_opencv(&grid.normalised(), grid.width, grid.height, w, h);
    (w, h, map)
}

/// `eval --method` (here through `CAMVIEW_METHOD`): the saved maps are the method's, and its
/// boxes are not CAM's.
#[test]
fn eval_by_a_method_saves_its_maps_and_finds_its_boxes() {
    let d = build();
    let maps = d.dir.path().join("maps");
    let boxes = d.dir.path().join("boxes");
    let data = d.root();
    let common = ["--json", "--no-store", "--boxes", arg(&boxes), arg(&data)];
    let mut args = common.to_vec();
    args.extend(["--save-cams", arg(&maps)]);
    let layer = json_lines(&eval(&args, &[("CAMVIEW_METHOD", "layercam")]));
    assert_eq!(summary(&layer)["method"], "layercam");
    for (file, class) in [
        ("n02124075/chelsea.png", 285),
        ("espresso/coffee.png", 967),
        ("Ski/astronaut.png", 795),
    ] {
        let (w, h, want) = engine_map(&d.root().join(file), class, CamMethod::LayerCam);
        let (shape, got) = read_npy(&maps.join(format!("{file}.npy")));
        assert_eq!(shape, [h, w]);
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-4, "{file}: {worst}");
    }
    // EigenCAM's map ignores the class and finds another box than CAM's for some image.
    let eigen = json_lines(&eval(
        &[&common[..], &["--method", "eigencam"]].concat(),
        &[],
    ));
    let cam = json_lines(&eval(&common, &[]));
    assert_eq!(summary(&cam)["method"], "cam");
    let bboxes = |lines: &[Value]| -> Vec<Value> {
        lines[..lines.len() - 1]
            .iter()
            .map(|l| l["bbox"].clone())
            .collect()
    };
    assert_ne!(bboxes(&eigen), bboxes(&cam));
}

fn rows(store: &Path) -> i64 {
    rusqlite::Connection::open(store)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM results", [], |r| r.get(0))
        .unwrap()
}

/// The store keys results by method: a second method is analysed (not served CAM's), a
/// second run of it reads the store, and both methods' rows stay.
#[test]
fn the_store_keeps_each_methods_results_apart() {
    let d = build();
    let store = d.dir.path().join("store.sqlite");
    let boxes = d.dir.path().join("boxes");
    let data = d.root();
    let run = |method: &str, store_args: &[&str]| {
        let mut args = vec!["--json", "--boxes", arg(&boxes), "--method", method];
        args.extend_from_slice(store_args);
        args.push(arg(&data));
        let out = eval(&args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (json_lines(&out), stderr)
    };
    let kept = ["--store", arg(&store)];
    let (cam, _) = run("cam", &kept);
    assert_eq!(rows(&store), 6);
    let (grad, stderr) = run("gradcam++", &kept);
    assert!(stderr.contains("analysed 6 images"), "{stderr}");
    assert_eq!(rows(&store), 12);
    let (fresh, _) = run("gradcam++", &["--no-store"]);
    assert_eq!(grad, fresh, "gradcam++'s own results, not CAM's");
    assert_ne!(grad, cam);
    let (again, stderr) = run("gradcam++", &kept);
    assert!(stderr.contains("all 6 results from the store"), "{stderr}");
    assert_eq!(again, grad);
    let (cam_again, stderr) = run("cam", &kept);
    assert!(stderr.contains("all 6 results from the store"), "{stderr}");
    assert_eq!(cam_again, cam);
}

/// A store written by camview before results had a method (layout 1): made here by taking a
/// store of this camview back to that layout with SQL. Its CAM results are read back; other
/// methods are analysed beside them.
#[test]
fn a_store_of_the_old_layout_keeps_its_cam_results() {
    let d = build();
    let store = d.dir.path().join("store.sqlite");
    let data = d.root();
    let kept = ["--json", "--store", arg(&store), arg(&data)];
    let first = json_lines(&eval(&kept, &[]));
    {
        let conn = rusqlite::Connection::open(&store).unwrap();
        conn.execute_batch(
            "CREATE TABLE old (
                 path TEXT NOT NULL, size INTEGER NOT NULL, modified_ns INTEGER NOT NULL,
                 weights TEXT NOT NULL, resize TEXT NOT NULL,
                 truth INTEGER,
                 record BLOB NOT NULL,
                 UNIQUE (path, size, modified_ns, weights, resize));
             INSERT INTO old SELECT path, size, modified_ns, weights, resize, truth, record
                 FROM results;
             DROP TABLE results;
             ALTER TABLE old RENAME TO results;
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let out = eval(&kept, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("all 6 results from the store"), "{stderr}");
    assert_eq!(json_lines(&out), first);
    let out = eval(&[&["--method", "ablationcam"], &kept[..]].concat(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("analysed 6 images"), "{stderr}");
    assert_eq!(rows(&store), 12);
}

/// `--methods`: one pass serves every method, and each method's numbers are those of a run
/// by that method alone (its own passes); the table has a row a method (Score-CAM beside
/// them: `score_cam.rs`).
#[test]
fn methods_side_by_side_agree_with_each_method_alone() {
    let d = build();
    let boxes = d.dir.path().join("boxes");
    let data = d.root();
    let common = ["--no-store", "--boxes", arg(&boxes), arg(&data)];
    let methods = ["cam", "gradcam++", "layercam", "ablationcam", "eigencam"];
    let list = methods.join(",");
    // --methods takes the place of a method set in the environment.
    let all = json_lines(&eval(
        &[&["--json", "--methods", &list], &common[..]].concat(),
        &[("CAMVIEW_METHOD", "layercam")],
    ));
    assert_eq!(summary(&all)["method"], "cam", "the first of --methods");
    let by = &summary(&all)["methods"];
    for (i, m) in methods.iter().enumerate() {
        let alone = json_lines(&eval(
            &[&["--json", "--method", m], &common[..]].concat(),
            &[],
        ));
        assert_eq!(&by[*m], summary(&alone), "{m}");
        for (line, single) in all.iter().zip(&alone).take(all.len() - 1) {
            let loc = &line["methods"][*m];
            assert_eq!(loc["bbox"], single["bbox"], "{m}");
            assert_eq!(loc["loc_correct"], single["loc_correct"], "{m}");
            if i == 0 {
                // The top-level fields are the first method's.
                assert_eq!(line["bbox"], single["bbox"]);
            }
        }
    }
    // CSV: a column pair a method, the same IoU as the JSON's.
    let csv = eval(&[&["--csv", "--methods", &list], &common[..]].concat(), &[]).stdout;
    let mut reader = csv::Reader::from_reader(&csv[..]);
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), all.len() - 1);
    for m in methods {
        let column = header
            .iter()
            .position(|h| h == format!("iou_{m}"))
            .unwrap_or_else(|| panic!("no iou_{m} in {header:?}"));
        for (row, line) in rows.iter().zip(&all) {
            let want = line["methods"][m]["iou"]
                .as_f64()
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default();
            assert_eq!(&row[column], want, "{m}");
        }
    }
    let text = String::from_utf8(eval(&[&["--methods", &list], &common[..]].concat(), &[]).stdout)
        .unwrap();
    for m in methods {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{m} "))),
            "no row for {m}:\n{text}"
        );
    }
}

fn fixture() -> Value {
    let path = root().join("tests/fixtures/wsol/maxboxacc.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn voc(boxes: &[Value]) -> String {
    let objects: String = boxes
        .iter()
        .map(|b| {
            format!(
                "<object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin>\
                 <xmax>{}</xmax><ymax>{}</ymax></bndbox></object>",
                b[0].as_str().unwrap(),
                b[1],
                b[2],
                b[3],
                b[4]
            )
        })
        .collect();
    format!("<annotation>{objects}</annotation>")
}

/// The fixture's dataset, built again: (data folder, boxes folder).
fn wsol_dataset(dir: &Path, images: &[Value]) -> (PathBuf, PathBuf) {
    let (data, boxes) = (dir.join("data"), dir.join("boxes"));
    std::fs::create_dir_all(&boxes).unwrap();
    for image in images {
        let rel = image["path"].as_str().unwrap();
        let to = data.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        let name = image["photo"].as_str().unwrap();
        std::fs::copy(photo(name.split('.').next().unwrap()), &to).unwrap();
        let stem = Path::new(rel).file_stem().unwrap().to_str().unwrap();
        let xml = voc(image["boxes"].as_array().unwrap());
        std::fs::write(boxes.join(format!("{stem}.xml")), xml).unwrap();
    }
    (data, boxes)
}

/// MaxBoxAccV2 of every method on the fixture's five boxed photos (`squash`, so the network
/// input is wsolevaluation's 224 × 224 frame) against wsolevaluation's `BoxEvaluator` run on
/// the maps `eval --save-cams` wrote for them. The bound is equality: the same maps give the
/// same uint8 levels and so the same boxes (a map moved by the last bits of another CPU's
/// arithmetic could move a pixel across a level; none did where the fixture was made).
#[test]
fn max_box_acc_v2_matches_wsolevaluation() {
    let reference = fixture();
    let dir = tempfile::tempdir().unwrap();
    let sets = &reference["datasets"];
    let (data, boxes) = wsol_dataset(dir.path(), sets["images"].as_array().unwrap());
    let methods: Vec<&String> = sets["methods"].as_object().unwrap().keys().collect();
    let list = methods
        .iter()
        .map(|m| m.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let lines = json_lines(&eval(
        &[
            "--json",
            "--no-store",
            "--resize",
            "squash",
            "--box-metric",
            "v2",
            "--methods",
            &list,
            "--boxes",
            arg(&boxes),
            arg(&data),
        ],
        &[],
    ));
    for m in methods {
        let want = &sets["methods"][m.as_str()];
        let got = &summary(&lines)["methods"][m.as_str()];
        for (g, w) in got["max_box_acc_v2_by_iou"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["by_iou_percent"].as_array().unwrap())
        {
            let (g, w) = (g.as_f64().unwrap() * 100.0, w.as_f64().unwrap());
            assert!((g - w).abs() < 1e-9, "{m}: {g} against {w}");
        }
        let (g, w) = (
            got["max_box_acc_v2"].as_f64().unwrap() * 100.0,
            want["max_box_acc_v2_percent"].as_f64().unwrap(),
        );
        assert!((g - w).abs() < 1e-9, "{m}: {g} against {w}");
    }
}

/// The boxes of every contour at each of the 1000 CAM thresholds, on noisy maps with holes
/// and up to two dozen regions: the best IoU camview finds against wsolevaluation's
/// `compute_bboxes_from_scoremaps` (OpenCV's `findContours`), threshold by threshold.
#[test]
fn every_contour_at_every_threshold_as_wsolevaluation_finds_them() {
    for (n, case) in fixture()["synthetic"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let levels: Vec<u8> = case["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let t: Vec<i64> = case["truth"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let (w, h) = (
            case["width"].as_u64().unwrap() as usize,
            case["height"].as_u64().unwrap() as usize,
        );
        let curve = box_v2::level_curve(&levels, w, h, &[[t[0], t[1], t[2], t[3]]]);
        let want = case["best_iou"].as_array().unwrap();
        assert_eq!(want.len(), box_v2::CAM_THRESHOLDS);
        for (i, want) in want.iter().enumerate() {
            let (got, want) = (curve.at_threshold(i), want.as_f64().unwrap());
            assert!(
                (got - want).abs() < 1e-8,
                "map {n}, threshold {i}: {got} against {want}"
            );
        }
    }
}

/// The results service by a method (as the browser will use it): what it analyses has the
/// engine's maps by that method, is kept under it, and is served to that method only.
#[test]
fn the_service_by_a_method_keeps_that_methods_results() {
    use camview::analysis::{ImageKey, TOP_K};
    use camview::results::{Results, Target};

    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("chelsea.png");
    std::fs::copy(photo("chelsea"), &image).unwrap();
    let store = dir.path().join("results.sqlite");
    let method = CamMethod::GradCamPlusPlus;
    let (results, _) = Results::open(Some(&store), classifier(), ResizeMode::Full);
    let results = results.with_method(method);
    let target = Target {
        key: ImageKey::of(&image),
        truth: None,
    };
    let record = results.get_or_analyse(classifier(), &target).unwrap();
    let img = camview::model::preprocess::load_rgb(&image).unwrap();
    let prepared = classifier().prepare(&img, ResizeMode::Full).unwrap();
    let layer4 = Layer4::of(&prepared.tensor);
    for (p, got) in record.analysis.top.iter().zip(&record.analysis.cams) {
        let weights = Layer4::head_weights(p.index);
        let head = ClassHead {
            weights: &weights,
            logit: layer4.logits[p.index],
        };
        let want = class_map(method, &layer4.map(), head).unwrap();
        let worst = got
            .values
            .iter()
            .zip(&want.values)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst < 1e-4, "class {}: {worst}", p.index);
    }
    assert_eq!(record.analysis.top.len(), TOP_K);
    let stored = results.stored(&target).expect("kept under gradcam++");
    assert_eq!(stored.top1_box, record.top1_box);
    assert!(results.stored_by(&target, CamMethod::Cam).is_none());
    assert!(results.stored_by(&target, method).is_some());
}
