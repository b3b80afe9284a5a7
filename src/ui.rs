//! The interactive browser's run loop: set up the terminal and its graphics protocol, start
//! the workers, then draw → wait for one event → [`App::update`] until the user quits.

pub mod app;
pub mod files;
pub(crate) mod help;
pub(crate) mod image_pane;
pub mod keys;
pub(crate) mod predictions;
pub mod review;
pub(crate) mod status;
pub(crate) mod summary;

use std::io::stdout;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::terminal::{Clear, ClearType};
use crossterm::{execute, queue};
use ratatui::DefaultTerminal;

use crate::background::dataset_reader::DatasetSource;
use crate::background::{Background, Command, inference};
use crate::jobs;
use crate::log;
use crate::provision::ModelConfig;
use crate::term::{self, Protocol, ShownPicture};
use app::{App, AppEvent};

/// What the browser is asked to show, and how.
#[derive(Debug, Clone)]
pub struct BrowseConfig {
    /// The folder to browse; the user never goes above it.
    pub dir: std::path::PathBuf,
    /// The image to select first (`camview FILE` opens FILE's folder with FILE selected).
    pub select: Option<std::path::PathBuf>,
    /// Ground truth for reviewing the folder as a dataset, as for `eval`; without them
    /// class folders are detected.
    pub labels: Option<std::path::PathBuf>,
    pub boxes: Option<std::path::PathBuf>,
    pub protocol: Protocol,
    /// Where `s` saves pictures.
    pub save_dir: std::path::PathBuf,
    /// How the maps are made at first.
    pub method: crate::model::cam_methods::CamMethod,
    /// The result store; `None`: keep nothing.
    pub store: Option<std::path::PathBuf>,
    pub model: ModelConfig,
}

/// How often the spinner moves while something is in progress.
const TICK: Duration = Duration::from_millis(100);

/// Runs the browser on `args.dir` until the user quits.
pub fn run(args: &BrowseConfig) -> anyhow::Result<()> {
    log::init();
    // Validate before touching the terminal, so errors print normally.
    let meta = std::fs::metadata(&args.dir)
        .with_context(|| format!("cannot open {}", args.dir.display()))?;
    anyhow::ensure!(meta.is_dir(), "{} is not a folder", args.dir.display());

    let mut terminal = ratatui::init();
    install_mouse_restoring_panic_hook();
    let _ = execute!(stdout(), EnableMouseCapture);
    let result = browse(&mut terminal, args);
    let _ = execute!(stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

/// `ratatui::init` restores the screen on panic; mouse reporting must be switched off too.
/// A worker's panic is caught there and shown as that job's error, so the screen stays.
fn install_mouse_restoring_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if thread.name().is_some_and(jobs::is_contained) {
            log::debug(&format!("contained panic: {info}"));
            return;
        }
        let _ = execute!(stdout(), DisableMouseCapture);
        previous(info);
    }));
}

fn browse(terminal: &mut DefaultTerminal, args: &BrowseConfig) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<AppEvent>();
    // The model starts loading at once, in parallel with everything below.
    let events = tx.clone();
    let dataset = DatasetSource {
        root: args.dir.clone(),
        labels: args.labels.clone(),
        boxes: args.boxes.clone(),
    };
    let mut background =
        Background::start(args.model.clone(), args.store.clone(), dataset, move |e| {
            events.send(e.into()).is_ok()
        })?;
    let mut app = App::new(&args.dir, "detecting graphics…", terminal.size()?);
    app.update(AppEvent::SaveDir(args.save_dir.clone()));
    app.update(AppEvent::Method(args.method));
    if let Some(path) = &args.select {
        app.update(AppEvent::SelectOnArrival(path.clone()));
    }
    // The folder is read while the terminal is asked about graphics (which a silent
    // terminal makes wait).
    for request in app.take_listings() {
        background.dispatch(Command::List(request));
    }
    // A first frame before the graphics query, which a silent terminal makes wait.
    terminal.draw(|frame| frame.render_widget(&app, frame.area()))?;
    log::debug("first frame drawn");

    let graphics = term::detect(args.protocol);
    app.update(AppEvent::Protocol(
        term::protocol_name(&graphics.picker).to_string(),
    ));
    let mut shown = ShownPicture::new(&graphics.picker);
    // The picker's query is done, so nothing else reads stdin.
    spawn_input(tx)?;
    background.start_renderer(graphics)?;
    let mut key_at: Option<Instant> = None;
    loop {
        dispatch(&mut app, &mut background);
        let drawing = Instant::now();
        if shown.moves_to(app.picture_area()) {
            // Erase the old picture's pixels: the whole screen is drawn again.
            erase(terminal)?;
        }
        terminal.draw(|frame| frame.render_widget(&app, frame.area()))?;
        if let Some(at) = key_at.take() {
            log::debug(&format!("key → frame in {:?}", at.elapsed()));
        } else if log::enabled() {
            log::debug(&format!("frame drawn in {:?}", drawing.elapsed()));
        }
        let timeout = if app.is_busy() {
            TICK
        } else {
            Duration::from_secs(3600)
        };
        let event = match rx.recv_timeout(timeout) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => AppEvent::Tick,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if log::enabled() {
            trace(&event, &mut key_at);
        }
        app.update(event);
        // Apply whatever else has queued up (key repeat, results) before the next frame.
        while let Ok(event) = rx.try_recv() {
            app.update(event);
        }
        if app.should_quit() {
            // A save asked for just before `q` still happens (the other work is dropped).
            dispatch(&mut app, &mut background);
            break;
        }
    }
    Ok(())
}

/// Hands the work the app recorded to the background threads.
fn dispatch(app: &mut App, background: &mut Background) {
    for command in app.take_commands() {
        background.dispatch(command);
    }
}

/// Terminal events arrive on a thread of their own, so the loop waits on one channel.
fn spawn_input(events: mpsc::Sender<AppEvent>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("camview-input".into())
        .spawn(move || {
            while let Ok(event) = crossterm::event::read() {
                if events.send(AppEvent::Input(event)).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

/// Erases the screen and forgets what was on it, so the next frame is drawn whole. The erase
/// is only queued: it reaches the terminal with that frame, in one write, so no blank screen
/// shows in between. Not `Terminal::clear`: that first asks the terminal where the cursor is,
/// and the answer goes to the input thread's reader instead, so it would wait for the next key.
fn erase(terminal: &mut DefaultTerminal) -> std::io::Result<()> {
    queue!(terminal.backend_mut(), Clear(ClearType::All))?;
    terminal.swap_buffers();
    Ok(())
}

fn trace(event: &AppEvent, key_at: &mut Option<Instant>) {
    match event {
        AppEvent::Input(crossterm::event::Event::Key(k)) => {
            log::debug(&format!("key {:?}", k.code));
            *key_at = Some(Instant::now());
        }
        AppEvent::Render(r) => log::debug(&format!("render #{} arrived", r.ticket)),
        AppEvent::Worker(inference::WorkerEvent::Analysis { key, .. }) => {
            log::debug(&format!("analysis of {} arrived", key.path.display()));
        }
        AppEvent::Worker(inference::WorkerEvent::Model(m)) => match m {
            // Not its classes' thousand names.
            inference::ModelStatus::Ready { device, classes } => log::debug(&format!(
                "model: ready on {device}, {} classes",
                classes.len()
            )),
            other => log::debug(&format!("model: {other:?}")),
        },
        _ => {}
    }
}
