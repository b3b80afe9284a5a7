//! Bad dataset input: boxes that are no box of their image, box files that cannot be used,
//! labels files that name no image here or one image twice, and ImageNet's own way of
//! writing labels. Each is named to the user, and nothing else is lost: the library's reading
//! (`Dataset::load`, shared by `eval` and the browser) and `camview eval` itself.

use std::path::Path;
use std::process::{Command, Output};

use camview::dataset::{Dataset, TruthBox};
use camview::model::Classes;
use serde_json::Value;

use crate::common::{photo, weights_path};
use crate::labelled::{CHELSEA_BOX, build, voc};

/// A VOC file with one object of class `wnid` per box, coordinates written as given.
fn voc_of(wnid: &str, boxes: &[[&str; 4]]) -> String {
    let objects: String = boxes
        .iter()
        .map(|[x0, y0, x1, y1]| {
            format!(
                "<object><name>{wnid}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>\
                 <xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        })
        .collect();
    format!("<annotation>{objects}</annotation>")
}

fn eval(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camview"))
        .arg("eval")
        .args(args)
        .env("CAMVIEW_WEIGHTS", weights_path())
        .output()
        .unwrap()
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// chelsea.png is 451 × 300: a good box, one that overhangs the right edge, and one each
/// inverted, not a number and wholly outside, which were used before (`NaN` as 0).
#[test]
fn boxes_that_are_no_box_of_their_image_are_named_and_not_used() {
    let d = build();
    let b = &CHELSEA_BOX;
    let good = [b.x0, b.y0, b.x1, b.y1].map(|v| v.to_string());
    let good = [&*good[0], &*good[1], &*good[2], &*good[3]];
    std::fs::write(
        d.dir.path().join("boxes/chelsea.xml"),
        voc_of(
            b.wnid,
            &[
                good,
                ["400", "10", "460", "100"],
                ["360", "20", "100", "299"],
                ["NaN", "20", "360", "299"],
                ["500", "20", "600", "299"],
            ],
        ),
    )
    .unwrap();
    let dataset = Dataset::load(
        &d.root(),
        None,
        Some(&d.dir.path().join("boxes")),
        &Classes::imagenet(),
    )
    .unwrap();
    let chelsea = dataset
        .items
        .iter()
        .find(|i| i.relative == "n02124075/chelsea.png")
        .unwrap();
    let boxes: Vec<_> = chelsea.truth.as_ref().unwrap().boxes.clone();
    let box_of = |x0, y0, x1, y1| TruthBox {
        class: 285,
        x0,
        y0,
        x1,
        y1,
    };
    // The overhanging box clipped to the last column, 450.
    assert_eq!(
        boxes,
        [box_of(b.x0, b.y0, b.x1, b.y1), box_of(400, 10, 450, 100)]
    );
    let warnings = &dataset.warnings;
    assert_eq!(warnings.len(), 3, "{warnings:#?}");
    for (warning, why) in warnings.iter().zip([
        "(360, 20)–(100, 299) not used: inverted",
        "(NaN, 20)–(360, 299) not used: a coordinate is not a number",
        "(500, 20)–(600, 299) not used: outside the 451×300 image",
    ]) {
        assert!(
            warning.contains("boxes/chelsea.xml: box n02124075"),
            "{warning}"
        );
        assert!(warning.contains(why), "{warning}");
    }
}

/// Among four box files, one is not UTF-8 and one carries a DTD: each is named, its image
/// counted as unboxed, and `eval` scores the rest (it stopped with exit 2 before).
#[test]
fn a_box_file_that_cannot_be_used_is_named_and_the_run_goes_on() {
    let d = build();
    let boxes = d.dir.path().join("boxes");
    // Both photos' files were written by `build`; the astronaut and rocket get theirs.
    std::fs::write(
        boxes.join("astronaut.xml"),
        b"<annotation>\xff\xfe</annotation>",
    )
    .unwrap();
    std::fs::write(
        boxes.join("coffee.xml"),
        format!(
            "<!DOCTYPE annotation [<!ENTITY cup \"cup\">]>{}",
            voc(&crate::labelled::COFFEE_BOX)
        ),
    )
    .unwrap();
    let out = eval(&[
        "--json",
        "--no-store",
        "--boxes",
        arg(&boxes),
        arg(&d.root()),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for (file, image) in [
        ("astronaut.xml", "Ski/astronaut.png"),
        ("coffee.xml", "espresso/coffee.png"),
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("{file} not named:\n{stderr}"));
        assert!(
            line.starts_with("camview: ") && line.ends_with(&format!("{image} counted as unboxed")),
            "{line}"
        );
    }
    assert!(
        stderr.contains("DTD"),
        "why coffee.xml is refused:\n{stderr}"
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["images"], 6);
    assert_eq!(summary["boxed"], 1, "chelsea alone: {summary}");
    assert_eq!(
        summary["unlabelled"], 1,
        "the labels are all there: {summary}"
    );
}

/// A labels file written for other paths: every image unlabelled, and a note saying so and
/// how rows are matched.
#[test]
fn a_labels_file_that_names_no_image_here_says_so() {
    let d = build();
    let labels = d.dir.path().join("labels.csv");
    std::fs::write(
        &labels,
        "path,label\nval/cat-1.png,Egyptian cat\nval/cup-7.jpg,espresso\n",
    )
    .unwrap();
    let dataset = Dataset::load(&d.root(), Some(&labels), None, &Classes::imagenet()).unwrap();
    assert!(dataset.items.iter().all(|i| i.truth.is_none()));
    let [note] = dataset.warnings.as_slice() else {
        panic!("{:#?}", dataset.warnings);
    };
    assert!(
        note.starts_with(&format!(
            "{}: 0 of its 2 rows name an image under {}",
            labels.display(),
            d.root().display()
        )),
        "{note}"
    );
    assert!(note.contains("else to its file name"), "{note}");
    // One row that names an image: no note.
    std::fs::write(
        &labels,
        "path,label\nval/cat-1.png,tabby\nchelsea.png,tabby\n",
    )
    .unwrap();
    assert!(
        Dataset::load(&d.root(), Some(&labels), None, &Classes::imagenet())
            .unwrap()
            .warnings
            .is_empty()
    );
}

/// An image labelled twice as different classes is an error naming both lines; twice as
/// the same class is harmless.
#[test]
fn an_image_labelled_twice_differently_is_an_error_naming_both_lines() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(photo("chelsea"), dir.path().join("chelsea.png")).unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(
        &labels,
        "path,label\nchelsea.png,tabby\nother.png,ski\nchelsea.png,Egyptian cat\n",
    )
    .unwrap();
    let e = Dataset::load(dir.path(), Some(&labels), None, &Classes::imagenet()).unwrap_err();
    assert_eq!(
        format!("{e:#}"),
        format!(
            "{}: lines 2 and 4 both label chelsea.png, as n02123045 (281, tabby) and as \
             n02124075 (285, Egyptian cat)",
            labels.display()
        )
    );
    std::fs::write(&labels, "chelsea.png,tabby\nchelsea.png,n02123045\n").unwrap();
    let dataset = Dataset::load(dir.path(), Some(&labels), None, &Classes::imagenet()).unwrap();
    assert_eq!(dataset.items[0].truth.as_ref().unwrap().class, 281);
}

/// Labels as ImageNet's LOC_synset_mapping.txt writes them (its WordNet synonyms) are that
/// class, in a labels file and as a class folder.
#[test]
fn loc_synset_mapping_labels_are_that_class() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(photo("chelsea"), dir.path().join("chelsea.png")).unwrap();
    let labels = dir.path().join("labels.csv");
    std::fs::write(&labels, "chelsea.png,\"tabby, tabby cat\"\n").unwrap();
    let dataset = Dataset::load(dir.path(), Some(&labels), None, &Classes::imagenet()).unwrap();
    assert_eq!(dataset.items[0].truth.as_ref().unwrap().class, 281);

    let folders = tempfile::tempdir().unwrap();
    let class = folders.path().join("Egyptian cat");
    std::fs::create_dir(&class).unwrap();
    std::fs::copy(photo("chelsea"), class.join("c.png")).unwrap();
    let shark = folders
        .path()
        .join("great white shark, white shark, man-eater");
    std::fs::create_dir(&shark).unwrap();
    std::fs::copy(photo("coffee"), shark.join("s.png")).unwrap();
    let dataset = Dataset::load(folders.path(), None, None, &Classes::imagenet()).unwrap();
    let mut classes: Vec<_> = dataset
        .items
        .iter()
        .map(|i| i.truth.as_ref().unwrap().class)
        .collect();
    classes.sort_unstable();
    assert_eq!(classes, [2, 285]);
}
