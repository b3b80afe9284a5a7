//! Models of one's own: tiny ResNet-family checkpoints saved by torch, timm and transformers
//! themselves, with PyTorch's own logits and features on them
//! (`tests/fixtures/models/make_models.py`); the real constructors' shapes; Pillow's bicubic
//! resize; timm's and transformers' transforms of a photo; and the one-line errors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use camview::model::architecture::{Architecture, Block, Shapes, torchvision_name};
use camview::model::classes::{ClassSource, Classes};
use camview::model::model_dir::{self, Origin, PreprocessingSource};
use camview::model::preprocess::{
    Interpolation, load_rgb, network_pixels_for, normalise_with, resize,
};
use camview::model::resnet::ResNet;
use camview::model::{Arch, Classifier, ResizeMode, chain};
use candle_core::{Device, Tensor};

const LOGIT_TOL: f32 = 1e-4;
const CAM_REL_TOL: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    crate::common::root()
        .join("tests/fixtures/models")
        .join(name)
}

/// PyTorch's inputs and outputs, by name (`basic.square.logits`, `input.odd`, …).
fn outputs() -> &'static HashMap<String, Tensor> {
    static OUTPUTS: OnceLock<HashMap<String, Tensor>> = OnceLock::new();
    OUTPUTS.get_or_init(|| {
        candle_core::safetensors::load(fixture("outputs.safetensors"), &Device::Cpu).unwrap()
    })
}

fn output(name: &str) -> &'static Tensor {
    outputs()
        .get(name)
        .unwrap_or_else(|| panic!("{name} is not in outputs.safetensors"))
}

