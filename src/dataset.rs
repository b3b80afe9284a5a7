//! Ground truth for a folder of images: which of the model's classes each image shows, and
//! where.
//! Found by itself from class folders (`DIR/<class>/<image>`, the ImageNet layout and
//! torchvision's ImageFolder), or read from a labels file (`path,label` CSV, or ImageNet's
//! `LOC_val_solution.csv` with its boxes); boxes also from Pascal VOC XML files (the ILSVRC
//! 2012 bounding-box format) matched by file stem. Images come from the shared folder walk,
//! so hidden files and non-images are skipped here as everywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::model::classes::{ClassSource, Classes};
use crate::walk;

/// A truth box in original-image pixels, both ends included (as VOC and ILSVRC write them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TruthBox {
    pub class: usize,
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

/// What an image shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    pub class: usize,
    /// Where, when boxes were given (possibly of several objects and classes).
    pub boxes: Vec<TruthBox>,
}

/// One image of the dataset.
#[derive(Debug, Clone)]
pub struct Item {
    pub path: PathBuf,
    /// The path below the dataset's folder, with `/` separators.
    pub relative: String,
    /// `None`: unlabelled.
    pub truth: Option<Truth>,
}

/// Where the labels came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// No labels: every image is unlabelled.
    None,
    /// `DIR/<class>/<image>`.
    ClassFolders,
    File(PathBuf),
}

/// The images of a folder and their ground truth.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub items: Vec<Item>,
    pub source: LabelSource,
    /// Folders that could not be read, and why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// What was given but not used, and why, each naming its file: boxes that are no box
    /// of their image, box files that cannot be read, a labels file that names no image
    /// here. For the user to see (`eval` prints them, the browser shows them).
    pub warnings: Vec<String>,
    /// The model's classes, which the truth's class indices are of.
    pub classes: Classes,
}

impl Dataset {
    /// Walks `root` and finds its ground truth against the model's `classes`: `labels`
    /// when given, else class folders; `boxes`, a folder of VOC XML files, adds boxes.
    pub fn load(
        root: &Path,
        labels: Option<&Path>,
        boxes: Option<&Path>,
        classes: &Classes,
    ) -> anyhow::Result<Self> {
        let mut items = Vec::new();
        let mut unreadable = Vec::new();
        walk::images_under(root, &mut |found| match found {
            Ok(path) => {
                let relative = relative_name(root, &path);
                items.push(Item {
                    path,
                    relative,
                    truth: None,
                });
            }
            Err(e) => unreadable.push((e.dir, e.error.to_string())),
        });
        let mut warnings = Vec::new();
        let source = match labels {
            Some(file) => {
                apply_labels_file(file, root, &mut items, &mut warnings, classes)?;
                LabelSource::File(file.to_path_buf())
            }
            None => apply_class_folders(&mut items, classes)?,
        };
        if let Some(dir) = boxes {
            apply_voc_boxes(dir, &mut items, &mut warnings, classes)?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            items,
            source,
            unreadable,
            warnings,
            classes: classes.clone(),
        })
    }
}

fn relative_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Why a class name could not be turned into one of the model's classes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassError {
    #[error("`{name}` is not {among} (nearest: {})", .nearest.join(", "))]
    Unknown {
        name: String,
        /// `an ImageNet-1k class`, `one of the model's 3 classes (…)`.
        among: String,
        nearest: Vec<String>,
    },
    #[error("`{name}` names {} of the model's classes: {}; use the {hint}", .choices.len(), .choices.join(" or "))]
    Ambiguous {
        name: String,
        choices: Vec<String>,
        /// `WordNet ID`, or `class index` where the classes have none.
        hint: &'static str,
    },
}

