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
