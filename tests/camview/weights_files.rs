//! Weight files other than our own: a PyTorch zip checkpoint written by `torch.save`
//! (fixture made by `tests/fixtures/make_pth.py`), and the round trip of our safetensors writer.

use camview::model::Arch;
use camview::model::weights::Weights;

fn fixture(name: &str) -> std::path::PathBuf {
    crate::common::root().join("tests/fixtures").join(name)
}

fn values(w: &Weights, name: &str) -> Vec<f32> {
    w.get(name, &[])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn reads_a_torch_save_checkpoint_without_running_pickle() {
    let w = Weights::load(&fixture("tiny.pth")).unwrap();
    // DataParallel's `module.` prefix is stripped; no layout is declared in a .pth.
    assert_eq!(
        w.names(),
        [
            "bn1.num_batches_tracked",
            "bn1.running_var",
            "conv1.weight",
            "fc.weight"
        ]
    );
    assert_eq!(w.declared_arch, None);
    let conv = w.get("conv1.weight", &[2, 3, 2, 2]).unwrap();
    assert_eq!(conv.dims(), &[2, 3, 2, 2]);
    let want: Vec<f32> = (0..24).map(|i| i as f32 / 10.0).collect();
    assert_eq!(values(&w, "conv1.weight"), want);
    // f16 is widened to f32.
    assert_eq!(values(&w, "bn1.running_var"), [0.5, 2.0]);
    // A transposed (non-contiguous) tensor keeps its logical order.
    assert_eq!(w.get("fc.weight", &[]).unwrap().dims(), &[4, 3]);
    assert_eq!(
        values(&w, "fc.weight"),
        [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]
    );
    let e = w.get("conv1.weight", &[2, 3, 3, 3]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "tensor `conv1.weight` has shape [2, 3, 2, 2], expected [2, 3, 3, 3]"
    );
}

#[test]
fn saved_files_record_their_layout_and_values() {
    let w = Weights::load(&fixture("tiny.pth")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.safetensors");
    w.save(&out, Arch::V1_5, &[("source", "test")]).unwrap();
    let back = Weights::load(&out).unwrap();
    assert_eq!(back.declared_arch, Some(Arch::V1_5));
    assert_eq!(back.names(), w.names());
    for name in ["conv1.weight", "bn1.running_var", "fc.weight"] {
        assert_eq!(values(&back, name), values(&w, name), "{name}");
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}
