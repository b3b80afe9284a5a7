//! Score-CAM in `eval` and `classify` with a tiny model of `tests/fixtures/models` (16
//! layer-4 channels: 16 masked passes an image, never the genuine ResNet-50's 2048 here):
//! the maps are the engine's `method_maps`, the records are stored under `scorecam` and read
//! back, the closed-form methods beside it keep their one pass, and Ctrl-C stops it between
//! batches keeping what was finished.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use camview::model::cam_methods::CamMethod;
use camview::model::faithfulness::upsample_like_opencv;
use camview::model::preprocess::load_rgb;
use camview::model::{Classifier, ResizeMode};
use candle_core::Device;
use serde_json::Value;

use crate::common::{PHOTOS, break_keeping_identity, photo, read_npy, root};

/// `basic.pth`: basic blocks, 16 channels at layer 4, 7 classes.
pub fn tiny() -> PathBuf {
    root().join("tests/fixtures/models/basic.pth")
}

const CHANNELS: usize = 16;

/// `camview ARGS --model basic.pth`.
fn camview(args: &[&str]) -> Output {
    camview_with(&tiny(), args)
}

/// `camview ARGS --model MODEL`.
pub fn camview_with(model: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .arg("--model")
        .arg(model)
        .env_remove("CAMVIEW_MODEL")
        .env_remove("CAMVIEW_WEIGHTS")
        .env_remove("CAMVIEW_METHOD")
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub fn json_lines(out: &Output) -> Vec<Value> {
    assert!(out.status.success(), "failed: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Class folders named by index (of a model's `classes`) holding the first `n` sample
/// photos; each photo's file and class.
pub fn dataset(dir: &Path, n: usize, classes: usize) -> Vec<(PathBuf, usize)> {
    let mut items = Vec::new();
    for (i, name) in PHOTOS.iter().take(n).enumerate() {
        let from = photo(name);
        let class = (3 * i + 1) % classes;
        let folder = dir.join(class.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        let to = folder.join(from.file_name().unwrap());
        std::fs::copy(&from, &to).unwrap();
        items.push((to, class));
    }
    items
}

/// Score-CAM's map of `class` made in-process by the engine, at the network input's size
/// scaled to 0..1 as `--save-cams` writes maps, and the raw grid.
fn engine_map(file: &Path, class: usize) -> (Vec<f32>, Vec<f32>) {
    let classifier = Classifier::load(&tiny(), None, Device::Cpu).unwrap();
    let prepared = classifier
        .prepare(&load_rgb(file).unwrap(), ResizeMode::Full)
        .unwrap();
    let mut calls = 0;
    let grid = classifier
        .method_maps(&prepared, &[class], CamMethod::ScoreCam, 5, &mut |_, _| {
            calls += 1;
            ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap()
        .remove(0);
    assert_eq!(calls, CHANNELS.div_ceil(5), "a pass a channel, 5 a batch");
    let (w, h) = (prepared.input.0 as usize, prepared.input.1 as usize);
    let map = upsample_like_opencv(&grid.normalised(), grid.width, grid.height, w, h);
    (map, grid.values)
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max);
    assert!(worst <= tolerance, "{what}: differs by {worst}");
}

/// `eval --method scorecam`: the cost said first, the saved maps are the engine's Score-CAM
/// maps of the true class, the records are stored under `scorecam` and a second run reads
/// them (the photos broken by then); `classify --method scorecam` gives the same top-1 map.
#[test]
fn eval_and_classify_run_score_cam_and_the_store_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let items = dataset(&data, 4, 7);
    let store = dir.path().join("store.sqlite");
    let maps = dir.path().join("maps");
    let args = [
        "eval",
        arg(&data),
        "--method",
        "scorecam",
        "--store",
        arg(&store),
        "--json",
    ];
    let mut first_args = args.to_vec();
    first_args.extend(["--save-cams", arg(&maps)]);
    let first_out = camview(&first_args);
    let first = json_lines(&first_out);
    let stderr = text(&first_out.stderr);
    assert!(
        stderr.contains(&format!(
            "Score-CAM runs {CHANNELS} forward passes an image on the CPU"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("Score-CAM analysed 4 images"), "{stderr}");
    assert_eq!(first.last().unwrap()["summary"]["method"], "scorecam");
    for (file, class) in &items {
        let below = file.strip_prefix(&data).unwrap();
        let (shape, saved) = read_npy(&maps.join(format!("{}.npy", below.display())));
        let (want, _) = engine_map(file, *class);
        assert_eq!(shape.iter().product::<usize>(), want.len());
        assert_close(&format!("{}", below.display()), &saved, &want, 1e-5);
    }
    let rows: i64 = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM results WHERE method = 'scorecam'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 4);

    // classify: the top-1 class's raw grid is the engine's Score-CAM grid of that class.
    let (file, _) = &items[1];
    let out = camview(&[
        "classify",
        arg(file),
        "--method",
        "scorecam",
        "--json",
        "--cam-grid",
    ]);
    let line = &json_lines(&out)[0];
    let top1 = &line["top"][0];
    let class = top1["index"].as_u64().unwrap() as usize;
    let grid: Vec<f32> = top1["cam"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let (_, want) = engine_map(file, class);
    assert_close("classify's top-1 grid", &grid, &want, 1e-5);

    // The second run reads the store: nothing could be decoded now.
    for (file, _) in &items {
        break_keeping_identity(file);
    }
    let second_out = camview(&args);
    let second = json_lines(&second_out);
    let stderr = text(&second_out.stderr);
    assert!(
        stderr.contains("all 4 Score-CAM results from the store"),
        "{stderr}"
    );
    assert_eq!(first, second);
}

/// `eval --methods cam,scorecam,layercam`: the closed-form methods share one pass an image,
/// Score-CAM runs its own, the table and JSON have a row and fields for each; a second run
/// reads every method from the store.
#[test]
fn score_cam_beside_closed_form_methods_in_one_table() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dataset(&data, 4, 7);
    let store = dir.path().join("store.sqlite");
    let args = [
        "eval",
        arg(&data),
        "--methods",
        "cam,scorecam,layercam",
        "--store",
        arg(&store),
        "--json",
    ];
    let out = camview(&args);
    let lines = json_lines(&out);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("analysed 4 images in"), "{stderr}");
    assert!(stderr.contains("Score-CAM analysed 4 images"), "{stderr}");
    let methods = &lines.last().unwrap()["summary"]["methods"];
    for m in ["cam", "scorecam", "layercam"] {
        assert_eq!(methods[m]["images"], 4, "{m}: {methods}");
    }
    let again = camview(&args);
    assert_eq!(json_lines(&again), lines);
    let stderr = text(&again.stderr);
    assert!(stderr.contains("all 4 results from the store"), "{stderr}");
    assert!(
        stderr.contains("all 4 Score-CAM results from the store"),
        "{stderr}"
    );
}

/// `copies` × 4 photos in class folders of `basic.pth`'s classes: more than the signal's way
/// can outrun.
fn many_images(dir: &Path, copies: usize) -> PathBuf {
    let data = dir.join("data");
    for copy in 0..copies {
        for (file, class) in dataset(&dir.join(format!("set{copy}")), 4, 7) {
            let to = data.join(class.to_string());
            std::fs::create_dir_all(&to).unwrap();
            let name = file.file_name().unwrap().to_str().unwrap();
            std::fs::rename(&file, to.join(format!("{copy}-{name}"))).unwrap();
        }
    }
    data
}

/// `camview ARGS` interrupted (SIGINT) once Score-CAM has said what it costs (and, with
/// `after_a_line`, once a first line is on stdout): its status, stdout, the rest of its
/// stderr, and how many images it says it finished.
fn interrupted_score_cam(
    args: &[&str],
    after_a_line: bool,
) -> (Option<i32>, String, String, usize) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .arg("--model")
        .arg(tiny())
        .env_remove("CAMVIEW_MODEL")
        .env_remove("CAMVIEW_WEIGHTS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("Score-CAM runs") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no cost line");
    }
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    if after_a_line {
        assert!(stdout.read_line(&mut first).unwrap() > 0, "no result line");
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    std::io::Read::read_to_string(&mut stdout, &mut first).unwrap();
    let status = child.wait().unwrap();
    let finished: usize = rest
        .split("Score-CAM stopped (Ctrl-C) after ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{rest}"));
    (status.code(), first, rest, finished)
}

/// Ctrl-C while Score-CAM runs: status 130, a line that says how far it got, the finished
/// images stored; the next run reads them and does the rest.
#[test]
fn eval_score_cam_stops_on_ctrl_c_keeping_what_it_finished() {
    let dir = tempfile::tempdir().unwrap();
    let data = many_images(dir.path(), 3);
    let store = dir.path().join("store.sqlite");
    let args = [
        "eval",
        arg(&data),
        "--method",
        "scorecam",
        "--store",
        arg(&store),
    ];
    let (status, stdout, rest, finished) = interrupted_score_cam(&args, false);
    assert_eq!(status, Some(130), "{rest}");
    assert!(stdout.is_empty());
    assert!(finished < 12, "{rest}");
    let rows: usize = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM results WHERE method = 'scorecam'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap() as usize;
    assert_eq!(rows, finished);
    let out = camview(&args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("Score-CAM analysed {} images", 12 - finished))
            && stderr.contains(&format!("{finished} from the store")),
        "{stderr}"
    );
}

/// `classify` writes each image as Score-CAM finishes it: Ctrl-C (sent once the first is
/// out) stops it with status 130, and stdout holds the finished images' lines, whole.
#[test]
fn classify_score_cam_stops_on_ctrl_c_with_the_finished_images_written() {
    let dir = tempfile::tempdir().unwrap();
    // 40 images: the signal, sent after the first, lands long before the last.
    let data = many_images(dir.path(), 10);
    let args = ["classify", arg(&data), "--method", "scorecam", "--json"];
    let (status, stdout, rest, finished) = interrupted_score_cam(&args, true);
    assert_eq!(status, Some(130), "{rest}");
    assert!((1..40).contains(&finished), "{rest}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), finished, "{stdout}");
    for line in &lines {
        assert_eq!(line["method"], "scorecam", "{line}");
    }
}
