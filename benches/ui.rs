//! Criterion benches of the browser: one whole frame drawn over `TestBackend` with a result
//! on screen, `App::update` for a key press, and the render thread's round trip for a cached
//! photo with its overlay (half blocks, sixel, kitty). Needs genuine weights at
//! `models/resnet50.safetensors` or `$CAMVIEW_WEIGHTS`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use camview::analysis::ImageKey;
use camview::background::inference::{Analysed, ModelStatus, Request, WorkerEvent};
use camview::background::render::{RenderEvent, RenderRequest, Renderer};
use camview::model::preprocess::load_rgb;
use camview::model::{Classifier, ResizeMode};
use camview::overlay::Style;
use camview::ui::app::{App, AppEvent, Command};
use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::layout::Size;
use ratatui_image::picker::{Picker, ProtocolType};

fn weights() -> PathBuf {
    std::env::var_os("CAMVIEW_WEIGHTS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/resnet50.safetensors"),
        PathBuf::from,
    )
}

fn key(code: KeyCode) -> AppEvent {
    AppEvent::Input(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Runs `app`'s work to completion: listings here, inference by `classifier`, pictures by
/// `renderer`.
fn settle(app: &mut App, classifier: &Classifier, renderer: &Renderer, rx: &Receiver<RenderEvent>) {
    loop {
        let commands = app.take_commands();
        if commands.is_empty() {
            return;
        }
        for command in commands {
            match command {
                Command::List(request) => app.update(AppEvent::Listed(request.run())),
                Command::Infer(Request::Analyze(key)) => {
                    let img = load_rgb(&key.path).unwrap();
                    let prepared = classifier.prepare(&img, ResizeMode::Full).unwrap();
                    let result = Ok(Analysed {
                        analysis: Arc::new(classifier.analyze(&prepared, 5, None).unwrap()),
                        top1_box: None,
                        truth: None,
                    });
                    app.update(AppEvent::Worker(WorkerEvent::Analysis { key, result }));
                }
                // The bench browses under CAM: no maps of other methods are asked for.
                Command::Infer(
                    Request::Prefetch(_) | Request::Sweep(_) | Request::Maps(_) | Request::StopMaps,
                )
                | Command::Prepare(_)
                | Command::Save(_)
                | Command::ReadDataset => {}
                Command::Render(request) => {
                    let ticket = request.ticket;
                    renderer.send(request);
                    while let Ok(event) = rx.recv_timeout(Duration::from_secs(30)) {
                        let done = event.ticket == ticket;
                        app.update(AppEvent::Render(event));
                        if done {
                            break;
                        }
                    }
                }
            }
        }
    }
}

fn ui(c: &mut Criterion) {
    let classifier = Classifier::load(&weights(), None, Device::Cpu).expect("genuine weights");
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("images");
    let (tx, rx) = mpsc::channel();
    let renderer = Renderer::spawn(Picker::halfblocks(), move |e| tx.send(e).is_ok()).unwrap();
    let mut app = App::new(&images, "halfblocks", Size::new(120, 40));
    app.update(AppEvent::Worker(WorkerEvent::Model(ModelStatus::Ready {
        device: "cpu".into(),
        classes: Arc::new(classifier.classes().clone()),
    })));
    settle(&mut app, &classifier, &renderer, &rx);
    // Analyse the second image too, so moving between them hits the cache.
    app.update(key(KeyCode::Down));
    settle(&mut app, &classifier, &renderer, &rx);
    app.update(key(KeyCode::Up));
    settle(&mut app, &classifier, &renderer, &rx);
    assert!(app.analysis().is_some() && app.picture().is_some());

    let mut g = c.benchmark_group("ui");
    let mut terminal = Terminal::new(TestBackend::new(120, 40)).unwrap();
    g.bench_function("draw 120x40 frame with result", |b| {
        b.iter(|| {
            terminal.draw(|f| f.render_widget(&app, f.area())).unwrap();
        })
    });
    g.bench_function("update: key down + up (cached results)", |b| {
        b.iter(|| {
            app.update(key(KeyCode::Down));
            app.update(key(KeyCode::Up));
            app.take_commands()
        })
    });
    g.finish();

    // The render thread's round trip for a photo it has decoded before, overlay included:
    // what a cached result costs before it is on screen.
    let photo = images.join("chelsea.png");
    let mut g = c.benchmark_group("render cached chelsea.png with overlay");
    g.sample_size(20);
    for protocol in [
        ProtocolType::Halfblocks,
        ProtocolType::Sixel,
        ProtocolType::Kitty,
    ] {
        let mut picker = Picker::halfblocks();
        picker.set_protocol_type(protocol);
        let (tx, rx) = mpsc::channel();
        let renderer = Renderer::spawn(picker, move |e| tx.send(e).is_ok()).unwrap();
        let key = ImageKey::of(&photo);
        let analysis = {
            let img = load_rgb(&photo).unwrap();
            let prepared = classifier.prepare(&img, ResizeMode::Full).unwrap();
            Some(Arc::new(classifier.analyze(&prepared, 5, None).unwrap()))
        };
        let mut ticket = 0;
        let mut round_trip = |style: Style, cells: Size| {
            ticket += 1;
            renderer.send(RenderRequest {
                ticket,
                key: key.clone(),
                analysis: analysis.clone(),
                class: 0,
                style,
                cells,
                truth_boxes: Vec::new(),
            });
            rx.recv().unwrap().result.unwrap()
        };
        let pane = Size::new(88, 30);
        // A style never seen before: the overlay is drawn and encoded (the photo is decoded
        // and scaled already).
        let mut fresh = 0u32;
        let mut new_style = move || {
            fresh += 1;
            Style {
                alpha: 0.5 + (fresh % 10_000) as f32 * 1e-5,
                ..Style::default()
            }
        };
        g.bench_function(format!("{protocol:?} 88x30 cells, new style"), |b| {
            b.iter(|| round_trip(new_style(), pane))
        });
        // A new pane size too: the photo is scaled again (a new image costs this plus its
        // decoding).
        let mut flip = false;
        g.bench_function(format!("{protocol:?} 88x30 cells, new size"), |b| {
            b.iter(|| {
                flip = !flip;
                let cells = Size::new(if flip { 87 } else { 88 }, 30);
                round_trip(new_style(), cells)
            })
        });
        // The same picture again (back to an image seen a moment ago, or a neighbour made
        // ahead of time).
        g.bench_function(format!("{protocol:?} 88x30 cells, seen before"), |b| {
            b.iter(|| round_trip(Style::default(), pane))
        });
    }
    g.finish();
}

criterion_group!(benches, ui);
criterion_main!(benches);
