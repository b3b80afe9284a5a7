//! A folder's ground truth read on a thread of its own (a large dataset takes seconds to
//! walk): the labels and boxes `camview eval` reads, with each image's key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::analysis::ImageKey;
use crate::dataset::{self, Dataset, LabelSource};
use crate::jobs::{self, Panicked};
use crate::log;
use crate::model::Classes;
use crate::walk::{self, EntryKind};

/// Where a folder's ground truth comes from: the folder, and the labels and boxes given.
#[derive(Debug, Clone)]
pub struct DatasetSource {
    pub root: PathBuf,
    pub labels: Option<PathBuf>,
    pub boxes: Option<PathBuf>,
}

/// A labelled folder read in the background, with each image's key as it was on disk.
#[derive(Debug)]
pub struct LoadedDataset {
    pub dataset: Arc<Dataset>,
    pub keys: Vec<ImageKey>,
}

/// Reads the ground truth of `root` (as `camview eval` does: `labels` and `boxes` when
/// given, else class folders). `Ok(None)`: the folder has no labels, so it is browsed as
/// folders only.
/// Why a folder is not reviewed as a dataset.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Its labels or boxes cannot be used; the error says which and why.
    #[error(transparent)]
    Unusable(Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot read it again")]
    Start(#[source] std::io::Error),
    #[error(transparent)]
    Bug(#[from] Panicked),
}

pub fn load(
    root: &Path,
    labels: Option<&Path>,
    boxes: Option<&Path>,
    classes: &Classes,
) -> Result<Option<LoadedDataset>, ReadError> {
    if labels.is_none() && boxes.is_none() && !has_class_folder(root, classes) {
        // Not a dataset: no need to walk what may be a whole home folder.
        return Ok(None);
    }
    let dataset =
        Dataset::load(root, labels, boxes, classes).map_err(|e| ReadError::Unusable(e.into()))?;
    if dataset.source == LabelSource::None && boxes.is_none() {
        return Ok(None);
    }
    let keys = dataset
        .items
        .iter()
        .map(|i| ImageKey::of(&i.path))
        .collect();
    Ok(Some(LoadedDataset {
        dataset: Arc::new(dataset),
        keys,
    }))
}

/// True when a folder right below `root` is named after one of `classes`.
fn has_class_folder(root: &Path, classes: &Classes) -> bool {
    walk::read_folder(root).is_ok_and(|entries| {
        entries.iter().any(|e| {
            e.kind == EntryKind::Folder
                && e.name
                    .to_str()
                    .is_some_and(|n| dataset::resolve_class(n, classes).is_ok())
        })
    })
}

/// Reads `source` against the model's `classes` on a thread of its own and hands the
/// outcome to `done`, unless the folder has no labels (`Ok(None)` from [`load`]): then
/// nothing is said.
pub fn spawn(
    source: &DatasetSource,
    classes: Arc<Classes>,
    done: impl FnOnce(Result<Box<LoadedDataset>, ReadError>) + Send + 'static,
) -> std::io::Result<()> {
    let source = source.clone();
    jobs::spawn_contained("camview-dataset", move || {
        let started = Instant::now();
        let loaded = jobs::contain_panic(|| {
            load(
                &source.root,
                source.labels.as_deref(),
                source.boxes.as_deref(),
                &classes,
            )
        });
        log::debug(&format!("dataset read in {:?}", started.elapsed()));
        match loaded {
            Ok(Some(loaded)) => done(Ok(Box::new(loaded))),
            Ok(None) => {}
            Err(e) => done(Err(e)),
        }
    })?;
    Ok(())
}
