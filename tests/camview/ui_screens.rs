//! Whole screens of the browser, step by step: the `App` is driven by events as the run loop
//! would, its inference requests answered by the genuine model, its pictures made by the real
//! render thread (half blocks), and each screen drawn into a `TestBackend` and snapshotted.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use camview::analysis;
use camview::analysis::{AnalysisError, ImageKey};
use camview::background::dataset_reader;
use camview::background::inference::{Analysed, ModelStatus, Request, SweepProgress, WorkerEvent};
use camview::background::maps::{MapsRequest, ReadBacks};
use camview::background::render::{RenderEvent, Renderer};
use camview::model::cam_methods::CamMethod;
use camview::model::preprocess::load_rgb;
use camview::model::{Classes, ResizeMode};
use camview::provision::ModelConfig;
use camview::results::Target;
use camview::ui::app::{AnalysisState, App, AppEvent, Command};
use camview::ui::files::ListRequest;
use crossterm::event::{
    Event, KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::{Rect, Size};
use ratatui::style::Color;
use ratatui_image::picker::Picker;

use crate::common::classifier;

/// The forward time shown on screen, fixed so snapshots do not depend on the machine.
const ELAPSED: Duration = Duration::from_millis(123);

/// An `App` with its background work done in the test thread (inference) and the real
/// render thread.
struct Harness {
    app: App,
    terminal: Terminal<TestBackend>,
    renderer: Renderer,
    rendered: Receiver<RenderEvent>,
    /// Answer inference requests as they come (else they pile up in `waiting`).
    model_ready: bool,
    waiting: Vec<ImageKey>,
    /// The maps asked for and not answered yet, as the worker keeps them.
    maps_waiting: Option<MapsRequest>,
    /// The layer-4 read-backs the worker would keep.
    read_backs: ReadBacks,
    /// Score-CAM's maps asked for (the harness does not make them).
    held_maps: Option<MapsRequest>,
    /// Every inference request seen, in order.
    requests: Vec<Request>,
    /// The images whose pictures were asked for ahead of time, by request.
    prepared: Vec<Vec<PathBuf>>,
    /// The background sweep asked for, if any.
    sweep: Option<Arc<Vec<Target>>>,
    /// How often the dataset was asked to be read again.
    dataset_reads: usize,
    /// Keep folder listings in `listings` instead of reading them (a slow disk).
    hold_listings: bool,
    listings: Vec<ListRequest>,
}

impl Harness {
    fn new(dir: &Path, width: u16, height: u16) -> Self {
        Self::with_listings(dir, width, height, false)
    }

    /// Like [`Harness::new`], with every folder listing held until [`Harness::list`].
    fn holding_listings(dir: &Path, width: u16, height: u16) -> Self {
        Self::with_listings(dir, width, height, true)
    }

    fn with_listings(dir: &Path, width: u16, height: u16, hold_listings: bool) -> Self {
        let (tx, rendered) = mpsc::channel();
        let renderer = Renderer::spawn(Picker::halfblocks(), move |e| tx.send(e).is_ok()).unwrap();
        let mut h = Self {
            app: App::new(dir, "halfblocks", Size::new(width, height)),
            terminal: Terminal::new(TestBackend::new(width, height)).unwrap(),
            renderer,
            rendered,
            model_ready: false,
            waiting: Vec::new(),
            maps_waiting: None,
            read_backs: ReadBacks::default(),
            held_maps: None,
            requests: Vec::new(),
            prepared: Vec::new(),
            sweep: None,
            dataset_reads: 0,
            hold_listings,
            listings: Vec::new(),
        };
        h.settle();
        h
    }

    /// Reads the held listing number `i` (in the order asked) and hands it to the app.
    fn list(&mut self, i: usize) {
        let listing = self.listings[i].clone().run();
        self.event(AppEvent::Listed(listing));
    }

    /// Applies `event`, then does the work it asked for until nothing is left.
    fn event(&mut self, event: AppEvent) {
        self.app.update(event);
        self.settle();
    }

    fn key(&mut self, code: KeyCode) {
        self.event(AppEvent::Input(Event::Key(KeyEvent::new(
            code,
            KeyModifiers::NONE,
        ))));
    }

    fn chars(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    /// The true class the app's review gives `path`.
    fn truth_of(&self, path: &Path) -> Option<usize> {
        self.app.review()?.truth_at(path).map(|t| t.class)
    }

    /// Runs the sweep asked for: every target's result, `per_event` to an event, as the
    /// worker sends results it finds in the store.
    fn run_sweep(&mut self, per_event: usize) {
        let targets = self.sweep.clone().expect("a sweep was asked for");
        let total = targets.len();
        for (n, chunk) in targets.chunks(per_event).enumerate() {
            let results = chunk
                .iter()
                .map(|t| (t.key.clone(), analyze(&t.key.path, t.truth)))
                .collect();
            let done = (n * per_event + chunk.len()).min(total);
            self.event(AppEvent::Worker(WorkerEvent::Swept {
                results,
                progress: SweepProgress {
                    done,
                    total,
                    per_second: Some(20.0),
                },
            }));
        }
    }

    /// The model becomes ready: answer the requests made so far, and all later ones.
    fn model_ready(&mut self) {
        self.model_ready = true;
        self.event(AppEvent::Worker(WorkerEvent::Model(ModelStatus::Ready {
            device: "cpu".into(),
            classes: Arc::new(Classes::imagenet()),
        })));
    }

    fn settle(&mut self) {
        loop {
            let commands = self.app.take_commands();
            let idle = self.waiting.is_empty() && self.maps_waiting.is_none();
            if commands.is_empty() && (!self.model_ready || idle) {
                return;
            }
            let mut last_render = None;
            for command in commands {
                match command {
                    // Read in this thread: the screens are shown once the folder is in.
                    Command::List(request) if self.hold_listings => self.listings.push(request),
                    Command::List(request) => self.app.update(AppEvent::Listed(request.run())),
                    Command::Infer(request) => {
                        // Like the worker's mailbox: a new request replaces the waiting one.
                        match &request {
                            Request::Analyze(key) => self.waiting = vec![key.clone()],
                            Request::Prefetch(_) => self.waiting = Vec::new(),
                            // Kept apart, as the worker keeps it: run by `Harness::sweep`.
                            Request::Sweep(targets) => self.sweep = Some(Arc::clone(targets)),
                            // Score-CAM's passes take minutes: held, for the test to answer.
                            Request::Maps(maps) if maps.method.needs_forward_passes() => {
                                self.maps_waiting = None;
                                self.held_maps = Some(maps.clone());
                            }
                            Request::Maps(maps) => {
                                self.maps_waiting = Some(maps.clone());
                                self.held_maps = None;
                            }
                            Request::StopMaps => {
                                self.maps_waiting = None;
                                self.held_maps = None;
                            }
                        }
                        self.requests.push(request);
                    }
                    Command::Render(request) => {
                        last_render = Some(request.ticket);
                        self.renderer.send(request);
                    }
                    Command::Prepare(requests) => self
                        .prepared
                        .push(requests.into_iter().map(|r| r.key.path).collect()),
                    // In this thread, as the run loop's save thread would.
                    Command::Save(request) => self.app.update(AppEvent::Saved(request.run())),
                    Command::ReadDataset => self.dataset_reads += 1,
                }
            }
            if let Some(ticket) = last_render {
                // Earlier requests may have been replaced in the mailbox: wait for the last.
                loop {
                    let event = self
                        .rendered
                        .recv_timeout(Duration::from_secs(30))
                        .expect("render thread answers");
                    let done = event.ticket == ticket;
                    self.app.update(AppEvent::Render(event));
                    if done {
                        break;
                    }
                }
            }
            if self.model_ready {
                // The maps first, as the worker makes them.
                if let Some(request) = self.maps_waiting.take() {
                    let result = camview::background::maps::make(
                        classifier(),
                        ResizeMode::Full,
                        &mut self.read_backs,
                        &request,
                        &mut |_, _| std::ops::ControlFlow::Continue(()),
                    )
                    .map(Option::unwrap);
                    self.app.update(AppEvent::Worker(WorkerEvent::Maps {
                        key: request.key,
                        method: request.method,
                        result,
                    }));
                }
                for key in std::mem::take(&mut self.waiting) {
                    let truth = self.truth_of(&key.path);
                    let result = analyze(&key.path, truth);
                    self.app
                        .update(AppEvent::Worker(WorkerEvent::Analysis { key, result }));
                }
            }
        }
    }

    /// The screen as text, the picture's cells shown as `▒`: where the picture sits and how
    /// big it is are part of the snapshot, its half-block pattern (which the last bits of the
    /// model's floating point could flip) is not.
    fn screen(&mut self) -> String {
        self.draw();
        let area = self.picture_area();
        let mut buffer = self.terminal.backend().buffer().clone();
        for position in area.into_iter().flat_map(|a| a.positions()) {
            buffer[position].set_symbol("▒");
        }
        // The format of `TestBackend`'s `Display`: one quoted line per row.
        let width = usize::from(buffer.area.width);
        buffer
            .content
            .chunks(width)
            .map(|row| {
                format!(
                    "\"{}\"\n",
                    row.iter().map(|c| c.symbol()).collect::<String>()
                )
            })
            .collect()
    }

    fn draw(&mut self) {
        self.terminal
            .draw(|frame| frame.render_widget(&self.app, frame.area()))
            .unwrap();
    }

    /// Where the picture is drawn, if it is.
    fn picture_area(&self) -> Option<Rect> {
        self.app.picture_area()
    }

    /// The colours of the picture's cells, as drawn.
    fn picture_colors(&mut self) -> Vec<(Color, Color)> {
        self.draw();
        let area = self.picture_area().expect("a picture");
        let buffer = self.terminal.backend().buffer();
        area.positions()
            .map(|p| (buffer[p].fg, buffer[p].bg))
            .collect()
    }

    /// The screen's line that contains `needle`.
    fn line_with(&mut self, needle: &str) -> String {
        let screen = self.screen();
        screen
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
            .to_string()
    }
}

/// What the worker would answer, with a fixed time.
/// The model of the weights file `weights`, on the CPU, never fetched.
/// The network at `weights` on the CPU, in-process, as the engine's own reference.
fn cpu_classifier(weights: &Path) -> camview::model::Classifier {
    camview::model::Classifier::load(
        weights,
        None,
        camview::model::classifier::DeviceChoice::Cpu
            .open()
            .unwrap(),
    )
    .unwrap()
}

fn cpu_model(weights: PathBuf) -> ModelConfig {
    ModelConfig {
        weights,
        fetch_if_missing: false,
        arch: None,
        classes: None,
        mean: None,
        std: None,
        resize: ResizeMode::Full,
        device: camview::model::classifier::DeviceChoice::Cpu,
        precision: camview::model::classifier::Precision::F32,
    }
}

/// What the inference worker answers for `path`, `truth` pinned when given.
fn analyze(path: &Path, truth: Option<usize>) -> Result<Analysed, AnalysisError> {
    let c = classifier();
    let (img, prepared) = analysis::prepare(path, ResizeMode::Full, c)?;
    let mut record = analysis::analyse(c, img.dimensions(), &prepared, truth).unwrap();
    record.analysis.elapsed = ELAPSED;
    Ok(record.into())
}

/// A folder below the package root (tests run there), so paths on screen are the same on
/// every machine. Rebuilt from scratch by each call: one test each.
fn fixture(name: &str, build: impl FnOnce(&Path)) -> PathBuf {
    let dir = PathBuf::from("target/ui-fixtures").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    build(&dir);
    dir
}

fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| PathBuf::from("images"))
}