fn cases() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(fixture("cases.json")).unwrap();
    let mut cases: serde_json::Map<_, _> = serde_json::from_str(&text).unwrap();
    cases.remove("versions");
    cases
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn max_abs(t: &Tensor) -> f32 {
    values(t).iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn every_family_matches_pytorch_on_both_paths() {
    let cases = cases();
    assert!(
        cases.len() >= 8,
        "basic, bottleneck, grouped, wide, timm d, transformers"
    );
    for (name, case) in &cases {
        let (description, weights) =
            model_dir::open(&fixture(case["path"].as_str().unwrap()), None)
                .unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        let arch = &description.architecture;
        let block = match case["block"].as_str().unwrap() {
            "basic" => Block::Basic,
            _ => Block::Bottleneck,
        };
        assert_eq!(arch.block, block, "{name}");
        let depths: Vec<usize> = serde_json::from_value(case["depths"].clone()).unwrap();
        assert_eq!(arch.depths, depths, "{name}");
        assert_eq!(
            arch.classes as u64,
            case["classes"].as_u64().unwrap(),
            "{name}"
        );
        if let Some(groups) = case["groups"].as_u64() {
            assert_eq!(arch.groups as u64, groups, "{name}");
        }
        if let Some(features) = case["features"].as_u64() {
            assert_eq!(arch.feature_channels() as u64, features, "{name}");
        }
        let model = ResNet::with_both_paths(&weights, arch).unwrap();
        for input in ["square", "odd"] {
            let x = output(&format!("input.{input}"));
            let want_logits = output(&format!("{name}.{input}.logits"));
            let want_features = output(&format!("{name}.{input}.features"));
            let (_, _, h, w) = x.dims4().unwrap();
            let (_, _, fh, fw) = want_features.dims4().unwrap();
            assert_eq!(
                (arch.feature_side(h), arch.feature_side(w)),
                (fh, fw),
                "{name}"
            );
            let top = values(want_logits)
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0 as u32;
            let want_cam = model.cams(want_features, &[top]).unwrap();
            for (path, out) in [
                ("fast", model.forward_fast(x).unwrap()),
                ("generic", model.forward_generic(x).unwrap()),
            ] {
                let d = max_abs_diff(&out.logits, want_logits);
                eprintln!("{name}.{input} {path}: logits within {d:.2e}");
                assert!(d <= LOGIT_TOL, "{name}.{input} {path}: logits off by {d}");
                let d = max_abs_diff(&out.features, want_features) / max_abs(want_features);
                assert!(
                    d <= CAM_REL_TOL,
                    "{name}.{input} {path}: features off by {d}"
                );
                let cam = model.cams(&out.features, &[top]).unwrap();
                let d = max_abs_diff(&cam, &want_cam) / max_abs(&want_cam);
                assert!(d <= CAM_REL_TOL, "{name}.{input} {path}: CAM off by {d}");
            }
        }
    }
}

/// Every family in bfloat16 (weights and the activations between layers; the emulated
/// kernel, and the native one where the CPU has AVX512_BF16) against PyTorch's f32 outputs:
/// grouped, basic and wide blocks, timm's deep stem and average-pool shortcut, odd sizes.
/// bfloat16 keeps 8 bits of each value, so the logits and features may move by a few per
/// cent of their largest (at most 1.6 % here), not more.
#[test]
fn every_family_runs_in_bf16_close_to_pytorch() {
    use camview::model::kernels::packed_gemm::{Bf16Kernel, Format, bf16_kernel_available};
    const BF16_REL_TOL: f32 = 0.03;
    let mut kernels = vec![Bf16Kernel::Emulated];
    if bf16_kernel_available() {
        kernels.push(Bf16Kernel::Native);
    }
    for (name, case) in &cases() {
        let (description, weights) =
            model_dir::open(&fixture(case["path"].as_str().unwrap()), None)
                .unwrap_or_else(|e| panic!("{name}: {}", chain(&e)));
        for &kernel in &kernels {
            let arch = &description.architecture;
            let model =
                ResNet::from_architecture(&weights, arch, &Device::Cpu, Format::Bf16(kernel))
                    .unwrap();
            for input in ["square", "odd"] {
                let x = output(&format!("input.{input}"));
                let want_logits = output(&format!("{name}.{input}.logits"));
                let want_features = output(&format!("{name}.{input}.features"));
                let out = model.forward(x).unwrap();
                let d = max_abs_diff(&out.logits, want_logits) / max_abs(want_logits);
                eprintln!("{name}.{input} {kernel:?}: logits within {d:.3} of their largest");
                assert!(
                    d <= BF16_REL_TOL,
                    "{name}.{input} {kernel:?}: logits off by {d}"
                );
                let d = max_abs_diff(&out.features, want_features) / max_abs(want_features);
                assert!(
                    d <= BF16_REL_TOL,
                    "{name}.{input} {kernel:?}: features off by {d}"
                );
            }
        }
    }
}

#[test]
fn model_folders_say_their_classes_and_preprocessing() {
    let (timm, _) = model_dir::open(&fixture("timm_resnetd"), None).unwrap();
    assert_eq!(timm.origin, Origin::Timm);
    assert_eq!(timm.config_name.as_deref(), Some("resnet50d"));
    assert_eq!(timm.architecture.name(), "ResNet-14-D");
    assert_eq!(timm.classes.names(), ["scratch", "dent", "clean"]);
    assert!(matches!(timm.classes.source(), ClassSource::Config(_)));
    let pre = &timm.preprocessing;
    assert_eq!(pre.mean, [0.5, 0.4, 0.3]);
    assert_eq!(pre.std, [0.2, 0.25, 0.3]);
    assert_eq!(pre.interpolation, Interpolation::Bicubic);
    assert_eq!((pre.input_size, pre.crop_pct), (64, 0.9));
    assert_eq!(pre.center_resize(), 71, "int(64 / 0.9)");
    assert!(matches!(
        timm.preprocessing_source,
        PreprocessingSource::Config(_)
    ));

    let (hf, weights) = model_dir::open(&fixture("hf_bottleneck"), None).unwrap();
    assert_eq!(hf.origin, Origin::Transformers);
    assert_eq!(
        weights.naming,
        camview::model::weights::Naming::Transformers
    );
    assert_eq!(hf.architecture.layout, Arch::V1, "downsample_in_bottleneck");
    assert_eq!(
        hf.architecture.strides,
        [2, 2, 2, 2],
        "downsample_in_first_stage"
    );
    assert_eq!(hf.classes.label(4), "organic");
    assert_eq!(hf.preprocessing.mean, [0.45, 0.45, 0.5]);
    assert_eq!(hf.preprocessing.interpolation, Interpolation::Bicubic);
    assert_eq!(hf.preprocessing.input_size, 56);
    assert_eq!(hf.preprocessing.center_resize(), 70, "int(56 / 0.8)");

    // The weights file inside a folder is read with its folder's config.
    let (inside, _) = model_dir::open(&fixture("timm_resnetd/model.safetensors"), None).unwrap();
    assert_eq!(inside.classes.label(1), "dent");
    // A bare checkpoint: numbered classes and ImageNet's preprocessing.
    let (bare, _) = model_dir::open(&fixture("basic.pth"), None).unwrap();
    assert_eq!(bare.origin, Origin::File);
    assert_eq!(bare.classes.label(3), "class 3");
    assert_eq!(bare.preprocessing, camview::model::Preprocessing::default());
}

/// The photo → tensor step and the prediction against timm's own `create_transform` and
/// transformers' image processor, in `center` mode.
#[test]
fn a_photo_is_prepared_as_timm_and_transformers_prepare_it() {
    let photo = load_rgb(&crate::common::photo("chelsea")).unwrap();
    for name in ["timm_resnetd", "hf_basic", "hf_bottleneck"] {
        let classifier = Classifier::load(&fixture(name), None, Device::Cpu).unwrap();
        let pre = &classifier.description().preprocessing;
        let (pixels, _) = network_pixels_for(&photo, ResizeMode::Center, pre);
        let tensor = normalise_with(&pixels, pre.mean, pre.std, &Device::Cpu).unwrap();
        let want = output(&format!("{name}.photo.input"));
        assert_eq!(tensor.dims(), want.dims(), "{name}");
        // The same bytes: what is left is the library's float rounding of (x/255 − mean)/std.
        let d = max_abs_diff(&tensor, want);
        assert!(d < 1e-5, "{name}: input differs by {d}");

        let prepared = classifier.prepare(&photo, ResizeMode::Center).unwrap();
        let analysis = classifier.analyze(&prepared, 3, None).unwrap();
        let want = candle_nn::ops::softmax(output(&format!("{name}.photo.logits")), 1).unwrap();
        let want = values(&want);
        let best = (0..want.len())
            .max_by(|&a, &b| want[a].total_cmp(&want[b]))
            .unwrap();
        assert_eq!(analysis.top[0].index, best, "{name}: top-1");
        assert_eq!(analysis.top[0].label, classifier.classes().label(best));
        for p in &analysis.top {
            let d = (p.prob - want[p.index]).abs();
            assert!(d <= 0.01, "{name}: {} off by {d}", p.label);
        }
    }
}

/// From 384 px up, transformers' ConvNextImageProcessor resizes the photo to the square
/// without a crop (below it, it crops): camview's `center` mode does the same for such a folder.
#[test]
fn a_transformers_processor_from_384_pixels_squashes_without_a_crop() {
    let folder = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("hf_basic/config.json", "config.json"),
        ("hf_basic/model.safetensors", "model.safetensors"),
        (
            "hf_basic_384/preprocessor_config.json",
            "preprocessor_config.json",
        ),
    ] {
        std::fs::copy(fixture(from), folder.path().join(to)).unwrap();
    }
    let want =
        candle_core::safetensors::load(fixture("hf_basic_384/outputs.safetensors"), &Device::Cpu)
            .unwrap();
    let classifier = Classifier::load(folder.path(), None, Device::Cpu).unwrap();
    let pre = &classifier.description().preprocessing;
    assert!(pre.center_squashes, "{pre:?}");
    assert!(
        pre.summary().contains("without a crop"),
        "{}",
        pre.summary()
    );

    let photo = load_rgb(&crate::common::photo("chelsea")).unwrap();
    let (pixels, region) = network_pixels_for(&photo, ResizeMode::Center, pre);
    assert_eq!(pixels.dimensions(), (384, 384));
    let (w, h) = photo.dimensions();
    assert_eq!(
        (region.x0, region.y0, region.x1, region.y1),
        (0.0, 0.0, w as f32, h as f32),
        "the whole photo, not a crop"
    );
    let tensor = normalise_with(&pixels, pre.mean, pre.std, &Device::Cpu).unwrap();
    // Every 8th pixel of every 8th row, as the fixture keeps them.
    let got: Vec<f32> = tensor
        .squeeze(0)
        .unwrap()
        .to_vec3::<f32>()
        .unwrap()
        .iter()
        .flat_map(|plane| {
            plane
                .iter()
                .step_by(8)
                .flat_map(|row| row.iter().step_by(8).copied())
        })
        .collect();
    let expected = values(&want["input_every_8th"]);
    assert_eq!(got.len(), expected.len());
    let d = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(d < 1e-5, "input differs from the processor's by {d}");

    let prepared = classifier.prepare(&photo, ResizeMode::Center).unwrap();
    assert_eq!(prepared.input, (384, 384));
    let analysis = classifier.analyze(&prepared, 3, None).unwrap();
    let probs = values(&candle_nn::ops::softmax(&want["logits"], 1).unwrap());
    for p in &analysis.top {
        let d = (p.prob - probs[p.index]).abs();
        assert!(d <= 1e-4, "{} off by {d}", p.label);
    }
}

