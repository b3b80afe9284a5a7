//! What flows into the browser ([`AppEvent`], through [`App::update`]) and out of it ([`Command`]s for the background threads).

use super::*;

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
    Saved(Result<PathBuf, String>),
    /// The folder's ground truth, read in the background: the folder is then reviewed as
    /// a dataset (or why its labels could not be read).
    Dataset(Result<Box<LoadedDataset>, String>),
    /// Time passes (animates the spinner while something is in progress).
    Tick,
    /// The graphics protocol the terminal was found to speak, for the status line.
    Protocol(String),
    /// Where `s` writes from now on.
    SaveDir(PathBuf),
    /// Select this file once its folder's listing arrives (`camview FILE`).
    SelectOnArrival(PathBuf),
}

/// Work the event loop hands to the background threads.
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
    /// Read the folder's ground truth again (answered by [`AppEvent::Dataset`]).
    ReadDataset,
}