#[test]
fn browsing_session_step_by_step() {
    let mut h = Harness::new(images(), 100, 30);
    // Start: the first image is selected, its picture drawn, its result asked for; the model
    // is still loading.
    assert!(matches!(
        h.requests.as_slice(),
        [Request::Analyze(k)] if k.path.ends_with("astronaut.png")
    ));
    insta::assert_snapshot!("start", h.screen());

    // The model is ready and answers: the table and the overlay appear, neighbours are
    // prefetched.
    h.model_ready();
    insta::assert_snapshot!("astronaut_analysed", h.screen());
    assert!(
        h.requests
            .iter()
            .any(|r| matches!(r, Request::Prefetch(keys) if keys.len() == 2)),
        "{:?}",
        h.requests
    );

    // Down: chelsea, the Egyptian cat, from the cache or the model.
    h.key(KeyCode::Char('j'));
    assert!(h.line_with("▶1").contains("Egyptian cat"));
    // Its final picture shown, the analysed neighbour's picture is made ahead of time.
    assert_eq!(
        h.prepared.last().unwrap(),
        &[PathBuf::from("images/astronaut.png")]
    );
    insta::assert_snapshot!("chelsea", h.screen());

    // `2` shows the CAM of the second class, Tab the third.
    h.key(KeyCode::Char('2'));
    assert!(h.line_with("▶2").contains("tiger cat"));
    assert!(h.line_with("CAM of").contains("CAM of tiger cat"));
    insta::assert_snapshot!("chelsea_class_2", h.screen());
    h.key(KeyCode::Tab);
    assert_eq!(h.app.class(), 2);
    assert!(h.line_with("▶3").contains("tabby"));

    // Style keys change what is drawn, and the predictions title says so.
    let overlay = h.picture_colors();
    h.key(KeyCode::Char('v'));
    let original = h.picture_colors();
    h.key(KeyCode::Char('v'));
    let heat = h.picture_colors();
    h.key(KeyCode::Char('v'));
    let grid = h.picture_colors();
    assert!(h.line_with("CAMs of the top 5").contains("chelsea.png"));
    insta::assert_snapshot!("chelsea_grid", h.screen());
    h.key(KeyCode::Char('v'));
    assert_eq!(
        h.picture_colors(),
        overlay,
        "overlay again after a full cycle"
    );
    assert!(overlay != original && heat != original && heat != overlay);
    assert!(grid != overlay && grid != original && grid != heat);
    // The picture fills the pane in one direction and keeps the photo's 451:300 aspect
    // (half blocks: a cell is 1 pixel wide and 2 high, as the picker's 10×20 font says).
    let area = h.picture_area().unwrap();
    let pane = h.app.panes().unwrap().picture();
    assert!(
        area.width == pane.width || area.height == pane.height,
        "{area:?} in {pane:?}"
    );
    let aspect = f64::from(area.width) / f64::from(area.height * 2);
    assert!((aspect - 451.0 / 300.0).abs() < 0.1, "aspect {aspect}");
    h.chars("vc+b");
    assert!(
        h.line_with("Predictions")
            .contains("original · turbo · α 0.6 · box")
    );
    h.chars("vvv-");
    assert!(
        h.line_with("Predictions")
            .contains("overlay · turbo · α 0.5 · box")
    );

    // Help lists the keys; any key closes it.
    h.key(KeyCode::Char('?'));
    insta::assert_snapshot!("help", h.screen());
    h.key(KeyCode::Char('x'));
    assert!(!h.app.help());

    // End selects the last file; its mark appears once analysed.
    h.key(KeyCode::End);
    assert!(h.line_with("▶1").contains("drilling platform"));
    assert!(h.line_with("▶ rocket.jpg").contains("│✓▶ rocket.jpg"));

    // The terminal shrinks below the minimum, then grows back.
    h.event(AppEvent::Input(Event::Resize(50, 10)));
    insta::assert_snapshot!("too_small", h.screen_resized(50, 10));
    h.event(AppEvent::Input(Event::Resize(100, 30)));
    h.screen_resized(100, 30);
    assert!(h.line_with("rocket.jpg │").contains("halfblocks"));

    h.key(KeyCode::Char('q'));
    assert!(h.app.should_quit());
}

impl Harness {
    fn screen_resized(&mut self, width: u16, height: u16) -> String {
        self.terminal.backend_mut().resize(width, height);
        self.screen()
    }
}

