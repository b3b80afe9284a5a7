//! The map's method: CAM (the analysis' own maps) or another of the CAM family, whose maps
//! the inference worker makes on request. The browser keeps the maps it received, per image
//! and method, and asks for the ones the picture needs, or tells the worker to stop making
//! maps nobody wants any more (Score-CAM's passes take minutes on a CPU).

use std::collections::HashMap;
use std::sync::Arc;

use super::{AnalysisState, App, Command, escaped};
use crate::analysis::{AnalysisError, ImageKey};
use crate::background::inference::Request;
use crate::background::maps::{MapsRequest, MethodMap};
use crate::model::cam::BBox;
use crate::model::cam_methods::CamMethod;
use crate::model::{Analysis, chain};

/// One image's maps by a method other than CAM, as received.
#[derive(Debug, Clone)]
pub struct MadeMaps {
    /// The image's analysis with the method's maps in place of CAM's: what is drawn and
    /// saved. Kept for as long as the browser runs, as the render thread's cache knows an
    /// analysis by its address.
    pub analysis: Arc<Analysis>,
    /// Each class's box at the paper's threshold, in the analysis' order.
    pub boxes: Vec<Option<BBox>>,
}

/// The maps the browser last asked for and has not received.
#[derive(Debug, Clone, PartialEq)]
pub struct AskedMaps {
    pub request: MapsRequest,
    /// Score-CAM's passes done and to do, once the worker has said.
    pub progress: Option<(usize, usize)>,
}

