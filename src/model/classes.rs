//! The names of a model's classes, in the order of its classifier's outputs: ImageNet's for a
//! 1000-class ImageNet head, the model folder's or a class file's for a model of one's own,
//! `class N` where nothing names them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::labels;

/// Where a model's class names came from (said by `model info` and the status line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassSource {
    /// The built-in ImageNet-1k names and WordNet IDs, for a 1000-class head.
    ImageNet,
    /// The model folder's `config.json` (timm's `label_names`, transformers' `id2label`).
    Config(PathBuf),
    /// A class file (`--classes`).
    File(PathBuf),
    /// The sorted class folders of a dataset (torchvision ImageFolder's rule), for a model
    /// nothing else names.
    Folders(PathBuf),
    /// Nothing names them: `class 0`, `class 1`, …
    Numbered,
}

impl fmt::Display for ClassSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ImageNet => f.write_str("built-in ImageNet-1k names"),
            Self::Config(path) => write!(f, "{}", path.display()),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Folders(root) => write!(f, "the sorted class folders of {}", root.display()),
            Self::Numbered => f.write_str("no names given: numbered"),
        }
    }
}

/// The classes of one model's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    names: Vec<String>,
    /// WordNet IDs (`n02124075`), where the source gives them, one per name.
    wnids: Option<Vec<String>>,
    source: ClassSource,
}

/// Why a list of class names cannot name a model's classes.
#[derive(Debug, thiserror::Error)]
pub enum ClassesError {
    #[error("cannot read class file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", .path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{from} names {found} classes, but the model's head has {head}")]
    Count {
        from: ClassSource,
        found: usize,
        head: usize,
    },
}

impl Classes {
    /// ImageNet-1k's 1000 names and WordNet IDs.
    pub fn imagenet() -> Self {
        Self {
            names: labels::names().iter().map(|s| s.to_string()).collect(),
            wnids: Some(
                (0..labels::count())
                    .map(|i| labels::wnid(i).unwrap_or_default().to_string())
                    .collect(),
            ),
            source: ClassSource::ImageNet,
        }
    }

    /// `class 0` … `class {count - 1}`.
    pub fn numbered(count: usize) -> Self {
        Self {
            names: (0..count).map(|i| format!("class {i}")).collect(),
            wnids: None,
            source: ClassSource::Numbered,
        }
    }

    /// What a head of `count` outputs is called when nothing names its classes: ImageNet's
    /// names for 1000, numbers otherwise.
    pub fn for_head(count: usize) -> Self {
        if count == labels::count() {
            Self::imagenet()
        } else {
            Self::numbered(count)
        }
    }

    /// Names (and WordNet IDs, if given) from `source`, checked against nothing yet.
    pub fn new(names: Vec<String>, wnids: Option<Vec<String>>, source: ClassSource) -> Self {
        debug_assert!(wnids.as_ref().is_none_or(|w| w.len() == names.len()));
        Self {
            names,
            wnids,
            source,
        }
    }