#[test]
fn a_corrupt_file_shows_its_error_and_browsing_goes_on() {
    let dir = fixture("corrupt", |dir| {
        std::fs::write(dir.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
        std::fs::copy(crate::common::photo("coffee"), dir.join("coffee.png")).unwrap();
    });
    let mut h = Harness::new(&dir, 100, 30);
    h.model_ready();
    let current = h.app.current().unwrap();
    assert!(current.name == "broken.png" && current.image_error.is_some());
    assert!(matches!(current.analysis, AnalysisState::Failed(_)));
    insta::assert_snapshot!("corrupt", h.screen());

    h.key(KeyCode::Down);
    assert!(h.line_with("▶1").contains("espresso"));
    assert!(h.app.picture().is_some());
}

#[test]
fn without_weights_browsing_works_and_the_table_says_how_to_get_them() {
    let mut h = Harness::new(images(), 100, 30);
    h.event(AppEvent::Worker(WorkerEvent::Model(ModelStatus::Unavailable(
        "no weights file at nowhere.safetensors (get one with `camview weights fetch -o nowhere.safetensors`)".into(),
    ))));
    h.key(KeyCode::Down);
    // No inference is asked once the model is known to be missing.
    assert_eq!(h.requests.len(), 1);
    assert!(h.app.picture().is_some());
    insta::assert_snapshot!("no_weights", h.screen());

    h.event(AppEvent::Worker(WorkerEvent::Model(
        ModelStatus::Fetching {
            phase: "downloading resnet50-0676ba61.pth".into(),
            done: 51_200_000,
            total: Some(102_400_000),
        },
    )));
    assert!(h.line_with("51.2 / 102.4 MB").contains('█'));
}

#[test]
fn folders_filter_and_mouse() {
    let dir = fixture("tree", |dir| {
        for sub in ["b 10", "b 9"] {
            std::fs::create_dir(dir.join(sub)).unwrap();
        }
        std::fs::copy(crate::common::photo("chelsea"), dir.join("b 9/cat.png")).unwrap();
        for name in ["img10.png", "img9.png", "notes.txt", ".hidden.png"] {
            std::fs::copy(crate::common::photo("coffee"), dir.join(name)).unwrap();
        }
        std::fs::write(dir.join("evil\x1b[31m.png"), b"").unwrap();
    });
    let mut h = Harness::new(&dir, 100, 30);
    let names = |h: &Harness| -> Vec<String> {
        h.app
            .files()
            .visible
            .iter()
            .map(|&i| h.app.files().entries[i].name.clone())
            .collect()
    };
    // Folders first, natural order, non-images and hidden files left out, names escaped.
    assert_eq!(
        names(&h),
        [
            "b 9",
            "b 10",
            "evil\\u{1b}[31m.png",
            "img9.png",
            "img10.png"
        ]
    );
    assert!(h.line_with("2 folders, 3 images").starts_with("\"└"));
    assert!(
        h.screen()
            .lines()
            .next()
            .unwrap()
            .contains(" target/ui-fixtures/tree ")
    );

    // Into a folder and back out; never above the root.
    h.key(KeyCode::Enter);
    assert_eq!(names(&h), ["cat.png"]);
    assert!(h.line_with("tree/b 9").starts_with("\"┌"));
    assert!(h.line_with(" 1 image ").starts_with("\"└"));
    assert!(h.app.current().is_some());
    h.key(KeyCode::Backspace);
    assert_eq!(h.app.files().selected().unwrap().name, "b 9");
    h.key(KeyCode::Left);
    assert_eq!(h.app.files().dir, dir);

    // `/` filters as you type; Esc clears the filter first, then quits.
    h.chars("/img1");
    assert_eq!(names(&h), ["img10.png"]);
    assert!(h.line_with("/img1").contains(" 1 image "));
    h.key(KeyCode::Enter);
    h.key(KeyCode::Char('q')); // typing has ended: q quits again...
    assert!(h.app.should_quit());
    let mut h = Harness::new(&dir, 100, 30);
    h.chars("/img");
    h.key(KeyCode::Esc);
    assert_eq!(names(&h).len(), 5);
    assert!(!h.app.should_quit());

    // A click on a row selects it; the wheel moves the selection.
    let rows = h.app.panes().unwrap().file_rows();
    let click = |column, row, kind| {
        AppEvent::Input(Event::Mouse(MouseEvent {
            kind,
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }))
    };
    h.event(click(
        rows.x + 2,
        rows.y + 3,
        MouseEventKind::Down(MouseButton::Left),
    ));
    assert_eq!(h.app.files().selected().unwrap().name, "img9.png");
    h.event(click(rows.x + 2, rows.y, MouseEventKind::ScrollDown));
    assert_eq!(h.app.files().selected().unwrap().name, "img10.png");

    h.key(KeyCode::Esc);
    assert!(h.app.should_quit());
}

#[test]
fn folders_are_read_off_the_ui_thread_and_only_the_latest_listing_counts() {
    let dir = fixture("slow", |dir| {
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::copy(crate::common::photo("chelsea"), dir.join("sub/cat.png")).unwrap();
        std::fs::copy(crate::common::photo("coffee"), dir.join("coffee.png")).unwrap();
    });
    let mut h = Harness::holding_listings(&dir, 100, 30);
    // Nothing is read yet: the pane says so, nothing is analysed, and keys are answered.
    assert!(h.app.files().entries.is_empty());
    assert!(h.app.files().loading());
    assert!(h.line_with("reading the folder…").starts_with("\"│"));
    assert!(h.line_with(" reading… ").starts_with("\"└"));
    assert!(h.requests.is_empty());
    h.key(KeyCode::Char('?'));
    assert!(h.app.help());
    h.key(KeyCode::Char('x'));
    assert!(!h.app.help());

    // The listing arrives: the first entry (the folder) is selected.
    h.list(0);
    assert!(!h.app.files().loading());
    assert_eq!(h.app.files().selected().unwrap().name, "sub");
    h.key(KeyCode::Down);
    assert_eq!(h.app.files().selected().unwrap().name, "coffee.png");
    assert!(
        matches!(h.requests.as_slice(), [Request::Analyze(k)] if k.path.ends_with("coffee.png"))
    );

    // `r` keeps the entries on screen until the new listing comes, and the selection on the
    // same file after it.
    h.key(KeyCode::Char('r'));
    assert_eq!(h.app.files().entries.len(), 2);
    h.list(1);
    assert_eq!(h.app.files().selected().unwrap().name, "coffee.png");

    // Into `sub` and straight back out before its listing arrives: the late listing of
    // `sub` must not replace the root's, and the root's selects the folder we left.
    h.key(KeyCode::Up);
    h.key(KeyCode::Enter);
    assert!(h.app.current().is_none());
    h.key(KeyCode::Backspace);
    h.list(3);
    h.list(2);
    assert_eq!(h.app.files().dir, dir);
    assert_eq!(h.app.files().selected().unwrap().name, "sub");
    assert_eq!(h.app.files().entries.len(), 2);
    assert!(!h.app.files().loading());

    // A folder that vanished before it was read: the whole reason shows, wrapped in the pane.
    h.key(KeyCode::Enter);
    std::fs::remove_dir_all(dir.join("sub")).unwrap();
    h.list(4);
    let screen = h.screen();
    let pane: Vec<&str> = screen
        .lines()
        .skip(1)
        .map(|row| row.split('│').nth(1).unwrap_or("").trim())
        .take_while(|text| !text.is_empty())
        .collect();
    assert_eq!(
        pane.join(" "),
        "Cannot read this folder: No such file or directory (os error 2)",
        "{screen}"
    );
    h.key(KeyCode::Backspace);
    h.list(5);
    assert_eq!(h.app.files().selected().unwrap().name, "coffee.png");
}

#[test]
fn ctrl_c_quits_even_while_typing_a_filter() {
    let mut h = Harness::new(images(), 100, 30);
    h.chars("/q");
    assert!(!h.app.should_quit());
    h.event(AppEvent::Input(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    ))));
    assert!(h.app.should_quit());
}

