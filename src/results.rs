//! The results service, one for `camview eval` and the browser: read what the result store
//! holds, analyse what it lacks through [`pipeline`], store that. A result is reused only for
//! the same file version, model (weights, and its preprocessing and class names where they
//! are not ImageNet's), resize mode and method of the CAM family, and, for a labelled image,
//! when it pins the true class.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Mutex;

use crate::analysis::{self, AnalysisError, ImageKey, Record};
use crate::jobs;
use crate::model::cam_methods::CamMethod;
use crate::model::faithfulness::Scores;
use crate::model::preprocess::Preprocessing;
use crate::model::{Classes, Classifier, ResizeMode};
use crate::pipeline::{self, Run};
use crate::store::{MapKey, Store, StoreError, open_or_recover};

/// An image to analyse, with its true class when it is labelled: that class is pinned in its
/// result (rank, probability and CAM even outside the top 5).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub key: ImageKey,
    pub truth: Option<usize>,
}

/// A result analysed now.
#[derive(Debug)]
pub struct Fresh {
    pub record: Result<Record, AnalysisError>,
    /// Why the record could not be kept, when it could not.
    pub not_stored: Option<StoreError>,
}

/// The result store as the service uses it (or none), for one set of weights and one resize
/// mode; its results are by one method of the CAM family (CAM unless told), or, through
/// the `_by`/`_methods` calls, by any.
pub struct Results {
    kept: Option<Kept>,
    resize: ResizeMode,
    method: CamMethod,
}

struct Kept {
    /// One connection, used from the pipeline's last stage and the caller's thread in turn.
    store: Mutex<Store>,
    /// The model's identity: its weights' SHA-256, and a digest of its preprocessing and
    /// class names where they are not ImageNet's.
    weights: String,
    /// The model's class names, given to stored records (the store keeps class indices).
    classes: Classes,
}

impl Results {
    /// Results kept nowhere: everything is analysed afresh.
    pub fn unkept(resize: ResizeMode) -> Self {
        Self {
            kept: None,
            resize,
            method: CamMethod::Cam,
        }
    }

    /// The results of `classifier`'s model kept in the store at `store` (when given). The
    /// notes say what the user should know: a store set aside, or none to be had.
    pub fn open(
        store: Option<&Path>,
        classifier: &Classifier,
        resize: ResizeMode,
    ) -> (Self, Vec<String>) {
        let Some(path) = store else {
            return (Self::unkept(resize), Vec::new());
        };
        let (store, note) = open_or_recover(path);
        let mut notes: Vec<String> = note.into_iter().collect();
        let description = classifier.description();
        let kept = store.and_then(|store| match store.weights_id(&description.weights) {
            Ok(sha) => Some(Kept {
                store: Mutex::new(store),
                weights: model_identity(
                    sha,
                    &description.preprocessing,
                    classifier.classes(),
                    classifier.precision_name() != "f32",
                ),
                classes: classifier.classes().clone(),
            }),
            Err(e) => {
                notes.push(format!("results are not kept: {}", crate::model::chain(&e)));
                None
            }
        });
        let method = CamMethod::Cam;
        (
            Self {
                kept,
                resize,
                method,
            },
            notes,
        )
    }

    /// The same store, its results by `method` (any without passes of its own).
    pub fn with_method(self, method: CamMethod) -> Self {
        Self { method, ..self }
    }

    /// Whether results are kept in a store.
    pub fn is_kept(&self) -> bool {
        self.kept.is_some()
    }

    pub fn resize(&self) -> ResizeMode {
        self.resize
    }

    pub fn method(&self) -> CamMethod {
        self.method
    }

    /// The stored result for `target`, if there is one that serves it. A store that cannot
    /// be read counts as holding nothing.
    pub fn stored(&self, target: &Target) -> Option<Record> {
        self.stored_by(target, self.method)
    }

    /// [`Self::stored`] by `method`.
    pub fn stored_by(&self, target: &Target, method: CamMethod) -> Option<Record> {
        let kept = self.kept.as_ref()?;
        let store = kept.store.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = store
            .get(&target.key, &kept.weights, self.resize, method)
            .ok()??;
        for prediction in &mut record.analysis.top {
            prediction.label = kept.classes.label(prediction.index);
        }
        record.serves(target.truth).then_some(record)
    }

    /// Keeps `record` of `key` by `method` (one transaction); nothing without a store.
    pub fn put(
        &self,
        key: &ImageKey,
        method: CamMethod,
        record: &Record,
    ) -> Result<(), StoreError> {
        let Some(kept) = &self.kept else {
            return Ok(());
        };
        let store = kept.store.lock().unwrap_or_else(|e| e.into_inner());
        store.put(key, &kept.weights, self.resize, method, record)
    }

    /// The stored faithfulness scores of an image's map, if the store holds them. A store
    /// that cannot be read counts as holding nothing.
    pub fn stored_faithfulness(&self, key: &ImageKey, map: MapKey) -> Option<Scores> {
        let kept = self.kept.as_ref()?;
        let store = kept.store.lock().unwrap_or_else(|e| e.into_inner());
        store
            .get_faithfulness(key, &kept.weights, self.resize, map)
            .ok()?
    }

    /// Keeps an image's faithfulness scores (one transaction); nothing without a store.
    pub fn put_faithfulness(
        &self,
        key: &ImageKey,
        map: MapKey,
        scores: &Scores,
    ) -> Result<(), StoreError> {
        let Some(kept) = &self.kept else {
            return Ok(());
        };
        let store = kept.store.lock().unwrap_or_else(|e| e.into_inner());
        store.put_faithfulness(key, &kept.weights, self.resize, map, scores)
    }

