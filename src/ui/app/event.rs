//! What flows into the browser: [`AppEvent`]s, through [`App::update`]; what flows out are
//! [`Command`]s for the background threads.

use std::path::PathBuf;

use crossterm::event::Event;

use crate::background;
use crate::background::dataset_reader::{LoadedDataset, ReadError};
use crate::background::inference::WorkerEvent;
use crate::background::listing::Listing;
use crate::background::render::RenderEvent;
use crate::background::save::SaveError;

/// Everything the event loop feeds into [`App::update`].
#[derive(Debug)]
pub enum AppEvent {
    /// A key, mouse or resize event from the terminal.
    Input(Event),
    /// News from the inference worker.
    Worker(WorkerEvent),
    /// A picture from the render thread.
    Render(RenderEvent),
    /// A folder's entries from the listing thread.
    Listed(Listing),
    /// Where a saved picture went, or why it could not be saved.
    Saved(Result<PathBuf, SaveError>),
    /// The folder's ground truth, read in the background: the folder is then reviewed as
    /// a dataset (or why its labels could not be read).
    Dataset(Result<Box<LoadedDataset>, ReadError>),
    /// Time passes (animates the spinner while something is in progress).
    Tick,
    /// The graphics protocol the terminal was found to speak, for the status line.
    Protocol(String),
    /// Where `s` writes from now on.
    SaveDir(PathBuf),
    /// Make the maps by this method from now on (`--method`).
    Method(crate::model::cam_methods::CamMethod),
    /// Select this file once its folder's listing arrives (`camview FILE`).
    SelectOnArrival(PathBuf),
}

impl From<background::Event> for AppEvent {
    fn from(event: background::Event) -> Self {
        match event {
            background::Event::Inference(e) => Self::Worker(e),
            background::Event::Render(e) => Self::Render(e),
            background::Event::Listed(l) => Self::Listed(l),
            background::Event::Saved(result) => Self::Saved(result),
            background::Event::Dataset(result) => Self::Dataset(result),
        }
    }
}
