//! The CAM family against pytorch-grad-cam 1.5's own implementations
//! (`tests/fixtures/cam_methods/make_cam_methods.py`): the genuine ResNet-50, the golden
//! `center` inputs, the top-1 class, maps compared on the 7 × 7 layer-4 grid after the
//! library's scaling (ReLU, min–max), which is what `CamGrid::normalised` does.

use camview::model::cam_methods::{CamMethod, ClassHead, class_map};

use crate::common::{Layer4, PHOTOS, golden_input, pearson, root};

/// Correlation with the reference that a map must reach (the methods' maps differ from each
/// other by more: CAM's against Grad-CAM++'s, LayerCAM's, Ablation-CAM's and EigenCAM's on
/// these photos correlate 0.63–0.99).
const MIN_CORRELATION: f64 = 0.999;
/// The largest difference allowed at any cell of the scaled maps (0..1).
const MAX_DIFFERENCE: f32 = 1e-3;

fn reference() -> serde_json::Value {
    let path = root().join("tests/fixtures/cam_methods/cam_methods.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// camview's method each reference map is checked against: Grad-CAM, HiResCAM and
/// XGrad-CAM are CAM up to a positive factor with a linear head (`cam_methods`' docs).
fn ours(reference_name: &str) -> CamMethod {
    match reference_name {
        "gradcam" | "hirescam" | "xgradcam" => CamMethod::Cam,
        other => CamMethod::from_name(other).unwrap_or_else(|| panic!("no method {other}")),
    }
}

/// Asserts that `got` (a scaled map, row-major) is the reference's `rows` of `name` for
/// `photo`: correlation and largest cell difference within the bounds above.
fn assert_like_reference(photo: &str, name: &str, got: &[f32], rows: &serde_json::Value) {
    let expected: Vec<f32> = rows
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter())
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let correlation = pearson(got, &expected);
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("{photo} {name}: correlation {correlation:.6}, max difference {worst:.2e}");
    assert!(
        correlation >= MIN_CORRELATION,
        "{photo} {name}: correlation {correlation} with pytorch-grad-cam"
    );
    assert!(
        worst <= MAX_DIFFERENCE,
        "{photo} {name}: a cell differs by {worst} from pytorch-grad-cam's"
    );
}

#[test]
fn every_method_matches_pytorch_grad_cam_on_every_photo() {
    let reference = reference();
    let mut checked = 0;
    for photo in PHOTOS {
        let want = &reference["photos"][photo];
        let class = want["class"].as_u64().unwrap() as usize;
        let layer4 = Layer4::of(&golden_input(&format!("{photo}.center")));
        let logits = &layer4.logits;
        let top1 = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(top1, class, "{photo}: the reference's top-1");
        let features = layer4.map();
        let weights = Layer4::head_weights(class);
        let head = ClassHead {
            weights: &weights,
            logit: logits[class],
        };
        for (name, rows) in want["maps"].as_object().unwrap() {
            let method = ours(name);
            if method.needs_forward_passes() {
                continue;
            }
            let got = class_map(method, &features, head).unwrap().normalised();
            assert_like_reference(photo, name, &got, rows);
            checked += 1;
        }
    }
    assert!(checked >= PHOTOS.len() * 6, "only {checked} maps checked");
}

/// Score-CAM against the library's on the photos the reference ran it for: 2048 masked
/// passes of the genuine network a photo, minutes in a release build and about an hour in
/// the test profile (whose own code is built at -O1), so it runs when asked:
/// `cargo test --release --test camview -- --ignored score_cam`.
#[test]
#[ignore = "2048 forward passes a photo: run with --release -- --ignored score_cam"]
fn score_cam_matches_pytorch_grad_cam() {
    use camview::model::preprocess::{Prepared, Region};
    let reference = reference();
    let classifier = crate::common::classifier();
    let mut checked = 0;
    for photo in PHOTOS {
        let want = &reference["photos"][photo];
        let Some(rows) = want["maps"].get("scorecam") else {
            continue;
        };
        let class = want["class"].as_u64().unwrap() as usize;
        let tensor = golden_input(&format!("{photo}.center"));
        let (_, _, h, w) = tensor.dims4().unwrap();
        let prepared = Prepared {
            tensor,
            input: (w as u32, h as u32),
            region: Region {
                x0: 0.0,
                y0: 0.0,
                x1: w as f32,
                y1: h as f32,
            },
        };
        let maps = classifier
            .method_maps(&prepared, &[class], CamMethod::ScoreCam, 32, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
            .expect("not stopped");
        assert_like_reference(photo, "scorecam", &maps[0].normalised(), rows);
        checked += 1;
    }
    assert!(checked > 0, "the reference holds no Score-CAM map");
}
