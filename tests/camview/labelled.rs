//! A labelled dataset the tests build from the sample photos: class folders named three
//! ways, two deliberately wrong labels, an unlabelled photo, a hidden file, and VOC boxes
//! written by hand. Used by the `eval` and the browser's dataset tests.

use std::path::{Path, PathBuf};

use crate::common::photo;

/// A truth box written by hand (pixels, both ends included).
pub struct HandBox {
    pub wnid: &'static str,
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

/// The cat's head and body in chelsea.png; the cup and saucer in coffee.png.
pub const CHELSEA_BOX: HandBox = HandBox {
    wnid: "n02124075",
    x0: 100,
    y0: 20,
    x1: 360,
    y1: 299,
};
pub const COFFEE_BOX: HandBox = HandBox {
    wnid: "n07920052",
    x0: 80,
    y0: 30,
    x1: 540,
    y1: 380,
};

pub fn voc(b: &HandBox) -> String {
    format!(
        "<annotation><object><name>{}</name><bndbox><xmin>{}</xmin><ymin>{}</ymin>\
         <xmax>{}</xmax><ymax>{}</ymax></bndbox></object></annotation>",
        b.wnid, b.x0, b.y0, b.x1, b.y1
    )
}

/// The dataset, in a temporary folder: `data/` and `boxes/`.
pub struct Dataset {
    pub dir: tempfile::TempDir,
}

impl Dataset {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

/// (path below the root, photo, the true class's index as ImageNet numbers it).
pub const LAYOUT: [(&str, &str, Option<u64>); 6] = [
    ("n02124075/chelsea.png", "chelsea", Some(285)), // WordNet ID, right
    ("espresso/coffee.png", "coffee", Some(967)),    // label name, right
    ("812/rocket.jpg", "rocket", Some(812)), // index (space shuttle): wrong, top-1 drilling platform
    ("Ski/astronaut.png", "astronaut", Some(795)), // another case: wrong, top-1 bobsled
    ("n02123045/chelsea-2.png", "chelsea", Some(281)), // tabby: wrong, top-1 Egyptian cat
    ("loose.png", "coffee", None),           // no class folder: unlabelled
];

pub fn build() -> Dataset {
    let dir = tempfile::tempdir().unwrap();
    build_at(dir.path());
    Dataset { dir }
}

/// The dataset in `dir` (which exists): `data/` and `boxes/`.
pub fn build_at(dir: &Path) {
    let data = dir.join("data");
    for (rel, name, _) in LAYOUT {
        let to = data.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(photo(name), &to).unwrap();
    }
    std::fs::write(data.join("espresso/._coffee.png"), b"resource fork").unwrap();
    let boxes = dir.join("boxes");
    std::fs::create_dir(&boxes).unwrap();
    std::fs::write(boxes.join("chelsea.xml"), voc(&CHELSEA_BOX)).unwrap();
    std::fs::write(boxes.join("coffee.xml"), voc(&COFFEE_BOX)).unwrap();
}

/// The espresso of coffee.png filed under `n01440764` (tench), a class the model ranks far
/// below the top 5: the case a reviewer looks for. Written into `dir` (which exists).
pub const MISFILED: &str = "n01440764/coffee.png";

pub fn build_misfiled_at(dir: &Path) {
    let to = dir.join(MISFILED);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(photo("coffee"), to).unwrap();
}

/// Tench's rank (1 = top-1) for coffee.png in the golden reference's logits (the `full`
/// mode, the browser's): one more than the number of classes scored above it.
pub fn tench_rank_for_coffee() -> usize {
    let (_, logits) = crate::common::read_npy(&crate::common::golden("coffee.full.logits.npy"));
    let tench = logits[0];
    // camview computes in float32 and the reference in float64 (they differ by up to 1e-5):
    // a rival within 1e-3 of tench would make the rank depend on that noise.
    let nearest = logits[1..]
        .iter()
        .map(|&l| (l - tench).abs())
        .fold(f32::INFINITY, f32::min);
    assert!(nearest > 1e-3, "a class within {nearest} of tench");
    1 + logits.iter().filter(|&&l| l > tench).count()
}
