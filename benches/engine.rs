//! Criterion benches of the engine, one group per stage: preprocess, forward (224×224 and a
//! non-square `full` input), CAM, overlay, Score-CAM, faithfulness. Needs genuine weights at `models/resnet50.safetensors`
//! or `$CAMVIEW_WEIGHTS` (run `cargo test` once, or `camview weights fetch`).

use std::path::PathBuf;

use camview::analysis;
use camview::model::Arch;
use camview::model::cam_methods::{CamMethod, ClassHead, FeatureMap, class_map, score_cam_inputs};
use camview::model::faithfulness::{
    Input, Noise, Order, ROAD_PERCENTILES, cam_mult_image, deletion_insertion, road,
    upsample_like_opencv,
};
use camview::model::preprocess::load_rgb;
use camview::model::resnet::ResNet;
use camview::model::weights::Weights;
use camview::model::{Classifier, ResizeMode};
use camview::overlay::{self, Style};
use candle_core::{DType, Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};

fn weights() -> PathBuf {
    std::env::var_os("CAMVIEW_WEIGHTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet50.safetensors"),
        PathBuf::from,
    )
}

fn photo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("images/coffee.png")
}

fn engine(c: &mut Criterion) {
    let classifier = Classifier::load(&weights(), None, Device::Cpu).expect("genuine weights");
    let img = load_rgb(&photo()).unwrap();
    // candle's conv2d path needs its own copy of the weights on the CPU.
    let file = Weights::load(&weights()).expect("genuine weights");
    let arch = file.declared_arch.unwrap_or(Arch::V1_5);
    let reference = ResNet::load_with_both_paths(&file, arch).expect("genuine weights");

    let mut g = c.benchmark_group("preprocess");
    g.bench_function("decode coffee.png 600x400", |b| {
        b.iter(|| load_rgb(&photo()).unwrap())
    });
    for mode in [ResizeMode::Full, ResizeMode::Center] {
        g.bench_function(format!("prepare {mode:?}"), |b| {
            b.iter(|| classifier.prepare(&img, mode).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("forward");
    g.sample_size(10);
    for (h, w) in [(224, 224), (224, 336)] {
        let input = Tensor::zeros((1, 3, h, w), DType::F32, &Device::Cpu).unwrap();
        g.bench_function(format!("fast {h}x{w}"), |b| {
            b.iter(|| {
                classifier
                    .model()
                    .forward_fast(&input)
                    .unwrap()
                    .logits
                    .to_vec2::<f32>()
                    .unwrap()
            })
        });
        // The same network through candle's own conv2d: the in-run baseline.
        g.bench_function(format!("candle conv2d {h}x{w}"), |b| {
            b.iter(|| {
                reference
                    .forward_generic(&input)
                    .unwrap()
                    .logits
                    .to_vec2::<f32>()
                    .unwrap()
            })
        });
    }
    g.finish();

    let prepared = classifier.prepare(&img, ResizeMode::Full).unwrap();
    let out = classifier.model().forward(&prepared.tensor).unwrap();
    let analysis = classifier.analyze(&prepared, 5, None).unwrap();
    let mut g = c.benchmark_group("cam");
    g.bench_function("raw top-5 CAMs 7x11", |b| {
        b.iter(|| {
            classifier
                .model()
                .cams(&out.features, &[967, 968, 868, 925, 504])
                .unwrap()
        })
    });
    // The CAM family, one class's map from the same features (CAM's row above is five maps
    // through candle's matmul; here each method's own arithmetic, the copy out included).
    let (_, channels, height, width) = out.features.dims4().unwrap();
    let class = 967;
    let head_row = classifier.model().fc_weight().get(class).unwrap();
    let weights = head_row.to_vec1::<f32>().unwrap();
    let logit = out
        .logits
        .get(0)
        .unwrap()
        .get(class)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    for method in CamMethod::ALL
        .into_iter()
        .filter(|m| !m.needs_forward_passes())
    {
        g.bench_function(format!("{} map 7x11", method.name()), |b| {
            b.iter(|| {
                let values = out
                    .features
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let features = FeatureMap::new(channels, height, width, &values);
                let head = ClassHead {
                    weights: &weights,
                    logit,
                };
                class_map(method, &features, head).unwrap()
            })
        });
    }
    g.bench_function("bbox at 600x400", |b| {
        b.iter(|| overlay::bbox(&analysis, 0, img.dimensions()))
    });
    // What `eval` does per labelled image beside the forward pass: the top-1 box and the
    // true class's 100-threshold sweep.
    g.bench_function("record: top-1 box + truth sweep at 600x400", |b| {
        b.iter(|| analysis::record(analysis.clone(), img.dimensions(), Some(967)))
    });
    g.finish();

    let mut g = c.benchmark_group("overlay");
    let original = img.dimensions();
    g.bench_function("render 600x400", |b| {
        b.iter(|| overlay::render(&img, original, Some(&analysis), 0, Style::default()))
    });
    let fit = |img: &image::RgbImage| {
        overlay::scale(img, overlay::fitted_size(img.dimensions(), (300, 200)))
    };
    let small = fit(&img);
    g.bench_function("fit + render 300x200", |b| {
        b.iter(|| overlay::render(&fit(&img), original, Some(&analysis), 0, Style::default()))
    });
    g.bench_function("render 300x200 prefitted", |b| {
        b.iter(|| overlay::render(&small, original, Some(&analysis), 0, Style::default()))
    });
    g.finish();

    let values = out
        .features
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let features = FeatureMap::new(channels, height, width, &values);
    let mut g = c.benchmark_group("scorecam");
    g.sample_size(10);
    g.bench_function(
        "scorecam: 16 of 2048 channels' masked passes 224x336",
        |b| {
            b.iter(|| {
                let inputs =
                    score_cam_inputs(&prepared.tensor, &features, 0..16, &Device::Cpu).unwrap();
                classifier.model().forward(&inputs).unwrap().logits
            })
        },
    );
    g.finish();
    faithfulness(c, &classifier, &img);
}

/// Each faithfulness metric on coffee.png in `center` mode (224 × 224, RISE's setting), the
/// top-1 class's CAM, beside the analysis (forward pass and top-5 CAMs) that CAM costs.
fn faithfulness(c: &mut Criterion, classifier: &Classifier, img: &image::RgbImage) {
    let prepared = classifier.prepare(img, ResizeMode::Center).unwrap();
    let analysis = classifier.analyze(&prepared, 5, None).unwrap();
    let class = analysis.top[0].index;
    let grid = &analysis.cams[0];
    let map = upsample_like_opencv(&grid.normalised(), grid.width, grid.height, 224, 224);
    let values = prepared
        .tensor
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let input = Input {
        channels: 3,
        height: 224,
        width: 224,
        values: &values,
    };
    let mut score = |x: &Tensor| -> candle_core::Result<Vec<f32>> {
        let logits = classifier.model().forward(x)?.logits;
        candle_nn::ops::softmax(&logits, candle_core::D::Minus1)?
            .narrow(1, class, 1)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let noise = Noise {
        amount: Noise::ROAD,
        seed: 0,
    };
    let device = Device::Cpu;
    let mut g = c.benchmark_group("faithfulness");
    g.sample_size(10);
    g.bench_function("CAM: analysis (forward pass, top-5 CAMs) 224x224", |b| {
        b.iter(|| classifier.analyze(&prepared, 5, None).unwrap())
    });
    g.bench_function("confidence change, map multiplied in (2 inputs)", |b| {
        b.iter(|| cam_mult_image(input, &map, &device, &mut score).unwrap())
    });
    for order in [Order::MostRelevantFirst, Order::LeastRelevantFirst] {
        g.bench_function(
            format!("ROAD {order:?}, 4 percentiles (4 imputations, 5 inputs)"),
            |b| {
                b.iter(|| {
                    road(
                        input,
                        &map,
                        order,
                        &ROAD_PERCENTILES,
                        noise,
                        &device,
                        &mut score,
                    )
                    .unwrap()
                })
            },
        );
    }
    // 16 steps of 3136 pixels (34 inputs, 8 a pass): RISE's 224 steps take 450 inputs.
    g.bench_function("deletion and insertion, 16 steps (34 inputs)", |b| {
        b.iter(|| {
            deletion_insertion(input, &map, 3136, 8, &device, &mut score, &mut |_, _| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