/// The real inference worker: it loads the model in the background, and a request that
/// waits is replaced by a newer one (only the newest is analysed).
#[test]
fn the_worker_loads_the_model_and_answers_only_the_newest_request() {
    let (tx, rx) = mpsc::channel();
    let model = cpu_model(crate::common::weights_path().to_path_buf());
    let worker =
        camview::background::inference::spawn(model, None, None, move |e| tx.send(e).is_ok())
            .unwrap();
    // Both are posted while the model loads: the second replaces the first.
    worker.send(Request::Analyze(ImageKey::of(&crate::common::photo(
        "chelsea",
    ))));
    worker.send(Request::Analyze(ImageKey::of(&crate::common::photo(
        "coffee",
    ))));
    let next = || {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("worker event")
    };
    assert!(matches!(next(), WorkerEvent::Model(ModelStatus::Loading)));
    assert!(matches!(
        next(),
        WorkerEvent::Model(ModelStatus::Ready { .. })
    ));
    let WorkerEvent::Analysis { key, result } = next() else {
        panic!("expected an analysis");
    };
    assert!(key.path.ends_with("coffee.png"));
    assert_eq!(result.unwrap().analysis.top[0].label, "espresso");

    // A prefetch list is worked through in order.
    worker.send(Request::Prefetch(vec![
        ImageKey::of(&crate::common::photo("chelsea")),
        ImageKey::of(Path::new("images/CREDITS.md")),
    ]));
    let WorkerEvent::Analysis { key, result } = next() else {
        panic!("expected an analysis");
    };
    assert!(key.path.ends_with("chelsea.png") && result.is_ok());
    let WorkerEvent::Analysis { result, .. } = next() else {
        panic!("expected an analysis");
    };
    assert!(camview::model::chain(&result.unwrap_err()).contains("CREDITS.md"));
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
}

#[test]
fn the_worker_says_how_to_get_weights_when_an_explicit_file_is_missing() {
    let (tx, rx) = mpsc::channel();
    let model = cpu_model(PathBuf::from(
        "target/ui-fixtures/no-such-weights.safetensors",
    ));
    let _worker =
        camview::background::inference::spawn(model, None, None, move |e| tx.send(e).is_ok())
            .unwrap();
    let event = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let WorkerEvent::Model(ModelStatus::Unavailable(why)) = event else {
        panic!("expected the model to be unavailable, got {event:?}");
    };
    assert!(
        why.contains("no-such-weights.safetensors") && why.contains("camview weights fetch"),
        "{why}"
    );
}

#[test]
fn r_rereads_the_folder_and_a_changed_file_is_analysed_again() {
    let dir = fixture("reload", |dir| {
        std::fs::copy(crate::common::photo("coffee"), dir.join("a.png")).unwrap();
    });
    let mut h = Harness::new(&dir, 100, 30);
    assert_eq!(h.app.files().visible.len(), 1);
    assert_eq!(h.requests.len(), 1);

    std::fs::copy(crate::common::photo("chelsea"), dir.join("b.png")).unwrap();
    // A new modification time makes a new version of a.png.
    let a = std::fs::File::options()
        .write(true)
        .open(dir.join("a.png"))
        .unwrap();
    a.set_modified(std::time::SystemTime::now() + Duration::from_secs(10))
        .unwrap();
    h.key(KeyCode::Char('r'));
    assert_eq!(h.app.files().visible.len(), 2);
    assert_eq!(h.app.files().selected().unwrap().name, "a.png");
    assert_eq!(h.requests.len(), 2, "{:?}", h.requests);
    assert!(matches!(&h.requests[1], Request::Analyze(k) if k.path.ends_with("a.png")));
}

#[test]
fn the_smallest_usable_screen_still_shows_every_pane() {
    let mut h = Harness::new(images(), 60, 15);
    h.model_ready();
    let screen = h.screen();
    assert!(!screen.contains("too small"), "{screen}");
    insta::assert_snapshot!("smallest", screen);
    assert!(
        h.line_with("▶ astronaut.png")
            .starts_with("\"│✓▶ astronaut.png"),
        "{screen}"
    );
    assert!(h.line_with("▶1").contains("bobsled"));
    assert!(h.picture_area().is_some_and(|a| a.height >= 3), "{screen}");
    assert!(h.line_with("halfblocks").contains("astronaut.png"));
}

#[test]
fn s_saves_the_picture_shown_at_full_size() {
    let out = fixture("saved", |_| {});
    let mut h = Harness::new(images(), 160, 30);
    h.app.update(AppEvent::SaveDir(out.clone()));
    h.key(KeyCode::Char('s'));
    assert!(h.line_with("nothing to save yet").contains("model loading"));

    // Chelsea, its second class: the overlay at the photo's size, named after both.
    h.model_ready();
    h.key(KeyCode::Down);
    h.key(KeyCode::Char('2'));
    h.key(KeyCode::Char('s'));
    let analysis = Arc::clone(h.app.analysis().unwrap());
    let class = &analysis.top[1];
    let path = out.join(format!(
        "chelsea.overlay.{}-{}.png",
        class.index,
        class.label.replace(' ', "_")
    ));
    assert!(
        h.line_with("saved ").contains(&path.display().to_string()),
        "{}",
        h.screen()
    );
    let photo = load_rgb(Path::new("images/chelsea.png")).unwrap();
    let saved = image::open(&path).unwrap().to_rgb8();
    let drawn = camview::overlay::render(
        &photo,
        photo.dimensions(),
        Some(&analysis),
        1,
        camview::overlay::Style::default(),
    );
    assert_eq!(saved.dimensions(), (451, 300));
    assert!(saved == drawn, "the saved picture is the CAM of class 2");

    // The next key clears the message; the original view saves the photo itself.
    h.key(KeyCode::Char('v'));
    assert!(!h.screen().contains("saved "));
    h.key(KeyCode::Char('s'));
    let original = image::open(out.join("chelsea.original.png"))
        .unwrap()
        .to_rgb8();
    assert!(original == photo);

    // A folder that cannot be made: the error shows and browsing goes on.
    h.app.update(AppEvent::SaveDir(PathBuf::from(
        "/proc/camview-cannot-write-here",
    )));
    h.key(KeyCode::Char('s'));
    assert!(
        h.line_with("cannot save")
            .contains("/proc/camview-cannot-write-here")
    );
    h.key(KeyCode::Down);
    assert!(h.line_with("▶1").contains("espresso"));
}

/// The browser's worker reads and writes the result store: a second worker answers for a
/// file it could no longer decode, because the store holds its result.
#[test]
fn the_worker_keeps_results_in_the_store_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("chelsea.png");
    std::fs::copy(crate::common::photo("chelsea"), &photo).unwrap();
    let store = dir.path().join("results.sqlite");
    let model = cpu_model(crate::common::weights_path().to_path_buf());
    let analyse = |model: ModelConfig| {
        let (tx, rx) = mpsc::channel();
        let worker =
            camview::background::inference::spawn(model, Some(store.clone()), None, move |e| {
                tx.send(e).is_ok()
            })
            .unwrap();
        worker.send(Request::Analyze(ImageKey::of(&photo)));
        loop {
            match rx
                .recv_timeout(Duration::from_secs(60))
                .expect("worker event")
            {
                WorkerEvent::Analysis { result, .. } => return result,
                WorkerEvent::Note(note) => panic!("{note}"),
                _ => {}
            }
        }
    };
    let first = analyse(model.clone()).unwrap();
    assert_eq!(first.analysis.top[0].label, "Egyptian cat");
    // Same size, same modification time, no longer a PNG: only the store can answer.
    crate::common::break_keeping_identity(&photo);
    let second = analyse(model).unwrap();
    assert_eq!(second.analysis.top, first.analysis.top);
    assert_eq!(second.analysis.cams.len(), first.analysis.cams.len());
}