/// The class of `classes` a label names: a WordNet ID (`n02124075`, where the classes have
/// them), a class name (exactly, else with case, spaces, underscores and hyphens ignored:
/// `egyptian_cat`; else the first of LOC_synset_mapping.txt's synonyms, `tabby, tabby cat`)
/// or a class index (`285`). Names come before indices: a class folder named `10` is the
/// class named `10` (as torchvision's sorted folders number it), not the eleventh.
pub fn resolve_class(name: &str, classes: &Classes) -> Result<usize, ClassError> {
    let name = name.trim();
    if let Some(index) = classes.index_of_wnid(name) {
        return Ok(index);
    }
    let exact: Vec<usize> = (0..classes.len())
        .filter(|&i| classes.names()[i] == name)
        .collect();
    if let [one] = exact.as_slice() {
        return Ok(*one);
    }
    let key = normalise(name);
    let named = |key: &str| -> Vec<usize> {
        (0..classes.len())
            .filter(|&i| normalise(&classes.names()[i]) == key)
            .collect()
    };
    let mut matches = named(&key);
    // ImageNet's LOC_synset_mapping.txt writes a class as its WordNet synonyms, `tabby,
    // tabby cat`: the first of them is the label.
    if matches.is_empty()
        && let Some((first, _)) = name.split_once(',')
    {
        matches = named(&normalise(first));
    }
    if matches.is_empty()
        && let Ok(index) = name.parse::<usize>()
        && index < classes.len()
    {
        return Ok(index);
    }
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(ClassError::Unknown {
            name: name.to_string(),
            among: match classes.source() {
                ClassSource::ImageNet => "an ImageNet-1k class".to_string(),
                source => format!("one of the model's {} classes ({source})", classes.len()),
            },
            nearest: nearest(&key, classes),
        }),
        many => Err(ClassError::Ambiguous {
            name: name.to_string(),
            choices: many.iter().map(|&i| described(classes, i)).collect(),
            hint: if classes.wnid(0).is_some() {
                "WordNet ID"
            } else {
                "class index"
            },
        }),
    }
}