    /// Analyses `targets` (`run.batch` to a forward pass) by the service's method and stores
    /// each result, handing it with its target's index to `done` as it comes; `done`
    /// returning `Break`, or `run.stop`, ends the run. The store is not asked first: see
    /// [`Results::stored`].
    pub fn analyse(
        &self,
        classifier: &Classifier,
        targets: &[Target],
        run: Run,
        mut done: impl FnMut(usize, Fresh) -> ControlFlow<()> + Send,
    ) -> std::io::Result<()> {
        self.analyse_methods(classifier, targets, run, &[self.method], |i, mut fresh| {
            done(i, fresh.swap_remove(0))
        })
    }

    /// [`Self::analyse`] by each of `methods` (none with passes of its own) from one forward
    /// pass an image: `done` gets the image's results in the order of `methods`, each stored
    /// under its method.
    pub fn analyse_methods(
        &self,
        classifier: &Classifier,
        targets: &[Target],
        run: Run,
        methods: &[CamMethod],
        mut done: impl FnMut(usize, Vec<Fresh>) -> ControlFlow<()> + Send,
    ) -> std::io::Result<()> {
        let jobs: Vec<pipeline::Job> = targets
            .iter()
            .map(|t| pipeline::Job {
                path: t.key.path.clone(),
                pinned: t.truth,
            })
            .collect();
        let run = Run {
            resize: self.resize,
            top: analysis::TOP_K,
            ..run
        };
        // The boxes are found on the pipeline's last stage, and the records stored there.
        pipeline::analyse_all_methods(classifier, &jobs, run, methods, |i, outcome| {
            let target = &targets[i];
            let fresh = match outcome {
                Ok((analyses, size)) => methods
                    .iter()
                    .zip(analyses)
                    .map(|(&method, analysis)| {
                        let record = jobs::contain_panic(|| {
                            Ok(analysis::record(analysis, size, target.truth))
                        });
                        let not_stored = match &record {
                            Ok(record) => self.put(&target.key, method, record).err(),
                            Err(_) => None,
                        };
                        Fresh { record, not_stored }
                    })
                    .collect(),
                Err(e) => methods
                    .iter()
                    .map(|_| Fresh {
                        record: Err(e.clone()),
                        not_stored: None,
                    })
                    .collect(),
            };
            done(i, fresh)
        })
    }

    /// `target`'s record by Score-CAM, analysed now ([`pipeline::analyse_score_cam`]: its
    /// masked passes score every class of the record at once) and stored under its method;
    /// `None` when `progress` stopped the passes. The store is not asked first.
    pub fn analyse_score_cam(
        &self,
        classifier: &Classifier,
        target: &Target,
        progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
    ) -> Option<Fresh> {
        let job = pipeline::Job {
            path: target.key.path.clone(),
            pinned: target.truth,
        };
        let analysed =
            pipeline::analyse_score_cam(classifier, &job, self.resize, analysis::TOP_K, progress);
        let record = match analysed {
            Ok(None) => return None,
            Ok(Some((analysis, size))) => {
                jobs::contain_panic(|| Ok(analysis::record(analysis, size, target.truth)))
            }
            Err(e) => Err(e),
        };
        let not_stored = match &record {
            Ok(record) => self.put(&target.key, CamMethod::ScoreCam, record).err(),
            Err(_) => None,
        };
        Some(Fresh { record, not_stored })
    }

    /// The result for one target: from the store, or else analysed now and stored.
    pub fn get_or_analyse(
        &self,
        classifier: &Classifier,
        target: &Target,
    ) -> Result<Record, AnalysisError> {
        if let Some(found) = self.stored(target) {
            return Ok(found);
        }
        let mut fresh = None;
        let run = Run::new(classifier, self.resize, analysis::TOP_K);
        let ran = self.analyse(classifier, std::slice::from_ref(target), run, |_, f| {
            fresh = Some(f);
            ControlFlow::Continue(())
        });
        match (fresh, ran) {
            (Some(fresh), _) => {
                if let Some(e) = fresh.not_stored {
                    crate::log::debug(&format!(
                        "cannot store the result of {}: {}",
                        target.key.path.display(),
                        crate::model::chain(&e)
                    ));
                }
                fresh.record
            }
            (None, Err(e)) => Err(AnalysisError::Start(std::sync::Arc::new(e))),
            (None, Ok(())) => Err(AnalysisError::Unfinished),
        }
    }
}

/// The store's key for a model: the weights' SHA-256 alone for ImageNet's preprocessing and
/// names (so results stored before models of one's own keep serving), else with a digest of
/// what the model was given, since other means, crops or names give other results. A bf16
/// model's results are its own too (`+bf16`): its probabilities differ from f32's in the
/// second decimal, and a session shows what its own precision computes.
fn model_identity(
    weights_sha: String,
    preprocessing: &Preprocessing,
    classes: &Classes,
    bf16: bool,
) -> String {
    let identity = model_digest(weights_sha, preprocessing, classes);
    if bf16 {
        format!("{identity}+bf16")
    } else {
        identity
    }
}

fn model_digest(weights_sha: String, preprocessing: &Preprocessing, classes: &Classes) -> String {
    if *preprocessing == Preprocessing::default() && *classes == Classes::imagenet() {
        return weights_sha;
    }
    use sha2::Digest;
    let mut digest = sha2::Sha256::new();
    digest.update(serde_json::to_vec(preprocessing).unwrap_or_default());
    for name in classes.names() {
        digest.update(name.as_bytes());
        digest.update([0]);
    }
    let digest: String = digest.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{weights_sha}+{digest}")
}