/// The labelled dataset of `crate::labelled`, below the package root so paths on screen
/// are the same everywhere; the browser opened on it, its labels and boxes read.
fn reviewing(width: u16, height: u16) -> Harness {
    // Built once: the tests that review it run in parallel.
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| fixture("labelled", crate::labelled::build_at));
    let data = dir.join("data");
    let mut h = Harness::new(&data, width, height);
    let loaded = dataset_reader::load(&data, None, Some(&dir.join("boxes")), &Classes::imagenet())
        .unwrap()
        .expect("class folders are labels");
    h.event(AppEvent::Dataset(Ok(Box::new(loaded))));
    h
}

#[test]
fn a_labelled_folder_is_reviewed_as_a_flat_list_with_verdicts() {
    let mut h = reviewing(110, 32);
    // Before any result: every labelled image waits, the counts are of none.
    assert!(h.line_with("top-1 0/5").contains("top-5 0/5"));
    insta::assert_snapshot!("dataset_before_results", h.screen());
    assert!(h.sweep.is_some(), "the background sweep is asked for");

    h.model_ready();
    // Results arrive as the worker sends stored ones: several to an event.
    h.run_sweep(4);
    assert!(h.line_with("top-1 2/5").contains("top-5 5/5"));
    insta::assert_snapshot!("dataset_swept", h.screen());

    // A miss: the true class is in the table (space shuttle, third), `t` shows its CAM.
    h.key(KeyCode::Home);
    assert!(h.line_with("▶ 812/rocket.jpg").starts_with("\"│5"));
    assert!(h.line_with("← true class").contains("space shuttle"));
    h.key(KeyCode::Char('t'));
    assert!(h.line_with("▶3").contains("space shuttle"));
    assert!(h.line_with("CAM of").contains("CAM of space shuttle"));
    insta::assert_snapshot!("dataset_miss_true_class", h.screen());

    // With boxes: the truth box is drawn and the IoU of the shown CAM's box is in the
    // status line.
    h.chars("jjj");
    assert!(h.line_with("▶ n02124075/chelsea.png").starts_with("\"│✓"));
    assert!(
        h.app.style().bbox,
        "boxes shown from the start in a boxed dataset"
    );
    let status = h.line_with("IoU");
    assert!(status.contains("chelsea.png"), "{status}");
}

#[test]
fn the_review_list_filters_orders_and_jumps_between_misses() {
    let mut h = reviewing(110, 32);
    h.model_ready();
    h.run_sweep(6);
    let listed = |h: &mut Harness| -> Vec<String> {
        let screen = h.screen();
        let mut rows = Vec::new();
        for line in screen.lines().skip(1) {
            // The file pane's rows: `│M▶ name` or `│M  name`, up to its border.
            let Some(row) = line.strip_prefix("\"│") else {
                continue;
            };
            let row: String = row.chars().skip(3).take_while(|&c| c != '│').collect();
            if !row.trim().is_empty() {
                rows.push(row.trim().to_string());
            }
        }
        rows
    };
    h.key(KeyCode::Char('m'));
    assert_eq!(
        listed(&mut h),
        [
            "812/rocket.jpg",
            "n02123045/chelsea-2.png",
            "Ski/astronaut.png"
        ]
    );
    insta::assert_snapshot!("dataset_misses", h.screen());
    h.key(KeyCode::Char('m'));
    assert_eq!(
        listed(&mut h),
        ["espresso/coffee.png", "n02124075/chelsea.png"]
    );
    h.key(KeyCode::Char('m'));
    assert_eq!(listed(&mut h).len(), 6, "all again");

    // By loss: the true class's probability, lowest first; unlabelled last.
    h.chars("oo");
    assert!(h.line_with("all · by loss").contains("6 images"));
    let by_loss = listed(&mut h);
    let prob = |rel: &str| {
        let (_, name, truth) = crate::labelled::LAYOUT
            .iter()
            .find(|(r, _, _)| *r == rel)
            .unwrap();
        let top5 = crate::common::reference_json(name, "full")["top5"].clone();
        top5.as_array()
            .unwrap()
            .iter()
            .find(|p| p["index"].as_u64() == *truth)
            .map(|p| p["prob"].as_f64().unwrap())
            .unwrap()
    };
    let probs: Vec<f64> = by_loss[..5].iter().map(|r| prob(r)).collect();
    assert!(
        probs.windows(2).all(|w| w[0] <= w[1]),
        "{by_loss:?}: {probs:?}"
    );
    assert_eq!(by_loss[5], "loose.png");
    insta::assert_snapshot!("dataset_by_loss", h.screen());

    // `n` walks the misses of the list as shown, wrapping; `N` goes back.
    h.chars("oo");
    h.key(KeyCode::Home);
    let mut seen = Vec::new();
    for _ in 0..4 {
        h.key(KeyCode::Char('n'));
        seen.push(h.app.current().unwrap().name.clone());
    }
    assert_eq!(
        seen,
        [
            "n02123045/chelsea-2.png",
            "Ski/astronaut.png",
            "812/rocket.jpg",
            "n02123045/chelsea-2.png"
        ]
    );
    h.key(KeyCode::Char('N'));
    assert_eq!(h.app.current().unwrap().name, "812/rocket.jpg");

    // `f`: the folders, with the selected image selected in its own; and back.
    h.key(KeyCode::Char('f'));
    assert!(h.line_with("▶ rocket.jpg").starts_with("\"│5"));
    h.key(KeyCode::Char('r'));
    assert_eq!(h.dataset_reads, 0, "in a folder, `r` reads the folder");
    h.key(KeyCode::Char('f'));
    assert!(h.line_with("▶ 812/rocket.jpg").starts_with("\"│5"));
    // In the flat list, `r` reads the dataset again; what comes back replaces it, results
    // and selection kept.
    h.key(KeyCode::Char('r'));
    assert_eq!(h.dataset_reads, 1);
    let dir = PathBuf::from("target/ui-fixtures/labelled");
    let again = dataset_reader::load(
        &dir.join("data"),
        None,
        Some(&dir.join("boxes")),
        &Classes::imagenet(),
    )
    .unwrap()
    .unwrap();
    h.event(AppEvent::Dataset(Ok(Box::new(again))));
    assert!(h.line_with("top-1 2/5").contains("top-5 5/5"));
    assert!(h.line_with("▶ 812/rocket.jpg").starts_with("\"│5"));
}

#[test]
fn the_summary_lists_confusions_and_narrows_the_list_to_one() {
    let mut h = reviewing(110, 32);
    h.model_ready();
    h.run_sweep(6);
    h.key(KeyCode::Char('d'));
    assert!(
        h.line_with("labelled images analysed")
            .contains("top-1 2 (40.0 %)")
    );
    // Three confusions of one image each, in class order: tabby (281) → Egyptian cat,
    // ski (795) → bobsled, space shuttle (812) → drilling platform.
    assert!(h.line_with("▶    1").contains("tabby → Egyptian cat"));
    insta::assert_snapshot!("dataset_summary", h.screen());
    assert!(h.app.picture_area().is_none(), "the picture gives way");
    h.chars("jj");
    assert!(
        h.line_with("▶    1")
            .contains("space shuttle → drilling platform")
    );
    h.key(KeyCode::Enter);
    // The narrowing in the bottom border (cut to the pane), the count beside it.
    assert!(h.line_with("└ space shuttle → drill").contains(" 1 image "));
    assert_eq!(h.app.current().unwrap().name, "812/rocket.jpg");
    // Esc widens the list again (a second Esc would quit).
    h.key(KeyCode::Esc);
    assert!(!h.app.should_quit());
    assert!(h.line_with("all · by name").contains("6 images"));
}

#[test]
fn labels_that_cannot_be_read_leave_the_folder_browsable_and_say_why() {
    let dir = fixture("bad-labels", |d| {
        std::fs::copy(crate::common::photo("chelsea"), d.join("chelsea.png")).unwrap();
        std::fs::write(
            d.join("labels.csv"),
            "path,label\nchelsea.png,not a class at all\n",
        )
        .unwrap();
    });
    let error = dataset_reader::load(
        &dir,
        Some(&dir.join("labels.csv")),
        None,
        &Classes::imagenet(),
    )
    .unwrap_err();
    // Wide enough for the whole message.
    let mut h = Harness::new(&dir, 240, 30);
    h.event(AppEvent::Dataset(Err(error)));
    assert!(h.app.review().is_none());
    let status = h.line_with("not reviewed as a dataset");
    assert!(status.contains("not a class at all"), "{status}");
    assert!(
        h.line_with("▶ chelsea.png").contains("chelsea.png"),
        "still browsing"
    );
    // A folder without class folders is no dataset, and is not walked as one.
    assert!(
        dataset_reader::load(Path::new("images"), None, None, &Classes::imagenet())
            .unwrap()
            .is_none()
    );
}

