//! The model against an independent numpy ResNet-50 (`tests/fixtures/golden/make_golden.py`)
//! on the same genuine weights: logits within 1e-4 (max abs), CAMs within 1e-4 of their
//! maximum; and the photo → pixels step against Pillow's, which torchvision uses.

use std::process::Command;

use camview::model::ResizeMode;
use camview::model::cam_methods::CamMethod;
use camview::model::kernels::packed_gemm::{
    NO_AVX512_ENV, PORTABLE_ENV, avx512_available, kernel_available,
};
use camview::model::preprocess::{load_rgb, network_pixels};
use candle_core::{D, Tensor};

use crate::common::{
    MODES, PHOTOS, classifier, golden, golden_input, pearson, photo, read_npy, reference_json,
    weights_path,
};

const LOGIT_TOL: f32 = 1e-4;
const CAM_REL_TOL: f32 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn logits_and_cams_match_reference_for_every_photo_and_mode() {
    if std::env::var_os(PORTABLE_ENV).is_some() {
        assert!(
            !kernel_available(),
            "{PORTABLE_ENV} must take the portable path"
        );
    }
    if std::env::var_os(NO_AVX512_ENV).is_some() && kernel_available() {
        assert_eq!(
            classifier().kernel_name(),
            "avx2",
            "{NO_AVX512_ENV} must keep the AVX2 kernel"
        );
    }
    matches_reference(classifier());
}

/// The same on a CUDA GPU (cuBLAS without TF32, as candle sets it). Ignored by a plain
/// `cargo test`, where a skip would count as a pass: `scripts/gpu-check.sh` runs it by name
/// on a GPU machine, and there a missing GPU is a failure.
#[test]
#[ignore = "needs a CUDA build and GPU: scripts/gpu-check.sh runs it (--ignored --exact)"]
fn the_gpu_matches_reference_too() {
    assert!(
        candle_core::utils::cuda_is_available(),
        "this build has no CUDA (cargo test --features cuda)"
    );
    let device = candle_core::Device::new_cuda(0).expect("a CUDA GPU");
    let gpu = camview::model::Classifier::load(weights_path(), None, device).unwrap();
    matches_reference(&gpu);
}

/// Logits within 1e-4 and CAMs within 1e-4 of their maximum, on every golden input.
fn matches_reference(classifier: &camview::model::Classifier) {
    let model = classifier.model();
    for name in PHOTOS {
        for mode in MODES {
            let stem = format!("{name}.{mode}");
            let input = golden_input(&stem).to_device(classifier.device()).unwrap();
            let out = model.forward(&input).unwrap();
            let logits = out.logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
            let (_, want) = read_npy(&golden(&format!("{stem}.logits.npy")));
            let diff = max_abs_diff(&logits, &want);
            assert!(diff <= LOGIT_TOL, "{stem}: logits differ by {diff:e}");

            let top5: Vec<u32> = reference_json(name, mode)["top5"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["index"].as_u64().unwrap() as u32)
                .collect();
            let cams = model.cams(&out.features, &top5).unwrap();
            let (shape, want) = read_npy(&golden(&format!("{stem}.cam.npy")));
            assert_eq!(cams.dims(), &shape[..], "{stem}: CAM shape");
            let got = cams.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for (c, (g, w)) in got
                .chunks(got.len() / 5)
                .zip(want.chunks(want.len() / 5))
                .enumerate()
            {
                let scale = w.iter().map(|v| v.abs()).fold(0.0, f32::max);
                let rel = max_abs_diff(g, w) / scale;
                assert!(
                    rel <= CAM_REL_TOL,
                    "{stem}: CAM {c} differs by {rel:e} of its max"
                );
            }
        }
    }
}

/// The same comparison on the portable path (the `gemm` crate, Winograd included: what ARM
/// and other CPUs without AVX2 + FMA run), in a child process of this test binary, since
/// the path is chosen once per process.
#[test]
fn the_portable_path_matches_reference_too() {
    matches_reference_with(PORTABLE_ENV);
}

