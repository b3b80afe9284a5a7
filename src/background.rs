//! Everything slow the browser does, off the UI thread, in one place (as gitui keeps its slow
//! work in `asyncgit`): the model and its analyses ([`inference`], with the dataset sweep),
//! pictures for the terminal ([`render`]), folder listings ([`listing`]), saving pictures
//! ([`save`]) and reading a dataset's ground truth ([`dataset_reader`]). Each runs on a
//! thread of its own over [`crate::jobs`]; the UI hands them [`Command`]s and hears back
//! through [`Event`]s. Nothing here knows the UI's state or draws anything.

pub mod dataset_reader;
pub mod inference;
pub mod listing;
pub mod maps;
pub mod render;
pub mod save;
mod sweep;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::jobs;
use crate::model::Classes;
use crate::provision::ModelConfig;
use crate::term::Graphics;
use dataset_reader::{DatasetSource, LoadedDataset, ReadError};
use inference::{InferenceWorker, ModelStatus, Request, WorkerEvent};
use listing::{ListRequest, Lister, Listing};
use render::{RenderEvent, RenderRequest, Renderer};
use save::{SaveError, SaveRequest};

/// Work the UI asks of the background threads.
#[derive(Debug, Clone)]
pub enum Command {
    /// Read a folder.
    List(ListRequest),
    Infer(Request),
    Render(RenderRequest),
    /// Pictures to make ahead of time (the neighbours of the one shown).
    Prepare(Vec<RenderRequest>),
    /// Write the picture shown as a PNG.
    Save(SaveRequest),
    /// Read the folder's ground truth again (answered by [`Event::Dataset`]; once the model
    /// is ready, as its classes are what the truth is read against).
    ReadDataset,
}

/// What the background threads report.
#[derive(Debug)]
pub enum Event {
    /// News from the inference worker.
    Inference(WorkerEvent),
    /// A picture from the render thread.
    Render(RenderEvent),
    /// A folder's entries from the listing thread.
    Listed(Listing),
    /// Where a saved picture went, or why it could not be saved.
    Saved(Result<PathBuf, SaveError>),
    /// The folder's ground truth (or why its labels could not be read).
    Dataset(Result<Box<LoadedDataset>, ReadError>),
}

/// Where the background threads report; false once nobody listens.
type Notify = Arc<dyn Fn(Event) -> bool + Send + Sync>;

/// The threads the UI hands work to. Dropping it stops them after their current job, and
/// waits for the saves under way, so no file is left half written.
pub struct Background {
    lister: Lister,
    inference: InferenceWorker,
    /// Started once the terminal's graphics are known ([`Background::start_renderer`]).
    renderer: Option<Renderer>,
    notify: Notify,
    saves: Vec<std::thread::JoinHandle<()>>,
    dataset: Arc<DatasetReading>,
}

/// The folder whose ground truth is read, and the model's classes once it is ready: the
/// truth is read against them, so not before.
struct DatasetReading {
    source: DatasetSource,
    classes: Mutex<Option<Arc<Classes>>>,
}

impl DatasetReading {
    /// Reads the ground truth on a thread of its own, if the model's classes are known.
    fn read(&self, notify: &Notify) -> std::io::Result<()> {
        let classes = self
            .classes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(classes) = classes else {
            return Ok(());
        };
        let to = Arc::clone(notify);
        dataset_reader::spawn(&self.source, classes, move |loaded| {
            to(Event::Dataset(loaded));
        })
    }
}

impl Background {
    /// Starts the inference worker (the model loads at once), the folder lister and, once
    /// the model is ready, the reading of `dataset`'s ground truth against its classes;
    /// every report goes to `notify`.
    pub fn start(
        model: ModelConfig,
        store: Option<PathBuf>,
        dataset: DatasetSource,
        notify: impl Fn(Event) -> bool + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let notify: Notify = Arc::new(notify);
        // Without a labels file, class folders may name a model nothing else names.
        let class_folders = dataset.labels.is_none().then(|| dataset.root.clone());
        let dataset = Arc::new(DatasetReading {
            source: dataset,
            classes: Mutex::new(None),
        });
        let to = Arc::clone(&notify);
        let reading = Arc::clone(&dataset);
        let inference = inference::spawn(model, store, class_folders, move |e| {
            let ready = match &e {
                WorkerEvent::Model(ModelStatus::Ready { classes, .. }) => Some(Arc::clone(classes)),
                _ => None,
            };
            let listening = to(Event::Inference(e));
            if let Some(classes) = ready {
                *reading
                    .classes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(classes);
                if let Err(e) = reading.read(&to) {
                    to(Event::Dataset(Err(ReadError::Start(e))));
                }
            }
            listening
        })?;
        let to = Arc::clone(&notify);
        let lister = Lister::spawn(move |l| to(Event::Listed(l)))?;
        let background = Self {
            lister,
            inference,
            renderer: None,
            notify,
            saves: Vec::new(),
            dataset,
        };
        Ok(background)
    }

    /// Starts the render thread for the terminal's `graphics`; pictures asked for before
    /// are not made.
    pub fn start_renderer(&mut self, graphics: impl Into<Graphics>) -> std::io::Result<()> {
        let to = Arc::clone(&self.notify);
        self.renderer = Some(Renderer::spawn(graphics, move |e| to(Event::Render(e)))?);
        Ok(())
    }

    /// Hands `command` to its thread (each keeps only its newest request); every save gets a
    /// thread of its own. A thread that cannot be started is reported as its work's failure.
    pub fn dispatch(&mut self, command: Command) {
        match command {
            Command::List(request) => self.lister.send(request),
            Command::Infer(request) => self.inference.send(request),
            Command::Render(request) => {
                if let Some(renderer) = &self.renderer {
                    renderer.send(request);
                }
            }
            Command::Prepare(requests) => {
                if let Some(renderer) = &self.renderer {
                    renderer.prepare(requests);
                }
            }
            Command::ReadDataset => {
                if let Err(e) = self.read_dataset() {
                    (self.notify)(Event::Dataset(Err(ReadError::Start(e))));
                }
            }
            Command::Save(request) => {
                let to = Arc::clone(&self.notify);
                let saving = jobs::spawn_contained("camview-save", move || {
                    to(Event::Saved(jobs::contain_panic(|| request.run())));
                });
                match saving {
                    Ok(thread) => self.saves.push(thread),
                    Err(e) => {
                        (self.notify)(Event::Saved(Err(SaveError::Start(e))));
                    }
                }
            }
        }
        self.saves.retain(|thread| !thread.is_finished());
    }

    fn read_dataset(&self) -> std::io::Result<()> {
        self.dataset.read(&self.notify)
    }
}

impl Drop for Background {
    /// However the browser ends, the saves under way finish first.
    fn drop(&mut self) {
        for thread in self.saves.drain(..) {
            let _ = thread.join();
        }
    }
}