/// The bug of issue 21: a true class ranked below the top 5 (an espresso filed as a tench)
/// had no row on screen, as the screen was laid out for five rows and the state for six.
/// The sixth row shows it with its rank by the golden reference; `t` and a click on that
/// row show its CAM.
#[test]
fn a_true_class_below_the_top_5_has_the_sixth_row() {
    let dir = fixture("misfiled", crate::labelled::build_misfiled_at);
    let mut h = Harness::new(&dir, 110, 32);
    let loaded = dataset_reader::load(&dir, None, None, &Classes::imagenet())
        .unwrap()
        .expect("a class folder is a label");
    h.event(AppEvent::Dataset(Ok(Box::new(loaded))));
    h.model_ready();
    h.run_sweep(1);
    let rank = crate::labelled::tench_rank_for_coffee();
    assert!(rank > 5, "the reference ranks tench {rank}");
    let row = h.line_with("← true class");
    assert!(
        row.contains(&format!(" {rank} tench ← true class")),
        "{row}"
    );
    insta::assert_snapshot!("dataset_true_class_below_top_5", h.screen());
    let espresso = h.picture_colors();

    // `t`: the true class's CAM, its row highlighted, the picture changed.
    h.key(KeyCode::Char('t'));
    assert!(h.line_with("CAM of").contains("CAM of tench"));
    let (y, row) = h
        .screen()
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("← true class"))
        .map(|(y, l)| (y as u16, l.to_string()))
        .unwrap();
    let marker = format!("▶{rank} tench");
    let at = row.find(&marker).unwrap_or_else(|| panic!("{row}"));
    // The screen's lines are quoted: one character more than the columns before it.
    let x = row[..at].chars().count() as u16 - 1;
    let buffer = h.terminal.backend().buffer();
    assert_eq!(buffer[(x, y)].fg, Color::Yellow, "the shown row's colour");
    let tench = h.picture_colors();
    assert_ne!(tench, espresso, "the CAM of tench is another picture");

    // Back to the top class; a click on the sixth row shows the true class again.
    h.key(KeyCode::Char('1'));
    assert!(h.line_with("CAM of").contains("CAM of espresso"));
    assert_eq!(h.picture_colors(), espresso);
    h.event(AppEvent::Input(Event::Mouse(MouseEvent {
        kind: MouseEventKind::Down(MouseButton::Left),
        column: x + 10,
        row: y,
        modifiers: KeyModifiers::NONE,
    })));
    assert!(h.line_with("← true class").contains(&marker));
    assert!(h.line_with("CAM of").contains("CAM of tench"));
    assert_eq!(h.picture_colors(), tench);
}