/// And on the AVX2 kernel where the CPU would choose the AVX-512 one: each kernel a CPU can
/// run is checked against the reference on it.
#[test]
fn the_avx2_kernel_matches_reference_too_where_avx512_runs() {
    if !avx512_available() {
        println!("skipped: this CPU has no AVX-512, so the reference test above ran AVX2 already");
        return;
    }
    matches_reference_with(NO_AVX512_ENV);
}

/// [`logits_and_cams_match_reference_for_every_photo_and_mode`] in a child process with the
/// environment variable `env` set.
fn matches_reference_with(env: &str) {
    let test = "golden::logits_and_cams_match_reference_for_every_photo_and_mode";
    let run = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--test-threads", "1"])
        .env(env, "1")
        .env("CAMVIEW_WEIGHTS", weights_path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the test did not run:\n{stdout}"
    );
}

#[test]
fn top_k_agrees_with_softmax_of_reference_logits() {
    // The classifier's probabilities are the softmax of the logits, ranked.
    let (_, logits) = read_npy(&golden("chelsea.full.logits.npy"));
    let probs = candle_nn::ops::softmax(
        &Tensor::new(logits.as_slice(), &candle_core::Device::Cpu).unwrap(),
        D::Minus1,
    )
    .unwrap()
    .to_vec1::<f32>()
    .unwrap();
    let top = camview::model::classifier::top_k(&probs, 5);
    let json = reference_json("chelsea", "full");
    for (p, want) in top.iter().zip(json["top5"].as_array().unwrap()) {
        assert_eq!(p.index as u64, want["index"].as_u64().unwrap());
        assert_eq!(p.label, want["label"].as_str().unwrap().replace('_', " "));
        assert!((f64::from(p.prob) - want["prob"].as_f64().unwrap()).abs() < 1e-5);
    }
    assert_eq!(
        top.iter().map(|p| p.rank).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

const MODE_VALUES: [ResizeMode; 3] = [ResizeMode::Full, ResizeMode::Squash, ResizeMode::Center];

#[test]
fn photo_pixels_match_pillows_resize_and_torchvisions_crop() {
    // The golden input PNGs are Pillow's bilinear resize (and torchvision's centre crop) of
    // the photo files: camview's pixels must be within one grey level of them.
    for name in PHOTOS {
        let img = load_rgb(&photo(name)).unwrap();
        for (mode, resize) in MODES.iter().zip(MODE_VALUES) {
            let (ours, _) = network_pixels(&img, resize);
            let pillow = image::open(golden(&format!("{name}.{mode}.input.png")))
                .unwrap()
                .to_rgb8();
            assert_eq!(
                ours.dimensions(),
                pillow.dimensions(),
                "{name}.{mode}: size"
            );
            let worst = ours
                .as_raw()
                .iter()
                .zip(pillow.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            eprintln!("{name}.{mode}: largest difference to Pillow {worst} grey levels");
            assert!(
                worst <= 1,
                "{name}.{mode}: {worst} grey levels from Pillow's"
            );
        }
    }
}

#[test]
fn photo_files_give_reference_top1_in_every_mode() {
    let c = classifier();
    for name in PHOTOS {
        let img = load_rgb(&photo(name)).unwrap();
        for (mode, resize) in MODES.iter().zip(MODE_VALUES) {
            let json = reference_json(name, mode);
            let prepared = c.prepare(&img, resize).unwrap();
            let shape: Vec<u64> = json["input_shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
                .collect();
            assert_eq!(
                [3, u64::from(prepared.input.1), u64::from(prepared.input.0)],
                shape[..],
                "{name}.{mode}: input size"
            );
            let a = c.analyze(&prepared, 5, None).unwrap();
            let want = &json["top5"][0];
            assert_eq!(
                a.top[0].index as u64,
                want["index"].as_u64().unwrap(),
                "{name}.{mode}: top-1"
            );
            let dp = (f64::from(a.top[0].prob) - want["prob"].as_f64().unwrap()).abs();
            eprintln!("{name}.{mode}: top-1 probability differs by {dp:.5}");
            assert!(dp <= 0.01, "{name}.{mode}: top-1 probability off by {dp}");
        }
    }
}

#[test]
fn any_input_size_from_32_pixels_works() {
    let c = classifier();
    for (h, w) in [(32, 32), (33, 65), (224, 500), (97, 31)] {
        let input = Tensor::zeros(
            (1, 3, h, w),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let out = c.model().forward(&input).unwrap();
        let fh = camview::model::resnet::feature_side(h);
        let fw = camview::model::resnet::feature_side(w);
        assert_eq!(out.features.dims(), &[1, 2048, fh, fw], "{h}x{w}");
        assert_eq!(out.logits.dims(), &[1, 1000]);
    }
}

#[test]
fn the_v1_weights_in_a_v1_5_graph_give_different_numbers() {
    // The layout matters: the same file read as v1.5 must not reproduce the reference.
    let weights = camview::model::weights::Weights::load(crate::common::weights_path()).unwrap();
    let wrong = camview::model::resnet::ResNet::load(
        &weights,
        camview::model::Arch::V1_5,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let input = golden_input("chelsea.center");
    let logits = wrong
        .forward(&input)
        .unwrap()
        .logits
        .squeeze(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let (_, want) = read_npy(&golden("chelsea.center.logits.npy"));
    assert!(max_abs_diff(&logits, &want) > 0.1);
}

#[test]
fn fast_cpu_path_equals_candle_conv2d_path_for_both_layouts() {
    // The golden files cover v1; v1.5 (stride in the 3×3) runs other fast kernels, so both
    // layouts are checked against candle's own convolutions, on a batch of two odd-sized inputs.
    let weights = camview::model::weights::Weights::load(crate::common::weights_path()).unwrap();
    let input = golden_input("rocket.full");
    let input = Tensor::cat(&[&input, &input.flip(&[3]).unwrap()], 0)
        .unwrap()
        .narrow(2, 0, 221)
        .unwrap()
        .narrow(3, 0, 301)
        .unwrap();
    for arch in [camview::model::Arch::V1, camview::model::Arch::V1_5] {
        let model = camview::model::resnet::ResNet::load_with_both_paths(&weights, arch).unwrap();
        let fast = model.forward_fast(&input).unwrap();
        let generic = model.forward_generic(&input).unwrap();
        assert_eq!(fast.features.dims(), generic.features.dims(), "{arch}");
        let diff = |a: &Tensor, b: &Tensor| {
            max_abs_diff(
                &a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                &b.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            )
        };
        assert!(
            diff(&fast.logits, &generic.logits) <= LOGIT_TOL,
            "{arch}: logits"
        );
        let scale = generic
            .features
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff(&fast.features, &generic.features) / scale <= CAM_REL_TOL,
            "{arch}: features"
        );
    }
}

#[test]
fn a_batch_gives_each_image_what_it_gets_alone() {
    // `eval` runs images in batches: each must get the analysis it gets on its own.
    let c = classifier();
    let prepared: Vec<_> = PHOTOS
        .iter()
        .map(|name| {
            c.prepare(&load_rgb(&photo(name)).unwrap(), ResizeMode::Squash)
                .unwrap()
        })
        .collect();
    let refs: Vec<_> = prepared.iter().collect();
    let pinned = [None, Some(281), None, Some(795)];
    let batch = c.analyze_batch(&refs, 5, &pinned, CamMethod::Cam).unwrap();
    for ((p, pin), together) in prepared.iter().zip(pinned).zip(&batch) {
        let alone = c.analyze(p, 5, pin).unwrap();
        assert_eq!(
            alone
                .top
                .iter()
                .map(|t| (t.index, t.rank))
                .collect::<Vec<_>>(),
            together
                .top
                .iter()
                .map(|t| (t.index, t.rank))
                .collect::<Vec<_>>()
        );
        for (a, b) in alone.top.iter().zip(&together.top) {
            assert!((a.prob - b.prob).abs() <= 1e-5);
        }
        for (a, b) in alone.cams.iter().zip(&together.cams) {
            let scale = a.values.iter().map(|v| v.abs()).fold(0.0, f32::max);
            assert!(max_abs_diff(&a.values, &b.values) <= CAM_REL_TOL * scale);
        }
    }
}

/// bf16 (`--precision bf16`) against the f32 reference on every golden input: the top-1
/// class unchanged, the top-5 the same classes but for near-ties, logits and the top-1 CAM
/// close. It runs in
/// the emulated kernel on every CPU (the same bfloat16 values and f32 sums as `vdpbf16ps`),
/// and in the native one too where the CPU has AVX512_BF16. `--nocapture` prints the table
/// docs/performance.md quotes.
#[test]
fn bf16_keeps_every_reference_top1_and_the_top5_but_near_ties() {
    use camview::model::kernels::packed_gemm::{Bf16Kernel, Format, bf16_kernel_available};
    let mut kernels = vec![Bf16Kernel::Emulated];
    if bf16_kernel_available() {
        kernels.push(Bf16Kernel::Native);
    } else {
        eprintln!("no AVX512_BF16 on this CPU: the native bf16 kernel is not run here");
    }
    for kernel in kernels {
        let format = Format::Bf16(kernel);
        let device = candle_core::Device::Cpu;
        let bf16 = camview::model::Classifier::load_as(weights_path(), None, device, format)
            .expect("load genuine weights in bf16");
        let model = bf16.model();
        eprintln!("{kernel:?}: input, largest logit change, top-1, top-5 overlap, CAM correlation");
        for name in PHOTOS {
            for mode in MODES {
                let stem = format!("{name}.{mode}");
                let out = model.forward(&golden_input(&stem)).unwrap();
                let logits = out.logits.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
                let (_, want) = read_npy(&golden(&format!("{stem}.logits.npy")));
                let diff = max_abs_diff(&logits, &want);
                let (top5, want5) = (top_classes(&logits, 5), top_classes(&want, 5));
                let overlap = top5.iter().filter(|c| want5.contains(c)).count();
                let cam = model.cams(&out.features, &want5[..1]).unwrap();
                let cam = cam.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let (shape, want_cams) = read_npy(&golden(&format!("{stem}.cam.npy")));
                let want_cam = &want_cams[..shape[1..].iter().product::<usize>()];
                let correlation = pearson(&cam, want_cam);
                eprintln!(
                    "  {stem:<18} {diff:.4} {:>5} {overlap}/5 {correlation:.5}",
                    top5[0] == want5[0]
                );
                assert_eq!(top5[0], want5[0], "{kernel:?} {stem}: top-1 changed");
                // A class may trade places with the reference's 5th only where their
                // reference logits lie closer than the logits moved: each moved by at most
                // `diff`, so two classes swap only within 2·diff (astronaut.full's 5th and
                // 6th are 0.0097 apart).
                let fifth = want[want5[4] as usize];
                for &class in top5.iter().filter(|c| !want5.contains(c)) {
                    let gap = fifth - want[class as usize];
                    assert!(
                        gap <= 2.0 * diff,
                        "{kernel:?} {stem}: class {class}, {gap} below the reference's 5th, entered the top-5"
                    );
                }
                assert!(
                    diff <= BF16_LOGIT_TOL,
                    "{kernel:?} {stem}: logits moved by {diff}"
                );
                assert!(
                    correlation >= 0.99,
                    "{kernel:?} {stem}: CAM correlation {correlation}"
                );
            }
        }
    }
}

/// The largest logit change bf16 may make: about twice the largest seen (0.15 with f32
/// activations between layers, 0.19 with bfloat16 ones; docs/performance.md → bf16).
const BF16_LOGIT_TOL: f32 = 0.3;

fn top_classes(logits: &[f32], k: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
    order.truncate(k);
    order
}