/// `n02124075 (285, Egyptian cat)`, or `1 (dent)` without WordNet IDs.
fn described(classes: &Classes, index: usize) -> String {
    match classes.wnid(index) {
        Some(wnid) => format!("{wnid} ({index}, {})", classes.label(index)),
        None => format!("{index} ({})", classes.label(index)),
    }
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The three class names closest to `key` in edit distance.
fn nearest(key: &str, classes: &Classes) -> Vec<String> {
    let mut scored: Vec<(usize, usize)> = (0..classes.len())
        .map(|i| (strsim::levenshtein(key, &normalise(&classes.names()[i])), i))
        .collect();
    scored.sort_unstable();
    scored
        .iter()
        .take(3)
        .map(|&(_, i)| described(classes, i))
        .collect()
}

/// What torchvision ImageFolder's rule makes of a folder for a model nothing names the
/// classes of, and the one-line note that says so.
#[derive(Debug, Clone)]
pub struct FolderClasses {
    /// The sorted folder names, when there are as many as the model's head has classes.
    pub classes: Option<Classes>,
    pub note: String,
}

/// torchvision ImageFolder's rule: when nothing names the model's classes (`class N`), the
/// folders right below `root` sorted by code point (Python's `sorted()`, as ImageFolder
/// does; hidden folders skipped, as everywhere in camview) are the classes, the i-th
/// folder class i, if there are as many as the head has classes. `None` when the classes
/// are named or `root` has no folder; a note naming both numbers when the counts differ.
pub fn folder_classes(root: &Path, model: &Classes) -> Option<FolderClasses> {
    if *model.source() != ClassSource::Numbered {
        return None;
    }
    let mut folders: Vec<String> = walk::read_folder(root)
        .ok()?
        .into_iter()
        .filter(|e| e.kind == walk::EntryKind::Folder)
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    if folders.is_empty() {
        return None;
    }
    // Rust orders strings by their UTF-8 bytes, which is code point order.
    folders.sort();
    let (count, head) = (folders.len(), model.len());
    if count != head {
        return Some(FolderClasses {
            classes: None,
            note: format!(
                "{} has {count} class folders but the model's head has {head} classes, and \
                 nothing names them: the folders do not name the classes (--classes FILE does)",
                root.display()
            ),
        });
    }
    let note = format!(
        "the model's {head} classes are named after the sorted class folders of {} \
         (torchvision's ImageFolder rule): {}",
        root.display(),
        folders.join(", ")
    );
    Some(FolderClasses {
        classes: Some(Classes::new(
            folders,
            None,
            ClassSource::Folders(root.to_path_buf()),
        )),
        note,
    })
}

/// Class folders: the first folder below the root names each image's class. Used when every
/// such folder is a class; when none is, the images are unlabelled (an ordinary tree of
/// photos); a mixture is an error naming the folder that is not a class.
fn apply_class_folders(items: &mut [Item], model: &Classes) -> anyhow::Result<LabelSource> {
    let mut classes: HashMap<String, Result<usize, ClassError>> = HashMap::new();
    for item in items.iter() {
        if let Some((folder, _)) = item.relative.split_once('/') {
            classes
                .entry(folder.to_string())
                .or_insert_with(|| resolve_class(folder, model));
        }
    }
    if classes.is_empty()
        || classes
            .values()
            .all(|c| matches!(c, Err(ClassError::Unknown { .. })))
    {
        return Ok(LabelSource::None);
    }
    let mut folders: Vec<_> = classes.iter().collect();
    folders.sort_by(|a, b| a.0.cmp(b.0));
    for (folder, class) in folders {
        if let Err(e) = class {
            bail!("class folder {folder}/: {e}");
        }
    }
    for item in items.iter_mut() {
        if let Some((folder, _)) = item.relative.split_once('/')
            && let Some(Ok(class)) = classes.get(folder)
        {
            item.truth = Some(Truth {
                class: *class,
                boxes: Vec::new(),
            });
        }
    }
    Ok(LabelSource::ClassFolders)
}

/// A labels file: `path,label` lines (an optional `path,label` header), or ImageNet's
/// `LOC_val_solution.csv` (header `ImageId,PredictionString`, rows
/// `ILSVRC2012_val_00000001,"n01751748 x0 y0 x1 y1 …"`). Rows are matched to images by
/// path below the folder, else by file name, else by stem. A row that labels an image
/// another row labelled as another class is an error; a file none of whose rows names an
/// image here is a warning (a label file for another folder, or paths written otherwise).
fn apply_labels_file(
    file: &Path,
    root: &Path,
    items: &mut [Item],
    warnings: &mut Vec<String>,
    classes: &Classes,
) -> anyhow::Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_path(file)
        .with_context(|| format!("cannot read labels file {}", file.display()))?;
    // Each row's key: its line, its class and the boxes as written.
    let mut rows: HashMap<String, (usize, usize, Vec<WrittenBox>)> = HashMap::new();
    let mut loc_format = false;
    for (n, row) in reader.records().enumerate() {
        let line = n + 1;
        let row = row.with_context(|| format!("{}: line {line}", file.display()))?;
        let (key, value) = match (row.get(0), row.get(1)) {
            (Some(k), Some(v)) => (k.trim(), v.trim()),
            _ => bail!("{}: line {line}: expected `path,label`", file.display()),
        };
        if line == 1 {
            if key == "ImageId" && value == "PredictionString" {
                loc_format = true;
                continue;
            }
            if key == "path" && value == "label" {
                continue;
            }
        }
        let at = |e: &dyn std::fmt::Display| format!("{}: line {line}: {e}", file.display());
        let (class, boxes) = if loc_format {
            let boxes =
                parse_prediction_string(value, classes).map_err(|e| anyhow::anyhow!(at(&e)))?;
            let Some(first) = boxes.first() else {
                bail!(at(&"no box in the prediction string"));
            };
            (first.class, boxes)
        } else {
            let class = resolve_class(value, classes).map_err(|e| anyhow::anyhow!(at(&e)))?;
            (class, Vec::new())
        };
        let key = key.replace('\\', "/");
        if let Some((before, other, _)) = rows.get(&key)
            && *other != class
        {
            bail!(
                "{}: lines {before} and {line} both label {key}, as {} and as {}",
                file.display(),
                described(classes, *other),
                described(classes, class)
            );
        }
        rows.insert(key, (line, class, boxes));
    }
    let mut matched = std::collections::HashSet::new();
    for item in items.iter_mut() {
        let name = item.relative.rsplit('/').next().unwrap_or(&item.relative);
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        let Some((key, (line, class, written))) = [item.relative.as_str(), name, stem]
            .iter()
            .find_map(|k| rows.get_key_value(*k))
        else {
            item.truth = None;
            continue;
        };
        matched.insert(key);
        let from = format!("{}: line {line}", file.display());
        item.truth = Some(Truth {
            class: *class,
            boxes: usable_boxes(&item.path, written, &from, warnings, classes),
        });
    }
    if matched.is_empty() && !rows.is_empty() {
        warnings.push(format!(
            "{}: 0 of its {} rows name an image under {} (a row's path is matched to an \
             image's path below that folder, else to its file name, else to its name without \
             the extension)",
            file.display(),
            rows.len(),
            root.display()
        ));
    }
    Ok(())
}