/// Where the maps of the selected image under the chosen method stand.
#[derive(Debug, Clone, Copy)]
pub enum Maps<'a> {
    /// Ready to draw: the analysis' own maps (CAM) or the method's.
    Ready(&'a Arc<Analysis>),
    /// Asked for; Score-CAM's progress once it has any.
    Pending(Option<(usize, usize)>),
    /// The worker could not make them: why.
    Failed(&'a str),
    /// No analysis to make them of yet.
    Missing,
}

/// The maps the browser keeps.
#[derive(Debug, Default)]
pub struct MethodMaps {
    made: HashMap<(ImageKey, CamMethod), MadeMaps>,
    failed: HashMap<(ImageKey, CamMethod), String>,
    pub asked: Option<AskedMaps>,
}

impl App {
    /// The method the picture's maps are made by.
    pub fn method(&self) -> CamMethod {
        self.method
    }

    /// `a`: the next method; its maps are asked for if they are not at hand.
    pub(super) fn next_method(&mut self) {
        let all = CamMethod::ALL;
        let at = all.iter().position(|&m| m == self.method).unwrap_or(0);
        self.set_method(all[(at + 1) % all.len()]);
    }

    pub(super) fn set_method(&mut self, method: CamMethod) {
        self.method = method;
        self.request_render();
    }

    /// The maps of `analysis` (of the image `key`) by the chosen method, if they are made
    /// and still fit the analysis (the same classes).
    pub(super) fn made_maps(&self, key: &ImageKey, analysis: &Analysis) -> Option<&MadeMaps> {
        self.maps
            .made
            .get(&(key.clone(), self.method))
            .filter(|made| made.analysis.top == analysis.top)
    }

    /// The analysis to draw for image `key` whose own analysis is `analysis`: itself under
    /// CAM, else the method's maps if they are made.
    pub(super) fn drawn_analysis<'a>(
        &'a self,
        key: &ImageKey,
        analysis: &'a Arc<Analysis>,
    ) -> Option<&'a Arc<Analysis>> {
        if self.method == CamMethod::Cam {
            return Some(analysis);
        }
        self.made_maps(key, analysis).map(|made| &made.analysis)
    }

    /// Where the selected image's maps under the chosen method stand.
    pub fn maps(&self) -> Maps<'_> {
        let Some(current) = &self.current else {
            return Maps::Missing;
        };
        let AnalysisState::Done(analysis) = &current.analysis else {
            return Maps::Missing;
        };
        if let Some(drawn) = self.drawn_analysis(&current.key, analysis) {
            return Maps::Ready(drawn);
        }
        if let Some(why) = self.maps.failed.get(&(current.key.clone(), self.method)) {
            return Maps::Failed(why);
        }
        let progress = self
            .maps
            .asked
            .as_ref()
            .filter(|a| a.request.key == current.key && a.request.method == self.method)
            .and_then(|a| a.progress);
        Maps::Pending(progress)
    }

    /// The box of the shown class's map at the paper's threshold, under a method other than
    /// CAM (CAM's come with the result).
    pub(super) fn method_box(&self) -> Option<Option<BBox>> {
        let current = self.current.as_ref()?;
        let AnalysisState::Done(analysis) = &current.analysis else {
            return None;
        };
        if self.method == CamMethod::Cam {
            return None;
        }
        let made = self.made_maps(&current.key, analysis)?;
        Some(made.boxes.get(self.class).copied().flatten())
    }

    /// Asks the worker for the selected image's maps under the chosen method when they are
    /// neither at hand nor asked for; tells it to stop when the maps it is making are no
    /// longer wanted (another image, another method).
    pub(super) fn want_maps(&mut self) {
        let needed = match (self.maps(), &self.current) {
            (Maps::Pending(_), Some(current)) => match &current.analysis {
                AnalysisState::Done(analysis) => Some(MapsRequest {
                    key: current.key.clone(),
                    method: self.method,
                    classes: analysis.top.iter().map(|p| p.index).collect(),
                }),
                _ => None,
            },
            _ => None,
        };
        match (needed, &self.maps.asked) {
            (Some(needed), Some(asked)) if asked.request == needed => {}
            (Some(needed), _) => {
                self.maps.asked = Some(AskedMaps {
                    request: needed.clone(),
                    progress: None,
                });
                self.commands.push(Command::Infer(Request::Maps(needed)));
            }
            (None, Some(_)) => {
                self.maps.asked = None;
                self.commands.push(Command::Infer(Request::StopMaps));
            }
            (None, None) => {}
        }
    }

    pub(super) fn on_maps_progress(
        &mut self,
        key: &ImageKey,
        method: CamMethod,
        done: usize,
        total: usize,
    ) {
        if let Some(asked) = &mut self.maps.asked
            && asked.request.key == *key
            && asked.request.method == method
        {
            asked.progress = Some((done, total));
        }
    }

    /// Maps from the worker: kept with the image's analysis (whose classes they are of),
    /// and drawn if they are the selected image's under the chosen method.
    pub(super) fn on_maps(
        &mut self,
        key: ImageKey,
        method: CamMethod,
        result: Result<Vec<MethodMap>, AnalysisError>,
    ) {
        if self
            .maps
            .asked
            .as_ref()
            .is_some_and(|a| a.request.key == key && a.request.method == method)
        {
            self.maps.asked = None;
        }
        match result {
            Ok(maps) => {
                let Some(analysed) = self.cache.get(&key) else {
                    return;
                };
                let own = &analysed.analysis;
                let of = |class: usize| maps.iter().find(|m| m.class == class);
                let Some(found) = own
                    .top
                    .iter()
                    .map(|p| of(p.index))
                    .collect::<Option<Vec<&MethodMap>>>()
                else {
                    // Made for other classes (the analysis was redone meanwhile).
                    self.request_render();
                    return;
                };
                let analysis = Analysis {
                    cams: found.iter().map(|m| m.map.clone()).collect(),
                    ..Analysis::clone(own)
                };
                let made = MadeMaps {
                    analysis: Arc::new(analysis),
                    boxes: found.iter().map(|m| m.paper_box).collect(),
                };
                self.maps.made.insert((key.clone(), method), made);
            }
            Err(e) => {
                self.maps
                    .failed
                    .insert((key.clone(), method), escaped(&chain(&e)));
            }
        }
        if self.current.as_ref().is_some_and(|c| c.key == key) && method == self.method {
            self.request_render();
        }
    }
}
