//! Faithfulness scores against pytorch-grad-cam's own metrics
//! (`tests/fixtures/faithfulness/make_faithfulness.py`): the genuine ResNet-50, the golden
//! `center` inputs, the top-1 class's probability, CAM's and Grad-CAM++'s maps.

use camview::model::cam_methods::{CamMethod, ClassHead, class_map};
use camview::model::faithfulness::{
    Input, Noise, Order, cam_mult_image, road, upsample_like_opencv,
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