#[test]
fn bicubic_resizing_is_pillows_byte_for_byte() {
    let source = image::open(fixture("bicubic.source.png"))
        .unwrap()
        .to_rgb8();
    for (w, h) in [(37, 23), (97, 61), (80, 45)] {
        let want = image::open(fixture(&format!("bicubic.{w}x{h}.png")))
            .unwrap()
            .to_rgb8();
        let got = resize(&source, w, h, Interpolation::Bicubic);
        let differ = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "{w}x{h}: {differ} bytes differ from Pillow's");
    }
}

/// The shapes of the real constructors (torchvision, timm, transformers; no weights).
fn real_shapes() -> serde_json::Map<String, serde_json::Value> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(fixture("shapes.json.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_real_constructors_are_recognised_from_their_shapes() {
    let want = [
        ("torchvision.resnet18", "ResNet-18", 512, 1),
        ("torchvision.resnet34", "ResNet-34", 512, 1),
        ("torchvision.resnet50", "ResNet-50", 2048, 1),
        ("torchvision.resnet101", "ResNet-101", 2048, 1),
        ("torchvision.resnet152", "ResNet-152", 2048, 1),
        ("torchvision.resnext50_32x4d", "ResNeXt-50 32x4d", 2048, 32),
        (
            "torchvision.resnext101_32x8d",
            "ResNeXt-101 32x8d",
            2048,
            32,
        ),
        (
            "torchvision.resnext101_64x4d",
            "ResNeXt-101 64x4d",
            2048,
            64,
        ),
        ("torchvision.wide_resnet50_2", "Wide ResNet-50-2", 2048, 1),
        ("torchvision.wide_resnet101_2", "Wide ResNet-101-2", 2048, 1),
        ("timm.resnet50d", "ResNet-50-D", 2048, 1),
        ("timm.resnet26d", "ResNet-26-D", 2048, 1),
        ("timm.resnet18d", "ResNet-18-D", 512, 1),
        ("transformers.resnet-50", "ResNet-50", 2048, 1),
    ];
    let all = real_shapes();
    assert_eq!(all.len(), want.len());
    for (key, name, features, groups) in want {
        let shapes: Shapes = all[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().unwrap();
                let name = torchvision_name(name).unwrap_or_else(|| name.to_string());
                (name, serde_json::from_value(pair[1].clone()).unwrap())
            })
            .collect();
        let arch = Architecture::recognise(&shapes, Arch::V1_5, None)
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(arch.name(), name, "{key}");
        assert_eq!(arch.feature_channels(), features, "{key}");
        assert_eq!(arch.groups, groups, "{key}");
        assert_eq!(arch.classes, 1000, "{key}");
        assert_eq!(arch.feature_side(224), 7, "{key}");
    }
}