/// A box as a file writes it (pixels, both ends included), before it is checked against
/// its image.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WrittenBox {
    class: usize,
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl WrittenBox {
    /// `n02124075 (285, Egyptian cat) (10, 20)–(300, 200)`.
    fn described(&self, classes: &Classes) -> String {
        let Self { x0, y0, x1, y1, .. } = self;
        format!(
            "{} ({x0}, {y0})–({x1}, {y1})",
            described(classes, self.class)
        )
    }

    /// The box on an image of `size` (when it could be read), or why it is none: a
    /// coordinate that is not a number, a minimum above its maximum, or no pixel inside
    /// the image. A box that only overhangs the image is clipped to it: annotators often
    /// write the image's width as `xmax`, one past its last pixel.
    fn on_image(self, size: Option<(u32, u32)>) -> Result<TruthBox, String> {
        let Self { x0, y0, x1, y1, .. } = self;
        if ![x0, y0, x1, y1].iter().all(|c| c.is_finite()) {
            return Err("a coordinate is not a number".into());
        }
        if x0 > x1 || y0 > y1 {
            return Err("inverted: a minimum above its maximum".into());
        }
        let (last_x, last_y) = size.map_or((f64::INFINITY, f64::INFINITY), |(w, h)| {
            (f64::from(w) - 1.0, f64::from(h) - 1.0)
        });
        if x1 < 0.0 || y1 < 0.0 || x0 > last_x || y0 > last_y {
            return Err(match size {
                Some((w, h)) => format!("outside the {w}×{h} image"),
                None => "outside the image".into(),
            });
        }
        Ok(TruthBox {
            class: self.class,
            x0: x0.clamp(0.0, last_x) as u32,
            y0: y0.clamp(0.0, last_y) as u32,
            x1: x1.clamp(0.0, last_x) as u32,
            y1: y1.clamp(0.0, last_y) as u32,
        })
    }
}

/// The boxes of `written` that are boxes of the image at `path`; a warning for each other,
/// naming `from` (where it was written).
fn usable_boxes(
    path: &Path,
    written: &[WrittenBox],
    from: &str,
    warnings: &mut Vec<String>,
    classes: &Classes,
) -> Vec<TruthBox> {
    if written.is_empty() {
        return Vec::new();
    }
    // An image that cannot be read fails on its own; its boxes are checked for the rest.
    let size = crate::model::preprocess::oriented_size(path).ok();
    written
        .iter()
        .filter_map(|b| {
            b.on_image(size)
                .map_err(|why| {
                    let b = b.described(classes);
                    warnings.push(format!("{from}: box {b} not used: {why}"));
                })
                .ok()
        })
        .collect()
}

