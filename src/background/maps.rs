//! The CAM family in the browser, on the inference thread: the maps of a method other than
//! CAM for the classes of one image. They are made from the image's layer-4 read-back, kept
//! for the last few images, so that cycling through the closed-form methods runs no forward
//! pass; Score-CAM adds its masked passes, in batches, reporting progress after each and
//! stopping before the next once the UI wants something else.

use std::ops::ControlFlow;
use std::sync::Arc;

use crate::analysis::{self, AnalysisError, ImageKey, Record};
use crate::model::cam::{BBox, CamGrid};
use crate::model::cam_methods::CamMethod;
use crate::model::classifier::ReadBack;
use crate::model::preprocess::Prepared;
use crate::model::{Analysis, Classifier, ResizeMode};

/// The maps of `method` for `classes` of the image `key` (the classes its table shows).
#[derive(Debug, Clone, PartialEq)]
pub struct MapsRequest {
    pub key: ImageKey,
    pub method: CamMethod,
    pub classes: Vec<usize>,
}

/// One class's map by a method, and the box it gives at the paper's threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodMap {
    pub class: usize,
    /// The raw map on the layer-4 grid, as [`Analysis::cams`] holds CAM's.
    pub map: CamGrid,
    /// The box at 20 % of the map's maximum (largest region), in photo pixels, found as the
    /// stored CAM boxes are ([`analysis::paper_box`]).
    pub paper_box: Option<BBox>,
}

/// Read-backs kept: a few images' worth (a ResNet-50's is 2048 × 7 × 11 floats, its input
/// 3 × 224 × 337), so going back and forth among neighbours costs no pass either.
const KEPT: usize = 4;

/// One image's forward pass, kept for its maps.
struct Looked {
    key: ImageKey,
    /// The network input (Score-CAM masks it).
    prepared: Prepared,
    read: ReadBack,
    /// The photo's size, for boxes in its pixels.
    size: (u32, u32),
}

/// The read-backs of the last [`KEPT`] images whose maps were asked for, most recent last.
#[derive(Default)]
pub struct ReadBacks(Vec<Arc<Looked>>);

impl ReadBacks {
    /// The read-back of `key`: kept, or made now with one forward pass.
    fn get_or_read(
        &mut self,
        classifier: &Classifier,
        resize: ResizeMode,
        key: &ImageKey,
    ) -> Result<Arc<Looked>, AnalysisError> {
        if let Some(at) = self.0.iter().position(|l| l.key == *key) {
            let looked = self.0.remove(at);
            self.0.push(Arc::clone(&looked));
            return Ok(looked);
        }
        let (img, prepared) = analysis::prepare(&key.path, resize, classifier)?;
        let read = classifier.read_back(&prepared)?;
        let looked = Arc::new(Looked {
            key: key.clone(),
            prepared,
            read,
            size: img.dimensions(),
        });
        if self.0.len() >= KEPT {
            self.0.remove(0);
        }
        self.0.push(Arc::clone(&looked));
        Ok(looked)
    }
}

/// The maps `request` asks for, `None` when `progress` stopped Score-CAM's passes (it is
/// called with the passes done and to do before the first batch, so the total shows at
/// once, and after each; closed-form methods call it never).
pub fn make(
    classifier: &Classifier,
    resize: ResizeMode,
    kept: &mut ReadBacks,
    request: &MapsRequest,
    progress: &mut dyn FnMut(usize, usize) -> ControlFlow<()>,
) -> Result<Option<Vec<MethodMap>>, AnalysisError> {
    let looked = kept.get_or_read(classifier, resize, &request.key)?;
    let maps = if request.method.needs_forward_passes() {
        if progress(0, looked.read.map().channels).is_break() {
            return Ok(None);
        }
        let batch = crate::pipeline::score_cam_batch(classifier.device());
        let made = classifier.score_cam_maps(
            &looked.prepared,
            &looked.read,
            &request.classes,
            batch,
            progress,
        )?;
        match made {
            Some(maps) => maps,
            None => return Ok(None),
        }
    } else {
        let mut maps = Vec::with_capacity(request.classes.len());
        for &class in &request.classes {
            maps.extend(classifier.closed_form_map(&looked.read, class, request.method)?);
        }
        maps
    };
    // The boxes, found as a stored analysis's are: on the maps placed where the input lies.
    let placed = Analysis {
        top: Vec::new(),
        cams: maps,
        input: looked.prepared.input,
        region: looked.prepared.region,
        elapsed: Default::default(),
    };
    let made = request
        .classes
        .iter()
        .enumerate()
        .map(|(slot, &class)| MethodMap {
            class,
            map: placed.cams[slot].clone(),
            paper_box: analysis::paper_box(&placed, slot, looked.size),
        })
        .collect();
    Ok(Some(made))
}

/// The maps of a stored record (Score-CAM's, by `eval` or an earlier session), one for each
/// class of its analysis in order, with their boxes found as [`make`] finds them.
pub fn from_record(record: &Record) -> Vec<MethodMap> {
    let analysis = &record.analysis;
    analysis
        .top
        .iter()
        .enumerate()
        .map(|(slot, p)| MethodMap {
            class: p.index,
            map: analysis.cams[slot].clone(),
            paper_box: analysis::paper_box(analysis, slot, record.size),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::classifier::DeviceChoice;

    /// A tiny ResNet of the model tests (5 classes, 32 feature channels), on the CPU.
    fn tiny() -> Classifier {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models/bottleneck.safetensors");
        Classifier::load(&path, None, DeviceChoice::Cpu.open().unwrap()).unwrap()
    }

    fn chelsea() -> ImageKey {
        ImageKey::of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("images/chelsea.png"))
    }

    #[test]
    fn score_cam_stops_before_its_next_batch_when_told() {
        let classifier = tiny();
        let request = MapsRequest {
            key: chelsea(),
            method: CamMethod::ScoreCam,
            classes: vec![0, 3],
        };
        let mut kept = ReadBacks::default();
        let mut calls = Vec::new();
        let stopped = make(
            &classifier,
            ResizeMode::Full,
            &mut kept,
            &request,
            &mut |done, total| {
                calls.push((done, total));
                if done == 0 {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            },
        )
        .unwrap();
        assert!(stopped.is_none());
        let batch = crate::pipeline::score_cam_batch(classifier.device());
        let channels = kept.0[0].read.map().channels;
        assert!(channels > batch, "the test needs more than one batch");
        assert_eq!(
            calls,
            [(0, channels), (batch, channels)],
            "the total, one batch, then it stopped"
        );

        // Left alone, it scores every channel once for both classes: the engine's maps.
        let mut calls = 0;
        let maps = make(
            &classifier,
            ResizeMode::Full,
            &mut kept,
            &request,
            &mut |_, _| {
                calls += 1;
                ControlFlow::Continue(())
            },
        )
        .unwrap()
        .unwrap();
        assert_eq!(calls, 1 + channels.div_ceil(batch));
        let img = crate::model::preprocess::load_rgb(&request.key.path).unwrap();
        let prepared = classifier.prepare(&img, ResizeMode::Full).unwrap();
        let engine = classifier
            .method_maps(
                &prepared,
                &[0, 3],
                CamMethod::ScoreCam,
                batch,
                &mut |_, _| ControlFlow::Continue(()),
            )
            .unwrap()
            .unwrap();
        assert_eq!(maps.len(), 2);
        for (made, engine) in maps.iter().zip(&engine) {
            assert_eq!(made.map, *engine);
        }
        assert_eq!((maps[0].class, maps[1].class), (0, 3));
    }
}