/// The error `Classifier::load` gives for `path`, on one line as the CLI prints it.
fn load_error(path: &Path) -> String {
    let e = Classifier::load(path, None, Device::Cpu).unwrap_err();
    let line = chain(&e);
    assert_eq!(line.lines().count(), 1, "{line}");
    line
}

#[test]
fn other_checkpoints_and_folders_get_one_line() {
    let vit = load_error(&fixture("vit.safetensors"));
    assert!(
        vit.contains(
            "vit.safetensors is not a usable ResNet: it holds a Vision Transformer (ViT) (tensor `"
        ),
        "{vit}"
    );
    assert!(
        vit.contains("camview reads ResNet, ResNeXt and Wide ResNet checkpoints"),
        "{vit}"
    );
    let convnext = load_error(&fixture("timm_convnext"));
    assert!(
        convnext.contains("it holds timm's `convnext_atto`"),
        "{convnext}"
    );
    let se = load_error(&fixture("seresnet.safetensors"));
    assert!(
        se.contains("a ResNet with modules camview does not run (`layer1.0.se.fc1.bias`"),
        "{se}"
    );

    let empty = tempfile::tempdir().unwrap();
    let none = load_error(empty.path());
    assert!(
        none.contains("is a folder without model.safetensors or pytorch_model.bin"),
        "{none}"
    );
    let e = camview::model::weights::Weights::load(empty.path()).unwrap_err();
    assert!(chain(&e).contains("it is a folder, not a file"), "{e}");
    std::fs::write(empty.path().join("config.json"), "{\"x\": 1}").unwrap();
    std::fs::copy(fixture("basic.pth"), empty.path().join("pytorch_model.bin")).unwrap();
    let config = load_error(empty.path());
    assert!(config.contains("config.json: neither timm's"), "{config}");
    std::fs::write(
        empty.path().join("config.json"),
        "{\"model_type\": \"vit\"}",
    )
    .unwrap();
    let vit_folder = load_error(empty.path());
    assert!(
        vit_folder.contains("it holds a transformers `vit` model"),
        "{vit_folder}"
    );
}