    /// Reads a class file: a text file with one name a line or `wnid name` lines, a JSON list
    /// of names, or a JSON object from index to name (or to `[wnid, name]`, as Keras'
    /// `imagenet_class_index.json`). `head` is the model's class count: a list of another
    /// length is an error naming both numbers.
    pub fn from_file(path: &Path, head: usize) -> Result<Self, ClassesError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClassesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let source = ClassSource::File(path.to_path_buf());
        let (names, wnids) = parse(&text).map_err(|reason| ClassesError::Format {
            path: path.to_path_buf(),
            reason,
        })?;
        Self::new(names, wnids, source).checked(head)
    }

    /// These classes if there are `head` of them, else the error naming both counts.
    pub fn checked(self, head: usize) -> Result<Self, ClassesError> {
        if self.names.len() == head {
            Ok(self)
        } else {
            Err(ClassesError::Count {
                found: self.names.len(),
                head,
                from: self.source,
            })
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The name of class `index`, or `class N` outside the list.
    pub fn label(&self, index: usize) -> String {
        self.names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("class {index}"))
    }

    /// The WordNet ID of class `index`, where the names came with them.
    pub fn wnid(&self, index: usize) -> Option<&str> {
        self.wnids.as_ref()?.get(index).map(String::as_str)
    }

    /// The class whose WordNet ID is `id`.
    pub fn index_of_wnid(&self, id: &str) -> Option<usize> {
        self.wnids.as_ref()?.iter().position(|w| w == id)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn source(&self) -> &ClassSource {
        &self.source
    }
}

/// Whether `word` is a WordNet noun ID: `n` and eight digits.
pub fn is_wnid(word: &str) -> bool {
    word.len() == 9 && word.starts_with('n') && word[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Names and maybe WordNet IDs from a class file's text (see [`Classes::from_file`]).
fn parse(text: &str) -> Result<(Vec<String>, Option<Vec<String>>), String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        return from_json(&value);
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return Err("no class names in it".into());
    }
    // `n01440764 tench` on every line: WordNet IDs and names.
    let pairs: Option<Vec<(&str, &str)>> = lines
        .iter()
        .map(|l| {
            l.split_once(char::is_whitespace)
                .filter(|(id, _)| is_wnid(id))
                .map(|(id, name)| (id, name.trim()))
        })
        .collect();
    Ok(match pairs {
        Some(pairs) => (
            pairs.iter().map(|(_, n)| n.to_string()).collect(),
            Some(pairs.iter().map(|(id, _)| id.to_string()).collect()),
        ),
        None => (lines.iter().map(|l| l.to_string()).collect(), None),
    })
}

/// A JSON list of names, or an object from index (`"0"`…) to a name or a `[wnid, name]` pair:
/// the indices must be exactly 0..n.
pub(crate) fn from_json(
    value: &serde_json::Value,
) -> Result<(Vec<String>, Option<Vec<String>>), String> {
    use serde_json::Value;
    let entry = |v: &Value| -> Result<(Option<String>, String), String> {
        match v {
            Value::String(s) => Ok((None, s.clone())),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(id), Value::String(name)] => Ok((Some(id.clone()), name.clone())),
                _ => Err(format!("{v} is neither a name nor a [wnid, name] pair")),
            },
            other => Err(format!("{other} is not a class name")),
        }
    };
    let entries: Vec<(Option<String>, String)> = match value {
        Value::Array(list) => list.iter().map(entry).collect::<Result<_, _>>()?,
        Value::Object(map) => {
            let mut indexed = Vec::with_capacity(map.len());
            for (key, v) in map {
                let index: usize = key
                    .trim()
                    .parse()
                    .map_err(|_| format!("key {key:?} is not a class index"))?;
                indexed.push((index, entry(v)?));
            }
            indexed.sort_by_key(|(i, _)| *i);
            if let Some((position, (index, _))) =
                indexed.iter().enumerate().find(|(p, (i, _))| p != i)
            {
                return Err(format!(
                    "class indices must run 0..{} without gaps or repeats; found {index} at position {position}",
                    indexed.len()
                ));
            }
            indexed.into_iter().map(|(_, e)| e).collect()
        }
        _ => return Err("expected a list of names or an object from index to name".into()),
    };
    if entries.is_empty() {
        return Err("no class names in it".into());
    }
    let wnids = entries
        .iter()
        .map(|(id, _)| id.clone())
        .collect::<Option<Vec<_>>>();
    Ok((entries.into_iter().map(|(_, n)| n).collect(), wnids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn a_1000_class_head_is_imagenet_and_any_other_is_numbered() {
        let imagenet = Classes::for_head(1000);
        assert_eq!(imagenet.label(285), "Egyptian cat");
        assert_eq!(imagenet.wnid(285), Some("n02124075"));
        assert_eq!(imagenet.index_of_wnid("n04266014"), Some(812));
        let ten = Classes::for_head(10);
        assert_eq!(ten.len(), 10);
        assert_eq!(ten.label(1), "class 1", "not ImageNet's goldfish");
        assert_eq!(ten.wnid(1), None);
        assert_eq!(*ten.source(), ClassSource::Numbered);
    }

    #[test]
    fn class_files_in_every_form_read_the_same_names() {
        let forms = [
            "scratch\ndent\n\nclean\n",
            "[\"scratch\", \"dent\", \"clean\"]",
            "{\"1\": \"dent\", \"0\": \"scratch\", \"2\": \"clean\"}",
        ];
        for text in forms {
            let file = write(text);
            let classes = Classes::from_file(file.path(), 3).unwrap();
            assert_eq!(classes.names(), ["scratch", "dent", "clean"], "{text}");
            assert_eq!(classes.wnid(0), None);
        }
        let file = write("n01440764 tench\nn01443537  goldfish \n");
        let classes = Classes::from_file(file.path(), 2).unwrap();
        assert_eq!(classes.names(), ["tench", "goldfish"]);
        assert_eq!(classes.wnid(1), Some("n01443537"));
        let file =
            write("{\"0\": [\"n01440764\", \"tench\"], \"1\": [\"n01443537\", \"goldfish\"]}");
        let classes = Classes::from_file(file.path(), 2).unwrap();
        assert_eq!(classes.index_of_wnid("n01443537"), Some(1));
        // A name with spaces stays whole when not every line starts with a WordNet ID.
        let file = write("great white shark\nn01443537 goldfish\n");
        let classes = Classes::from_file(file.path(), 2).unwrap();
        assert_eq!(classes.label(0), "great white shark");
        assert_eq!(classes.label(1), "n01443537 goldfish");
    }

    #[test]
    fn a_list_of_the_wrong_length_or_form_is_an_error_that_says_why() {
        let file = write("a\nb\nc\n");
        let e = Classes::from_file(file.path(), 10).unwrap_err().to_string();
        assert!(
            e.contains("names 3 classes, but the model's head has 10"),
            "{e}"
        );
        let file = write("{\"0\": \"a\", \"2\": \"c\"}");
        let e = Classes::from_file(file.path(), 2).unwrap_err().to_string();
        assert!(e.contains("without gaps"), "{e}");
        let file = write("[\"a\", 3]");
        let e = Classes::from_file(file.path(), 2).unwrap_err().to_string();
        assert!(e.contains("3 is not a class name"), "{e}");
        let file = write("\n\n");
        let e = Classes::from_file(file.path(), 2).unwrap_err().to_string();
        assert!(e.contains("no class names"), "{e}");
        let e = Classes::from_file(Path::new("/no/such/classes.txt"), 2).unwrap_err();
        assert!(e.to_string().contains("cannot read class file"), "{e}");
    }
}