/// What the dataset's files give but cannot be used reaches the status line, as `eval`
/// prints it on stderr: here a box file with a DTD and a box that is not a number.
#[test]
fn box_files_and_boxes_that_cannot_be_used_are_named_in_the_status_line() {
    let dir = fixture("bad-boxes", |d| {
        crate::labelled::build_at(d);
        std::fs::write(
            d.join("boxes/coffee.xml"),
            format!(
                "<!DOCTYPE annotation>{}",
                crate::labelled::voc(&crate::labelled::COFFEE_BOX)
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("boxes/astronaut.xml"),
            "<annotation><object><name>n04228054</name><bndbox><xmin>NaN</xmin>\
             <ymin>0</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>",
        )
        .unwrap();
    });
    let data = dir.join("data");
    let loaded = dataset_reader::load(&data, None, Some(&dir.join("boxes")), &Classes::imagenet())
        .unwrap()
        .expect("a dataset");
    assert_eq!(
        loaded.dataset.warnings.len(),
        2,
        "{:#?}",
        loaded.dataset.warnings
    );
    let first = loaded.dataset.warnings[0].clone();
    // Wide enough for the whole message.
    let mut h = Harness::new(&data, 300, 30);
    h.event(AppEvent::Dataset(Ok(Box::new(loaded))));
    assert!(h.app.review().is_some(), "reviewed all the same");
    let status = h.line_with("(and 1 more: `camview eval` lists them all)");
    assert!(status.contains(&first), "{status}");
    assert!(
        status.contains("boxes/astronaut.xml: box n04228054")
            || status.contains("boxes/coffee.xml: cannot use it"),
        "{status}"
    );
}

/// The engine's maps of `method` for every class of `analysis` (of the photo `path`), in
/// their place: the analysis a picture under that method is drawn from.
fn with_engine_maps(
    path: &Path,
    analysis: &camview::model::Analysis,
    method: CamMethod,
) -> camview::model::Analysis {
    let c = classifier();
    let img = load_rgb(path).unwrap();
    let prepared = c.prepare(&img, ResizeMode::Full).unwrap();
    let classes: Vec<usize> = analysis.top.iter().map(|p| p.index).collect();
    let maps = c
        .method_maps(&prepared, &classes, method, 16, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    camview::model::Analysis {
        cams: maps,
        ..analysis.clone()
    }
}

#[test]
fn the_method_key_draws_and_saves_the_engines_maps_of_that_method() {
    use camview::overlay::{Style, View, render};
    let out = fixture("saved-methods", |_| {});
    let mut h = Harness::new(images(), 160, 30);
    h.app.update(AppEvent::SaveDir(out.clone()));
    h.model_ready();
    h.key(KeyCode::Down);
    assert!(
        h.line_with("chelsea.png —")
            .contains("— CAM of Egyptian cat")
    );
    let cam = Arc::clone(h.app.analysis().unwrap());

    // `a`: Grad-CAM++, named in the picture's title and the table's border.
    h.key(KeyCode::Char('a'));
    assert_eq!(h.app.method(), CamMethod::GradCamPlusPlus);
    let title = h.line_with("chelsea.png —");
    assert!(title.contains("— Grad-CAM++ of Egyptian cat "), "{title}");
    assert!(
        h.line_with("Predictions")
            .contains("overlay · gradcam++ · jet")
    );
    let Some(Request::Maps(asked)) = h.requests.last() else {
        panic!("the maps are asked for: {:?}", h.requests.last());
    };
    let classes: Vec<usize> = cam.top.iter().map(|p| p.index).collect();
    assert_eq!(asked.classes, classes, "every class of the table");

    // The second class, saved: the engine's Grad-CAM++ map drawn as every CAM is.
    h.key(KeyCode::Char('2'));
    h.key(KeyCode::Char('s'));
    let class = &cam.top[1];
    let path = out.join(format!(
        "chelsea.overlay.gradcam++.{}-{}.png",
        class.index,
        class.label.replace(' ', "_")
    ));
    assert!(h.line_with("saved ").contains(&path.display().to_string()));
    let photo_path = Path::new("images/chelsea.png");
    let photo = load_rgb(photo_path).unwrap();
    let expected = with_engine_maps(photo_path, &cam, CamMethod::GradCamPlusPlus);
    let saved = image::open(&path).unwrap().to_rgb8();
    let drawn = |analysis: &camview::model::Analysis, style: Style| {
        render(&photo, photo.dimensions(), Some(analysis), 1, style)
    };
    assert!(
        saved == drawn(&expected, Style::default()),
        "Grad-CAM++'s map"
    );
    assert!(saved != drawn(&cam, Style::default()), "not CAM's");

    // The grid: the top five under Grad-CAM++.
    for _ in 0..3 {
        h.key(KeyCode::Char('v'));
    }
    assert!(
        h.line_with("chelsea.png —")
            .contains("Grad-CAM++ maps of the top 5")
    );
    h.key(KeyCode::Char('s'));
    let grid = Style {
        view: View::Grid,
        ..Style::default()
    };
    let saved = image::open(path.with_file_name(format!(
        "chelsea.grid.gradcam++.{}-{}.png",
        class.index,
        class.label.replace(' ', "_")
    )))
    .unwrap()
    .to_rgb8();
    assert!(saved == drawn(&expected, grid), "the grid's five maps");
    h.key(KeyCode::Char('v'));

    // LayerCAM, Ablation-CAM, EigenCAM: each named, each its own map.
    h.key(KeyCode::Char('a'));
    assert!(
        h.line_with("chelsea.png —")
            .contains("LayerCAM of tiger cat")
    );
    h.key(KeyCode::Char('a'));
    assert!(
        h.line_with("chelsea.png —")
            .contains("Ablation-CAM of tiger cat")
    );
    h.key(KeyCode::Char('a'));
    assert!(
        h.line_with("chelsea.png —")
            .contains("EigenCAM (class-agnostic)")
    );
    h.key(KeyCode::Char('s'));
    let eigen = with_engine_maps(photo_path, &cam, CamMethod::EigenCam);
    let saved = image::open(path.with_file_name(format!(
        "chelsea.overlay.eigencam.{}-{}.png",
        class.index,
        class.label.replace(' ', "_")
    )))
    .unwrap()
    .to_rgb8();
    assert!(saved == drawn(&eigen, Style::default()), "EigenCAM's map");

    // Score-CAM: asked for, its progress shown, nothing to save until it is done.
    h.key(KeyCode::Char('a'));
    let held = h.held_maps.clone().expect("Score-CAM's maps asked for");
    assert_eq!(held.method, CamMethod::ScoreCam);
    h.event(AppEvent::Worker(WorkerEvent::MapsProgress {
        key: held.key.clone(),
        method: CamMethod::ScoreCam,
        done: 320,
        total: 2048,
    }));
    assert!(
        h.line_with("chelsea.png —")
            .contains("Score-CAM of tiger cat: 320/2048")
    );
    assert!(h.line_with("halfblocks").contains("Score-CAM 320/2048"));
    h.key(KeyCode::Char('s'));
    assert!(h.line_with("nothing to save yet").contains("Score-CAM"));
    // Back to CAM: the passes are told to stop, and CAM's map is drawn at once.
    let asked = h.requests.len();
    h.key(KeyCode::Char('a'));
    assert_eq!(h.app.method(), CamMethod::Cam);
    assert!(
        matches!(h.requests[asked..], [Request::StopMaps]),
        "{:?}",
        &h.requests[asked..]
    );
    assert!(h.line_with("chelsea.png —").contains("— CAM of tiger cat"));
    assert!(!h.screen().contains("Score-CAM"));

    // Score-CAM again: asked for again. Its maps arrive (a stand-in, LayerCAM's, as its
    // passes take minutes here), are drawn and kept: leaving the image and coming back shows
    // them without asking again.
    for _ in 0..5 {
        h.key(KeyCode::Char('a'));
    }
    let held = h
        .held_maps
        .clone()
        .expect("Score-CAM's maps asked for again");
    let stand_in = camview::background::maps::make(
        classifier(),
        ResizeMode::Full,
        &mut ReadBacks::default(),
        &MapsRequest {
            method: CamMethod::LayerCam,
            ..held.clone()
        },
        &mut |_, _| std::ops::ControlFlow::Continue(()),
    )
    .unwrap()
    .unwrap();
    h.event(AppEvent::Worker(WorkerEvent::Maps {
        key: held.key.clone(),
        method: CamMethod::ScoreCam,
        result: Ok(stand_in),
    }));
    let title = h.line_with("chelsea.png —");
    assert!(title.contains("— Score-CAM of tiger cat ─"), "{title}");
    h.key(KeyCode::Down);
    assert!(
        h.held_maps
            .as_ref()
            .is_some_and(|m| m.key.path.ends_with("coffee.png"))
    );
    let asked = h.requests.len();
    h.key(KeyCode::Up);
    assert!(
        h.line_with("chelsea.png —")
            .contains("— Score-CAM of Egyptian cat ─")
    );
    let since = &h.requests[asked..];
    assert!(
        matches!(since.first(), Some(Request::StopMaps))
            && !since.iter().any(|r| matches!(r, Request::Maps(_))),
        "coffee's passes stop, chelsea's maps are not asked again: {since:?}"
    );
    h.key(KeyCode::Char('s'));
    let layercam = with_engine_maps(photo_path, &cam, CamMethod::LayerCam);
    let saved = image::open(out.join(format!(
        "chelsea.overlay.scorecam.{}-{}.png",
        cam.top[0].index,
        cam.top[0].label.replace(' ', "_")
    )))
    .unwrap()
    .to_rgb8();
    let top1 = render(
        &photo,
        photo.dimensions(),
        Some(&layercam),
        0,
        Style::default(),
    );
    assert!(saved == top1, "the maps received, as received");
}

/// Waits for the worker's next event that `pick` takes, skipping model news.
fn next_worker_event<T>(
    rx: &Receiver<WorkerEvent>,
    mut pick: impl FnMut(WorkerEvent) -> Option<T>,
) -> T {
    loop {
        let event = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("worker event");
        if let WorkerEvent::Model(ModelStatus::Unavailable(why)) = &event {
            panic!("{why}");
        }
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

/// The real worker makes a method's maps as the engine does, and from the read-back it
/// keeps: a second method's maps come although the photo can no longer be read.
#[test]
fn the_worker_makes_a_methods_maps_from_the_pass_it_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("chelsea.png");
    std::fs::copy(crate::common::photo("chelsea"), &photo).unwrap();
    let key = ImageKey::of(&photo);
    let (tx, rx) = mpsc::channel();
    let model = cpu_model(crate::common::weights_path().to_path_buf());
    let worker =
        camview::background::inference::spawn(model, None, None, move |e| tx.send(e).is_ok())
            .unwrap();
    worker.send(Request::Analyze(key.clone()));
    let analysed = next_worker_event(&rx, |e| match e {
        WorkerEvent::Analysis { result, .. } => Some(result.unwrap()),
        _ => None,
    });
    let classes: Vec<usize> = analysed.analysis.top.iter().map(|p| p.index).collect();
    let engine = |method| with_engine_maps(&photo, &analysed.analysis, method).cams;
    let (plus_plus, ablation) = (
        engine(CamMethod::GradCamPlusPlus),
        engine(CamMethod::AblationCam),
    );
    let maps_of = |method| {
        worker.send(Request::Maps(MapsRequest {
            key: key.clone(),
            method,
            classes: classes.clone(),
        }));
        next_worker_event(&rx, |e| match e {
            WorkerEvent::Maps {
                method: m, result, ..
            } if m == method => Some(result),
            _ => None,
        })
    };
    let made = maps_of(CamMethod::GradCamPlusPlus).unwrap();
    let maps: Vec<_> = made.iter().map(|m| m.map.clone()).collect();
    assert_eq!(maps, plus_plus);
    assert_eq!(
        made.iter().map(|m| m.class).collect::<Vec<_>>(),
        classes,
        "in the order asked"
    );
    // The top-1's box at the paper's threshold, found as the stored boxes are.
    let placed = camview::model::Analysis {
        cams: plus_plus,
        ..analysed.analysis.as_ref().clone()
    };
    assert_eq!(
        made[0].paper_box,
        analysis::paper_box(&placed, 0, (451, 300))
    );
    assert!(made[0].paper_box.is_some());

    // Same size, same modification time, no longer a PNG: only the kept pass can answer.
    crate::common::break_keeping_identity(&photo);
    assert_eq!(ImageKey::of(&photo), key);
    let made = maps_of(CamMethod::AblationCam).unwrap();
    let maps: Vec<_> = made.into_iter().map(|m| m.map).collect();
    assert_eq!(maps, ablation, "no new forward pass");
}

/// Score-CAM on the worker, with a tiny network (5 classes, 32 feature channels): a newer selection
/// stops its passes before the next batch, and a run left alone gives the engine's maps.
#[test]
fn the_worker_stops_score_cam_for_a_newer_selection() {
    let tiny = crate::common::root().join("tests/fixtures/models/bottleneck.safetensors");
    let (tx, rx) = mpsc::channel();
    // The worker waits after each progress report until the test lets it go on.
    let (go_on, gate) = mpsc::channel::<()>();
    let gate = std::sync::Mutex::new(gate);
    let worker = camview::background::inference::spawn(cpu_model(tiny.clone()), None, None, {
        move |e| {
            let progress = matches!(e, WorkerEvent::MapsProgress { .. });
            let listening = tx.send(e).is_ok();
            if progress {
                let _ = gate.lock().unwrap().recv_timeout(Duration::from_secs(60));
            }
            listening
        }
    })
    .unwrap();
    let chelsea = ImageKey::of(&crate::common::photo("chelsea"));
    let coffee = ImageKey::of(&crate::common::photo("coffee"));
    let score_cam = |key: &ImageKey| {
        Request::Maps(MapsRequest {
            key: key.clone(),
            method: CamMethod::ScoreCam,
            classes: vec![1, 4],
        })
    };
    worker.send(score_cam(&chelsea));
    let progress = || {
        next_worker_event(&rx, |e| match e {
            WorkerEvent::MapsProgress { done, total, .. } => Some((done, total)),
            _ => None,
        })
    };
    // The total first, before any pass; then the first batch.
    let (none, total) = progress();
    assert_eq!(none, 0);
    go_on.send(()).unwrap();
    let (done, _) = progress();
    assert!(
        0 < done && done < total,
        "more than one batch: {done}/{total}"
    );
    // Another image is selected while the worker waits after its first batch.
    worker.send(Request::Analyze(coffee.clone()));
    go_on.send(()).unwrap();
    let event = next_worker_event(&rx, Some);
    let WorkerEvent::Analysis { key, result } = event else {
        panic!("the passes went on: {event:?}");
    };
    assert_eq!(key, coffee);
    assert!(result.is_ok());

    // Left alone, every batch is reported, then the maps: the engine's.
    for _ in 0..total {
        go_on.send(()).unwrap();
    }
    worker.send(score_cam(&coffee));
    let mut reports = Vec::new();
    let made = next_worker_event(&rx, |e| match e {
        WorkerEvent::MapsProgress { done, .. } => {
            reports.push(done);
            None
        }
        WorkerEvent::Maps { key, result, .. } => Some((key, result)),
        _ => None,
    });
    assert_eq!(made.0, coffee);
    assert_eq!(reports.len(), 1 + total.div_ceil(done));
    assert_eq!(reports[0], 0);
    assert_eq!(reports.last(), Some(&total));
    let classifier = cpu_classifier(&tiny);
    let img = load_rgb(&coffee.path).unwrap();
    let prepared = classifier.prepare(&img, ResizeMode::Full).unwrap();
    let engine = classifier
        .method_maps(
            &prepared,
            &[1, 4],
            CamMethod::ScoreCam,
            done,
            &mut |_, _| std::ops::ControlFlow::Continue(()),
        )
        .unwrap()
        .unwrap();
    let maps: Vec<_> = made.1.unwrap().into_iter().map(|m| m.map).collect();
    assert_eq!(maps, engine);
}

/// Score-CAM's passes are made once: with a result store, the worker keeps the maps it makes
/// there, and a later session (another worker on the same store) takes them from it although
/// the photo can no longer be read, so no pass ran.
#[test]
fn the_worker_keeps_score_cam_maps_in_the_store_and_takes_them_from_there() {
    let tiny = crate::common::root().join("tests/fixtures/models/bottleneck.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("chelsea.png");
    std::fs::copy(crate::common::photo("chelsea"), &photo).unwrap();
    let store = dir.path().join("store.sqlite");
    let key = ImageKey::of(&photo);
    let session = || {
        let (tx, rx) = mpsc::channel();
        let worker = camview::background::inference::spawn(
            cpu_model(tiny.clone()),
            Some(store.clone()),
            None,
            move |e| tx.send(e).is_ok(),
        )
        .unwrap();
        worker.send(Request::Analyze(key.clone()));
        let analysed = next_worker_event(&rx, |e| match e {
            WorkerEvent::Analysis { result, .. } => Some(result.unwrap()),
            _ => None,
        });
        let classes: Vec<usize> = analysed.analysis.top.iter().map(|p| p.index).collect();
        worker.send(Request::Maps(MapsRequest {
            key: key.clone(),
            method: CamMethod::ScoreCam,
            classes: classes.clone(),
        }));
        let made = next_worker_event(&rx, |e| match e {
            WorkerEvent::Maps {
                method: CamMethod::ScoreCam,
                result,
                ..
            } => Some(result),
            _ => None,
        });
        (classes, made.unwrap())
    };
    let (classes, first) = session();
    assert_eq!(
        first.iter().map(|m| m.class).collect::<Vec<_>>(),
        classes,
        "in the order asked"
    );
    let classifier = cpu_classifier(&tiny);
    let prepared = classifier
        .prepare(&load_rgb(&photo).unwrap(), ResizeMode::Full)
        .unwrap();
    let engine = classifier
        .method_maps(&prepared, &classes, CamMethod::ScoreCam, 16, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    let maps: Vec<_> = first.iter().map(|m| m.map.clone()).collect();
    assert_eq!(maps, engine, "the engine's maps");

    // Same size, same modification time, no longer a PNG: only the store can answer.
    crate::common::break_keeping_identity(&photo);
    assert_eq!(ImageKey::of(&photo), key);
    let (again, second) = session();
    assert_eq!(again, classes);
    for (made, stored) in first.iter().zip(&second) {
        assert_eq!(made.class, stored.class);
        let (a, b) = (&made.map.values, &stored.map.values);
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        // The store keeps maps in half precision.
        assert!(
            worst <= 1e-3 * scale,
            "class {}: {worst} of {scale}",
            made.class
        );
    }
}

/// A dataset under another method: the verdicts stay, `t` shows the true class's map by that
/// method, and the IoU is that of the method's box (20 % of its map's maximum).
#[test]
fn a_dataset_is_reviewed_under_any_method() {
    let mut h = reviewing(110, 32);
    h.model_ready();
    h.run_sweep(6);
    h.key(KeyCode::Home);
    h.chars("jjj");
    assert!(h.line_with("▶ n02124075/chelsea.png").starts_with("\"│✓"));
    let cam_iou = h.line_with("IoU").split("IoU ").nth(1).unwrap()[..4].to_string();
    h.key(KeyCode::Char('a'));
    h.key(KeyCode::Char('a'));
    assert_eq!(h.app.method(), CamMethod::LayerCam);
    assert!(
        h.line_with("chelsea.png —")
            .contains("LayerCAM of Egyptian cat")
    );
    // The marks are the classifier's: unchanged.
    assert!(h.line_with("▶ n02124075/chelsea.png").starts_with("\"│✓"));
    assert!(h.line_with("top-1 2/5").contains("top-5 5/5"));

    let current = h.app.current().unwrap().key.path.clone();
    let analysis = Arc::clone(h.app.analysis().unwrap());
    let layercam = with_engine_maps(&current, &analysis, CamMethod::LayerCam);
    let truth = h.app.truth().unwrap().clone();
    let expected = camview::scoring::best_iou(
        &truth,
        Some(analysis::paper_box(&layercam, 0, (451, 300)).unwrap()),
    )
    .unwrap();
    let status = h.line_with("IoU");
    assert!(
        status.contains(&format!("IoU {expected:.2}")),
        "{status} (CAM's was {cam_iou}, LayerCAM's is {expected:.2})"
    );

    // A miss: `t` shows the true class's LayerCAM map.
    h.key(KeyCode::Home);
    h.key(KeyCode::Char('t'));
    assert!(h.line_with("▶3").contains("space shuttle"));
    assert!(
        h.line_with("LayerCAM of")
            .contains("LayerCAM of space shuttle")
    );
}