#[test]
fn the_command_line_names_a_foreign_checkpoint_in_one_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["classify", "--weights"])
        .arg(fixture("vit.safetensors"))
        .arg(crate::common::photo("chelsea"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("it holds a Vision Transformer (ViT)"), "{err}");
}

#[test]
fn predictions_are_named_by_the_models_own_classes() {
    let photo = load_rgb(&crate::common::photo("coffee")).unwrap();
    let mut classifier = Classifier::load(&fixture("resnext.pt"), None, Device::Cpu).unwrap();
    let prepared = classifier.prepare(&photo, ResizeMode::Squash).unwrap();
    let top = classifier.analyze(&prepared, 6, None).unwrap().top;
    assert_eq!(top.len(), 6);
    assert!(
        top.iter().all(|p| p.label == format!("class {}", p.index)),
        "{top:?}"
    );

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "glass\npaper\nmetal\n").unwrap();
    let short = Classes::from_file(file.path(), 3).unwrap();
    let e = classifier.set_classes(short).unwrap_err().to_string();
    assert!(
        e.contains("names 3 classes, but the model's head has 6"),
        "{e}"
    );
    std::fs::write(file.path(), "a\nb\nc\nd\ne\nf\n").unwrap();
    classifier
        .set_classes(Classes::from_file(file.path(), 6).unwrap())
        .unwrap();
    let top = classifier.analyze(&prepared, 6, None).unwrap().top;
    assert!(
        top.iter()
            .all(|p| p.label == ["a", "b", "c", "d", "e", "f"][p.index])
    );
}

fn camview(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(args)
        .env_remove("CAMVIEW_MODEL")
        .env_remove("CAMVIEW_WEIGHTS")
        .output()
        .unwrap()
}

