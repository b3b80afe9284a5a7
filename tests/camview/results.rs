//! The pipeline's runs and the results service over it, with the genuine model: a run stops
//! where it is told to, and the service keeps and finds results by file, weights, mode and
//! true class.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use camview::analysis::{ImageKey, Record, TOP_K};
use camview::model::classes::ClassSource;
use camview::model::preprocess::Preprocessing;
use camview::model::{Classes, Classifier, ResizeMode};
use camview::pipeline::{self, Job, Run};
use camview::results::{Results, Target};
use candle_core::Device;

use crate::common::{classifier, photo, weights_path};

/// A run told to stop before its second forward pass gives one result and ends, though its
/// decoder has more photos ready than the channel to the forward pass holds.
#[test]
fn a_run_stops_before_its_next_forward_pass() {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let jobs: Vec<Job> = (0..6)
            .map(|_| Job {
                path: photo("chelsea"),
                pinned: None,
            })
            .collect();
        let asked = AtomicUsize::new(0);
        let stop = || asked.fetch_add(1, Ordering::SeqCst) >= 1;
        let run = Run {
            batch: 1,
            stop: &stop,
            ..Run::new(classifier(), ResizeMode::Full, TOP_K)
        };
        let mut answered = Vec::new();
        let ran = pipeline::analyse_all(classifier(), &jobs, run, |i, outcome| {
            answered.push((i, outcome.is_ok()));
            ControlFlow::Continue(())
        });
        let _ = tx.send((ran.is_ok(), answered));
    });
    let (ran, answered) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the run ends instead of waiting for its decoder");
    assert!(ran);
    assert_eq!(answered, [(0, true)]);
}

/// What the service analyses it stores; a labelled image is served only by a result that
/// pins its true class, and a changed file by none.
#[test]
fn the_service_stores_what_it_analyses_and_serves_it_by_truth() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("chelsea.png");
    std::fs::copy(photo("chelsea"), &image).unwrap();
    let store = dir.path().join("results.sqlite");
    let (results, notes) = Results::open(Some(&store), classifier(), ResizeMode::Full);
    assert!(notes.is_empty(), "{notes:?}");
    let unlabelled = Target {
        key: ImageKey::of(&image),
        truth: None,
    };
    // Class 0 (tench) is far from the top 5 of a cat.
    let labelled = Target {
        truth: Some(0),
        ..unlabelled.clone()
    };
    assert!(results.stored(&unlabelled).is_none());
    let record = results.get_or_analyse(classifier(), &unlabelled).unwrap();
    assert_eq!(record.analysis.top[0].label, "Egyptian cat");
    assert_eq!(results.stored(&unlabelled).map(kept), Some(kept(record)));
    assert!(
        results.stored(&labelled).is_none(),
        "the stored result does not pin class 0"
    );
    let pinned = results.get_or_analyse(classifier(), &labelled).unwrap();
    let tench = pinned.analysis.top.iter().find(|p| p.index == 0).unwrap();
    assert!(tench.rank > TOP_K);
    assert_eq!(
        results.stored(&labelled).map(kept),
        Some(kept(pinned.clone()))
    );
    assert_eq!(
        results.stored(&unlabelled).map(kept),
        Some(kept(pinned)),
        "any result serves an image without a label"
    );
    // Another store of the same weights finds it too; a touched file is another version.
    drop(results);
    let (again, _) = Results::open(Some(&store), classifier(), ResizeMode::Full);
    assert!(again.stored(&labelled).is_some());
    assert!(
        Results::open(Some(&store), classifier(), ResizeMode::Center)
            .0
            .stored(&labelled)
            .is_none(),
        "another resize mode"
    );
    std::fs::write(&image, std::fs::read(photo("chelsea")).unwrap()).unwrap();
    let file = std::fs::File::options().append(true).open(&image).unwrap();
    file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    let touched = Target {
        key: ImageKey::of(&image),
        truth: Some(0),
    };
    assert!(again.stored(&touched).is_none());
}

/// What a stored record keeps exactly (its CAMs are kept in half precision).
fn kept(record: Record) -> impl PartialEq + std::fmt::Debug {
    (
        record.analysis.top,
        record.top1_box,
        record.truth,
        record.size,
    )
}

/// The same weights with other class names or another normalisation are another model: the
/// store keeps their results apart, and a stored result carries the model's own names.
#[test]
fn a_model_given_other_names_or_means_has_results_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("chelsea.png");
    std::fs::copy(photo("chelsea"), &image).unwrap();
    let store = dir.path().join("results.sqlite");
    let target = Target {
        key: ImageKey::of(&image),
        truth: None,
    };
    let (imagenet, _) = Results::open(Some(&store), classifier(), ResizeMode::Full);
    let first = imagenet.get_or_analyse(classifier(), &target).unwrap();
    drop(imagenet);

    let mut renamed = Classifier::load(weights_path(), None, Device::Cpu).unwrap();
    let names: Vec<String> = (0..1000).map(|i| format!("kind {i}")).collect();
    renamed
        .set_classes(Classes::new(
            names,
            None,
            ClassSource::File("kinds.txt".into()),
        ))
        .unwrap();
    let (results, _) = Results::open(Some(&store), &renamed, ResizeMode::Full);
    assert!(
        results.stored(&target).is_none(),
        "other names: another model's results"
    );
    let record = results.get_or_analyse(&renamed, &target).unwrap();
    assert_eq!(record.analysis.top[0].index, first.analysis.top[0].index);
    drop(results);
    let (again, _) = Results::open(Some(&store), &renamed, ResizeMode::Full);
    let stored = again.stored(&target).expect("stored for the renamed model");
    assert_eq!(
        stored.analysis.top[0].label,
        format!("kind {}", first.analysis.top[0].index),
        "a stored result is named by the model's classes"
    );

    // bf16 computes probabilities of its own: it neither serves nor takes f32's results.
    let format = camview::model::kernels::packed_gemm::Format::Bf16(
        camview::model::kernels::packed_gemm::Bf16Kernel::Emulated,
    );
    let bf16 = Classifier::load_as(weights_path(), None, Device::Cpu, format).unwrap();
    let (results, _) = Results::open(Some(&store), &bf16, ResizeMode::Full);
    assert!(
        results.stored(&target).is_none(),
        "bf16: f32's results are not its own"
    );
    let record = results.get_or_analyse(&bf16, &target).unwrap();
    assert_eq!(record.analysis.top[0].index, first.analysis.top[0].index);
    assert_ne!(
        record.analysis.top[0].prob, first.analysis.top[0].prob,
        "bf16's own probabilities"
    );
    drop(results);
    let (f32_again, _) = Results::open(Some(&store), classifier(), ResizeMode::Full);
    assert_eq!(
        f32_again.stored(&target).map(kept),
        Some(kept(first.clone())),
        "f32 keeps its own results"
    );

    let mut shifted = Classifier::load(weights_path(), None, Device::Cpu).unwrap();
    shifted.set_preprocessing(Preprocessing {
        mean: [0.5, 0.5, 0.5],
        ..Preprocessing::default()
    });
    let (results, _) = Results::open(Some(&store), &shifted, ResizeMode::Full);
    assert!(
        results.stored(&target).is_none(),
        "other means: another model's results"
    );
    let record = results.get_or_analyse(&shifted, &target).unwrap();
    assert_ne!(
        kept(record),
        kept(first),
        "the model's own normalisation reaches the input"
    );
}
