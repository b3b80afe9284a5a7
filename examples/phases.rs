use camview::model::{Classifier, ResizeMode};
use std::time::Instant;
fn main() {
    let c = Classifier::load(
        std::path::Path::new("models/resnet50.safetensors"),
        None,
        candle_core::Device::Cpu,
    )
    .unwrap();
    let paths = [
        "images/chelsea.png",
        "images/coffee.png",
        "images/rocket.jpg",
        "images/astronaut.png",
    ];
    let (mut dec, mut prep, mut fwd, mut rec, mut rec_t) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let n = 12;
    for _ in 0..n {
        for p in paths {
            let t = Instant::now();
            let img = camview::model::preprocess::load_rgb(std::path::Path::new(p)).unwrap();
            dec += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let pr = camview::model::preprocess::prepare(
                &img,
                ResizeMode::Squash,
                &candle_core::Device::Cpu,
            )
            .unwrap();
            prep += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let a = c.analyze(&pr, 5, Some(285)).unwrap();
            fwd += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let _r = camview::analysis::record(a.clone(), img.dimensions(), None);
            rec += t.elapsed().as_secs_f64();
            let t = Instant::now();
            let _r = camview::analysis::record(a, img.dimensions(), Some(285));
            rec_t += t.elapsed().as_secs_f64();
        }
    }
    let k = (n * 4) as f64 / 1000.0;
    println!(
        "per image ms: decode {:.2} prepare {:.2} forward+cams {:.2} record {:.2} record+truth {:.2}",
        dec / k,
        prep / k,
        fwd / k,
        rec / k,
        rec_t / k
    );
}