#[test]
fn model_info_says_what_was_found_and_where_from() {
    let folder = fixture("timm_resnetd");
    let out = camview(&["model", "info", folder.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "(timm folder, `resnet50d`)",
        "network        ResNet-14-D: bottleneck blocks 1-1-1-1, widths 2-4-6-8, 32 features, 3 classes",
        "classes        3: scratch, dent, clean (",
        "preprocessing  mean [0.5, 0.4, 0.3], std [0.2, 0.25, 0.3], bicubic, input 64 px, center crop 0.9 (shorter side to 71) (",
    ] {
        assert!(text.contains(line), "`{line}` in:\n{text}");
    }
    let hf = fixture("hf_bottleneck");
    let out = camview(&["model", "info", hf.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("ResNet-14 (v1): bottleneck"), "{text}");
    assert!(text.contains("(transformers names)"), "{text}");
    assert!(text.contains("preprocessor_config.json)"), "{text}");
}

#[test]
fn the_model_options_check_their_values() {
    let folder = fixture("timm_resnetd");
    let photo = crate::common::photo("chelsea");
    let dir = tempfile::tempdir().unwrap();
    let two = dir.path().join("two.txt");
    std::fs::write(&two, "a\nb\n").unwrap();
    let out = camview(&[
        "classify",
        "--model",
        folder.to_str().unwrap(),
        "--classes",
        two.to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("two.txt names 2 classes, but the model's head has 3"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let three = dir.path().join("three.txt");
    std::fs::write(&three, "[\"x\", \"y\", \"z\"]").unwrap();
    let out = camview(&[
        "classify",
        "--json",
        "--weights",
        folder.to_str().unwrap(),
        "--classes",
        three.to_str().unwrap(),
        photo.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = line["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels.len(), 3);
    assert!(
        labels.iter().all(|l| ["x", "y", "z"].contains(l)),
        "{labels:?}"
    );

    for (flag, value, says) in [
        ("--mean", "1,2", "has 2 numbers, not three"),
        ("--std", "a,b,c", "is not three numbers"),
        ("--std", "0.2,0,0.2", "a standard deviation must be above 0"),
    ] {
        let out = camview(&[
            "classify",
            "--model",
            folder.to_str().unwrap(),
            flag,
            value,
            photo.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn a_shortcut_convolution_where_none_belongs_is_an_error() {
    let (description, weights) = model_dir::open(&fixture("basic.pth"), None).unwrap();
    let mut tensors: HashMap<String, Tensor> = weights
        .names()
        .into_iter()
        .map(|n| (n.to_string(), weights.get(n, &[]).unwrap()))
        .collect();
    // Stage 1's second block keeps its shape: it has no shortcut convolution to load.
    let extra = Tensor::zeros((4, 4, 1, 1), candle_core::DType::F32, &Device::Cpu).unwrap();
    tensors.insert("layer1.1.downsample.0.weight".into(), extra);
    let odd = camview::model::weights::Weights::from_tensors(tensors, None);
    let e = ResNet::with_both_paths(&odd, &description.architecture).unwrap_err();
    assert!(
        e.to_string().contains("`layer1.1.downsample.0.weight` has shape [4, 4, 1, 1], expected no shortcut convolution"),
        "{e}"
    );
}

/// Full-depth networks of the real constructors' shapes, with random weights and batch-norm
/// statistics: the fast path against candle's conv2d (ResNeXt-50's 32 groups of 4 to 32
/// channels, timm's ResNet-50-D, transformers' ResNet-50, ResNet-18).
#[test]
fn full_depth_networks_run_alike_on_both_paths() {
    let all = real_shapes();
    // A fixed pseudo-random sequence (xorshift), so that a failure repeats.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    for key in [
        "torchvision.resnext50_32x4d",
        "timm.resnet50d",
        "transformers.resnet-50",
        "torchvision.resnet18",
    ] {
        let tensors: HashMap<String, Tensor> = all[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| {
                let name = pair[0].as_str().unwrap().to_string();
                let shape: Vec<usize> = serde_json::from_value(pair[1].clone()).unwrap();
                let count: usize = shape.iter().product();
                let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
                let values: Vec<f32> = (0..count)
                    .map(|_| {
                        let u = next();
                        if name.ends_with("running_var") {
                            0.5 + u
                        } else if name.ends_with("running_mean") || name.ends_with("bias") {
                            0.2 * (u - 0.5)
                        } else if shape.len() == 1 {
                            0.5 + u
                        } else {
                            (u - 0.5) * (24.0 / fan_in as f32).sqrt()
                        }
                    })
                    .collect();
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap())
            })
            .collect();
        let weights = camview::model::weights::Weights::from_tensors(tensors, None);
        let arch = Architecture::recognise(&weights.shapes(), Arch::V1_5, None).unwrap();
        let model = ResNet::with_both_paths(&weights, &arch).unwrap();
        let x = output("input.odd");
        let fast = model.forward_fast(x).unwrap();
        let generic = model.forward_generic(x).unwrap();
        let scale = max_abs(&generic.logits);
        let d = max_abs_diff(&fast.logits, &generic.logits) / scale;
        eprintln!("{key}: logits (max {scale:.3}) agree within {d:.2e} of their maximum");
        assert!(d <= 1e-4, "{key}: logits off by {d} of {scale}");
        let d = max_abs_diff(&fast.features, &generic.features) / max_abs(&generic.features);
        assert!(d <= 1e-4, "{key}: features off by {d}");
    }
}