/// `wnid x0 y0 x1 y1` repeated.
fn parse_prediction_string(text: &str, classes: &Classes) -> Result<Vec<WrittenBox>, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.len().is_multiple_of(5) {
        return Err(format!("`{text}`: expected groups of `wnid x0 y0 x1 y1`"));
    }
    words
        .chunks(5)
        .map(|w| {
            let class = classes
                .index_of_wnid(w[0])
                .ok_or_else(|| match classes.source() {
                    ClassSource::ImageNet => format!("`{}` is not an ImageNet-1k WordNet ID", w[0]),
                    source => format!(
                        "`{}` is the WordNet ID of none of the model's classes ({source})",
                        w[0]
                    ),
                })?;
            let n = |s: &str| {
                s.parse::<f64>()
                    .map_err(|_| format!("`{s}` is not a coordinate"))
            };
            Ok(WrittenBox {
                class,
                x0: n(w[1])?,
                y0: n(w[2])?,
                x1: n(w[3])?,
                y1: n(w[4])?,
            })
        })
        .collect()
}

/// Boxes from `DIR/<stem>.xml` (Pascal VOC). Images with boxes but no label take the class
/// of their first box. A file that cannot be read or parsed (a DTD among them: roxmltree
/// refuses those, as entity expansion is a way to exhaust memory) is a warning, and its
/// image unboxed: one bad file in thousands does not stop the run.
fn apply_voc_boxes(
    dir: &Path,
    items: &mut [Item],
    warnings: &mut Vec<String>,
    classes: &Classes,
) -> anyhow::Result<()> {
    anyhow::ensure!(dir.is_dir(), "--boxes {}: not a folder", dir.display());
    for item in items.iter_mut() {
        let Some(stem) = item.path.file_stem() else {
            continue;
        };
        let xml = dir.join(stem).with_extension("xml");
        if !xml.is_file() {
            continue;
        }
        let written = std::fs::read_to_string(&xml)
            .map_err(anyhow::Error::from)
            .and_then(|text| parse_voc(&text, classes));
        let written = match written {
            Ok(written) if !written.is_empty() => written,
            Ok(_) => continue,
            Err(e) => {
                warnings.push(format!(
                    "{}: cannot use it ({e:#}); {} counted as unboxed",
                    xml.display(),
                    item.relative
                ));
                continue;
            }
        };
        let from = xml.display().to_string();
        let boxes = usable_boxes(&item.path, &written, &from, warnings, classes);
        match &mut item.truth {
            Some(truth) => truth.boxes = boxes,
            None => {
                item.truth = Some(Truth {
                    class: written[0].class,
                    boxes,
                });
            }
        }
    }
    Ok(())
}

/// The objects of a VOC annotation: `<object><name>wnid</name><bndbox><xmin>…`.
fn parse_voc(text: &str, classes: &Classes) -> anyhow::Result<Vec<WrittenBox>> {
    let doc = roxmltree::Document::parse(text)?;
    let child = |node: roxmltree::Node<'_, '_>, name: &str| {
        node.children()
            .find(|c| c.has_tag_name(name))
            .and_then(|c| c.text())
            .map(str::trim)
            .map(str::to_string)
    };
    let mut boxes = Vec::new();
    for object in doc.descendants().filter(|n| n.has_tag_name("object")) {
        let name = child(object, "name").context("an <object> without <name>")?;
        let class = resolve_class(&name, classes)?;
        let bndbox = object
            .children()
            .find(|c| c.has_tag_name("bndbox"))
            .with_context(|| format!("object {name} has no <bndbox>"))?;
        // `NaN` parses as a number: `WrittenBox::on_image` turns it away.
        let coord = |tag: &str| -> anyhow::Result<f64> {
            let text = child(bndbox, tag).with_context(|| format!("object {name}: no <{tag}>"))?;
            text.parse()
                .with_context(|| format!("object {name}: <{tag}> {text} is not a number"))
        };
        boxes.push(WrittenBox {
            class,
            x0: coord("xmin")?,
            y0: coord("ymin")?,
            x1: coord("xmax")?,
            y1: coord("ymax")?,
        });
    }
    Ok(boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imagenet() -> Classes {
        Classes::imagenet()
    }

    #[test]
    fn classes_are_named_by_wordnet_id_label_or_index() {
        assert_eq!(resolve_class("n02124075", &imagenet()), Ok(285));
        assert_eq!(resolve_class("egyptian_cat", &imagenet()), Ok(285));
        assert_eq!(resolve_class("Egyptian Cat", &imagenet()), Ok(285));
        assert_eq!(resolve_class("285", &imagenet()), Ok(285));
        let Err(ClassError::Ambiguous { choices, .. }) = resolve_class("crane", &imagenet()) else {
            panic!("crane is a bird and a machine");
        };
        assert_eq!(
            choices,
            ["n02012849 (134, crane)", "n03126707 (517, crane)"]
        );
        let Err(e @ ClassError::Unknown { .. }) = resolve_class("egyptain cat", &imagenet()) else {
            panic!("a typo is unknown");
        };
        assert!(
            e.to_string()
                .contains("nearest: n02124075 (285, Egyptian cat)"),
            "{e}"
        );
        assert!(resolve_class("1000", &imagenet()).is_err());
    }

    #[test]
    fn loc_solution_rows_give_the_class_and_every_box() {
        let boxes = parse_prediction_string("n01751748 1 2 30 40 n01751748 5 6 70 80", &imagenet())
            .unwrap();
        assert_eq!(boxes.len(), 2);
        assert_eq!((boxes[1].class, boxes[1].x1, boxes[1].y1), (65, 70.0, 80.0));
        assert!(parse_prediction_string("n01751748 1 2 30", &imagenet()).is_err());
        assert!(parse_prediction_string("n99999999 1 2 3 4", &imagenet()).is_err());
    }

    #[test]
    fn voc_objects_are_read() {
        let xml = "<annotation><size><width>500</width><height>375</height></size>\
            <object><name>n02124075</name><bndbox><xmin>10</xmin><ymin>20</ymin>\
            <xmax>300</xmax><ymax>200</ymax></bndbox></object></annotation>";
        assert_eq!(
            parse_voc(xml, &imagenet()).unwrap(),
            [WrittenBox {
                class: 285,
                x0: 10.0,
                y0: 20.0,
                x1: 300.0,
                y1: 200.0
            }]
        );
        assert!(
            parse_voc(
                "<annotation><object><name>n02124075</name></object></annotation>",
                &imagenet()
            )
            .is_err()
        );
    }

    #[test]
    fn a_box_is_one_of_its_image_or_is_not_used() {
        let written = |x0, y0, x1, y1| WrittenBox {
            class: 285,
            x0,
            y0,
            x1,
            y1,
        };
        let size = Some((500, 375));
        let kept = written(10.0, 20.0, 300.0, 200.0).on_image(size).unwrap();
        assert_eq!((kept.x0, kept.y0, kept.x1, kept.y1), (10, 20, 300, 200));
        // Overhanging: clipped to the last pixel (499, 374) and the first (0).
        let clipped = written(-5.0, 20.0, 500.0, 375.0).on_image(size).unwrap();
        assert_eq!(
            (clipped.x0, clipped.y0, clipped.x1, clipped.y1),
            (0, 20, 499, 374)
        );
        let why = |b: WrittenBox| b.on_image(size).unwrap_err();
        assert!(why(written(300.0, 20.0, 10.0, 200.0)).contains("inverted"));
        assert!(why(written(10.0, f64::NAN, 300.0, 200.0)).contains("not a number"));
        assert!(why(written(500.0, 20.0, 600.0, 200.0)).contains("outside the 500×375 image"));
        assert!(why(written(10.0, -50.0, 300.0, -1.0)).contains("outside"));
    }

    #[test]
    fn loc_synset_mapping_synonyms_name_their_class() {
        assert_eq!(resolve_class("tabby, tabby cat", &imagenet()), Ok(281));
        assert_eq!(
            resolve_class(
                "great white shark, white shark, man-eater, man-eating shark",
                &imagenet()
            ),
            Ok(2)
        );
        // The first synonym decides; `crane` stays ambiguous (a bird and a machine).
        assert!(matches!(
            resolve_class("crane", &imagenet()),
            Err(ClassError::Ambiguous { .. })
        ));
    }

    fn own(names: &[&str]) -> Classes {
        Classes::new(
            names.iter().map(|n| n.to_string()).collect(),
            None,
            ClassSource::File("classes.txt".into()),
        )
    }

    #[test]
    fn an_own_models_classes_are_named_by_name_forgivingly_or_by_index() {
        let classes = own(&["scratch", "dent", "clean"]);
        assert_eq!(resolve_class("dent", &classes), Ok(1));
        assert_eq!(resolve_class(" Clean ", &classes), Ok(2));
        assert_eq!(resolve_class("2", &classes), Ok(2));
        let e = resolve_class("scrath", &classes).unwrap_err().to_string();
        assert_eq!(
            e,
            "`scrath` is not one of the model's 3 classes (classes.txt) \
             (nearest: 0 (scratch), 1 (dent), 2 (clean))"
        );
        // ImageNet's names are no class of this model.
        assert!(resolve_class("Egyptian cat", &classes).is_err());
        assert!(resolve_class("n02124075", &classes).is_err());
        assert!(resolve_class("3", &classes).is_err());
        let twins = own(&["Hot-Dog", "hot dog", "bun"]);
        assert_eq!(resolve_class("hot dog", &twins), Ok(1), "exact first");
        let e = resolve_class("hotdog", &twins).unwrap_err().to_string();
        assert!(e.contains("use the class index"), "{e}");
    }

    #[test]
    fn a_folder_named_by_a_number_is_that_name_before_that_index() {
        // As torchvision's ImageFolder numbers folders 0, 1, 10, 2: `10` is class 2.
        let classes = own(&["0", "1", "10", "2"]);
        assert_eq!(resolve_class("10", &classes), Ok(2));
        assert_eq!(resolve_class("2", &classes), Ok(3));
    }

    #[test]
    fn imagefolders_rule_names_numbered_classes_after_the_sorted_folders() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["scratch", "dent", "Zinc", ".cache"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
        }
        std::fs::write(dir.path().join("loose.png"), b"").unwrap();
        let found = folder_classes(dir.path(), &Classes::numbered(3)).unwrap();
        let classes = found.classes.unwrap();
        // Code point order, as Python's sorted(): upper case before lower; hidden skipped.
        assert_eq!(classes.names(), ["Zinc", "dent", "scratch"]);
        assert_eq!(
            *classes.source(),
            ClassSource::Folders(dir.path().to_path_buf())
        );
        assert!(found.note.contains("ImageFolder"), "{}", found.note);
        let other = folder_classes(dir.path(), &Classes::numbered(5)).unwrap();
        assert!(other.classes.is_none());
        assert!(
            other
                .note
                .contains("has 3 class folders but the model's head has 5 classes"),
            "{}",
            other.note
        );
        // Named classes are the model's own: no rule.
        assert!(folder_classes(dir.path(), &own(&["a", "b", "c"])).is_none());
        let empty = tempfile::tempdir().unwrap();
        assert!(folder_classes(empty.path(), &Classes::numbered(3)).is_none());
    }
}
