//! The browser in a real terminal: the built binary runs in a detached tmux session, keys
//! are sent to it, and the screen is read back with `tmux capture-pane`.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{reference_json, root, weights_path};

/// A tmux session that is killed when dropped.
struct Session {
    name: String,
}

impl Session {
    fn start(command: &str) -> Self {
        // One name per session: tests run in parallel on the same private server.
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let name = format!("camview-test-{}", SESSIONS.fetch_add(1, Ordering::Relaxed));
        let out = tmux(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            &name,
            command,
        ]);
        assert!(out.status.success(), "tmux: {}", stderr(&out));
        Self { name }
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &self.name]).stdout)
            .into_owned()
    }

    fn keys(&self, keys: &str) {
        tmux(&["send-keys", "-t", &self.name, keys]);
    }

    /// Polls the screen until `test` accepts it; panics with the last screen on timeout.
    fn wait_for(&self, what: &str, timeout: Duration, test: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if test(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        tmux(&["kill-session", "-t", &self.name]);
    }
}

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux")
        // A private server, so the test neither sees nor disturbs the user's sessions.
        .args(["-L", &format!("camview-test-{}", std::process::id())])
        .args(args)
        .output()
        .expect("run tmux")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tmux_available() -> bool {
    let found = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CAMVIEW_REQUIRE_TMUX").is_none(),
            "tmux is missing but CAMVIEW_REQUIRE_TMUX is set"
        );
        eprintln!("skipping: tmux is not installed (set CAMVIEW_REQUIRE_TMUX to make this fail)");
    }
    found
}

/// The reference top-1 label of a photo, as the UI writes it.
fn top1(name: &str) -> String {
    reference_json(name, "full")["top5"][0]["label"]
        .as_str()
        .unwrap()
        .replace('_', " ")
}

/// The bottom line of the UI.
fn status_line(screen: &str) -> &str {
    screen.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("")
}

/// The table row of the class whose CAM is shown.
fn shown_row(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.contains("▶1"))
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn browses_real_images_in_tmux_and_quits_cleanly() {
    if !tmux_available() {
        return;
    }
    let saved = tempfile::tempdir().unwrap();
    let command = format!(
        "cd {} && CAMVIEW_WEIGHTS={} {} --protocol halfblocks --save-dir {} images; \
         echo EXITED:$?; sleep 60",
        quote(&root()),
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
        quote(saved.path()),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));

    // The label follows the selection, photo by photo.
    for (step, name) in ["astronaut", "chelsea", "coffee", "rocket"]
        .iter()
        .enumerate()
    {
        if step > 0 {
            session.keys("j");
        }
        let label = top1(name);
        session.wait_for(
            &format!("{name} → {label}"),
            Duration::from_secs(60),
            |screen| {
                status_line(screen).contains(name)
                    && shown_row(screen).is_some_and(|row| row.contains(&label))
            },
        );
    }
    let screen = session.screen();
    assert!(screen.contains("4 images"), "{screen}");
    assert!(screen.contains("halfblocks"), "{screen}");

    // Help, then quit: the shell gets the exit status and the UI is gone.
    session.keys("?");
    session.wait_for("help", Duration::from_secs(10), |s| s.contains(" Keys "));
    // Any key closes the help (not Esc: tmux would glue it to the next key as Alt-q).
    session.keys("?");
    session.wait_for("help closed", Duration::from_secs(10), |s| {
        !s.contains(" Keys ")
    });
    // Save, and quit at once: the save still lands, whole.
    session.keys("sq");
    let screen = session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
    let files: Vec<String> = std::fs::read_dir(saved.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() == 1 && files[0].starts_with("rocket.overlay.") && files[0].ends_with(".png"),
        "{files:?}"
    );
    let png = image::open(saved.path().join(&files[0])).unwrap();
    assert_eq!((png.width(), png.height()), (640, 427));
    assert!(
        !screen.contains("Predictions"),
        "UI left on screen:\n{screen}"
    );
}

#[test]
fn cam_prints_the_picture_into_the_scrollback_and_returns_the_prompt() {
    if !tmux_available() {
        return;
    }
    let command = format!(
        // No newline after the status: the prompt's row, as a shell would use it.
        "cd {} && CAMVIEW_WEIGHTS={} {} cam images/chelsea.png; printf EXITED:$?; sleep 60",
        quote(&root()),
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));
    let screen = session.wait_for("exit", Duration::from_secs(60), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
    // tmux without passthrough gets half blocks; the caption goes under the picture.
    let lines: Vec<&str> = screen.lines().collect();
    let caption = lines
        .iter()
        .position(|l| l.starts_with("images/chelsea.png: rank 1 "))
        .unwrap_or_else(|| panic!("no caption:\n{screen}"));
    assert!(lines[caption].contains(&top1("chelsea")), "{screen}");
    assert!(lines[caption].ends_with("(halfblocks)"), "{screen}");
    assert!(lines[caption + 1].starts_with("EXITED:0"), "{screen}");
    // Above it, the picture: as large as 120 × 40 cells allow with two rows to spare, in
    // the photo's aspect ratio (451 × 300; a half block is one pixel wide and two high).
    let picture: Vec<&str> = lines[..caption]
        .iter()
        .copied()
        .filter(|l| l.chars().filter(|c| matches!(c, '▀' | '▄')).count() > 10)
        .collect();
    let rows = picture.len();
    let width = picture.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(
        rows == 38 && width <= 120,
        "{rows} rows of {width}:\n{screen}"
    );
    let aspect = width as f64 / (2 * rows) as f64;
    assert!(
        (aspect - 451.0 / 300.0).abs() < 0.05,
        "aspect {aspect}:\n{screen}"
    );
}

#[test]
fn cam_with_stdin_elsewhere_prints_half_blocks_without_asking_the_terminal() {
    if !tmux_available() {
        return;
    }
    // `xargs` and pipes take stdin away: nothing can answer a query, half blocks need none.
    let command = format!(
        "cd {} && export CAMVIEW_WEIGHTS={}; {2} cam images/coffee.png </dev/null; echo A:$?; \
         {2} cam images/coffee.png --protocol sixel </dev/null; printf B:$?; sleep 60",
        quote(&root()),
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));
    let screen = session.wait_for("exit", Duration::from_secs(60), |s| s.contains("B:"));
    let lines: Vec<&str> = screen.lines().collect();
    let caption = lines
        .iter()
        .position(|l| l.starts_with("images/coffee.png: rank 1 "))
        .unwrap_or_else(|| panic!("no caption:\n{screen}"));
    assert!(lines[caption].ends_with("(halfblocks)"), "{screen}");
    assert!(lines[caption + 1].starts_with("A:0"), "{screen}");
    assert!(
        lines[caption - 1]
            .chars()
            .filter(|c| matches!(c, '▀' | '▄'))
            .count()
            > 10,
        "the picture is above the caption:\n{screen}"
    );
    assert!(
        screen.contains("--protocol sixel needs stdin to be the terminal"),
        "{screen}"
    );
    assert!(screen.contains("B:2"), "{screen}");
}

#[test]
fn a_missing_folder_is_an_error_before_the_terminal_is_touched() {
    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .arg("target/ui-fixtures/no-such-folder")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("cannot open target/ui-fixtures/no-such-folder"),
        "{err}"
    );
    // No escape sequences: the alternate screen was never entered.
    assert!(!String::from_utf8_lossy(&out.stdout).contains('\x1b'));
}

/// (top-1 right, in the top 5) for the true class `truth` of photo `name`, by the golden
/// reference.
fn reference_verdict(name: &str, truth: u64) -> (bool, bool) {
    let top5 = reference_json(name, "full")["top5"].clone();
    let indices: Vec<u64> = top5
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["index"].as_u64().unwrap())
        .collect();
    (indices[0] == truth, indices.contains(&truth))
}

#[test]
fn reviews_a_labelled_folder_and_shows_exactly_its_misses() {
    review_a_labelled_folder("");
}

/// The same with the background sweep in batches of 4 through the pipeline (what it does
/// on a GPU, 64 at a time).
#[test]
fn a_sweep_in_batches_reviews_the_folder_alike() {
    review_a_labelled_folder("CAMVIEW_SWEEP_BATCH=4");
}

/// The browser on the labelled dataset, with `env` set: every verdict mark as the golden
/// reference says, and `m` narrows the list to exactly the misses.
fn review_a_labelled_folder(env: &str) {
    if !tmux_available() {
        return;
    }
    let d = crate::labelled::build();
    let command = format!(
        "{env} CAMVIEW_WEIGHTS={} {} --protocol halfblocks --no-store --boxes {} {}; \
         echo EXITED:$?; sleep 60",
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
        quote(&d.dir.path().join("boxes")),
        quote(&d.root()),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));

    // What the golden reference says of each labelled photo.
    let labelled: Vec<(&str, (bool, bool))> = crate::labelled::LAYOUT
        .iter()
        .filter_map(|&(rel, name, truth)| Some((rel, reference_verdict(name, truth?))))
        .collect();
    let n = labelled.len();
    let top1 = labelled.iter().filter(|(_, v)| v.0).count();
    let top5 = labelled.iter().filter(|(_, v)| v.1).count();
    let title = format!("top-1 {top1}/{n} · top-5 {top5}/{n}");
    // The background sweep reaches every image without a key pressed.
    let screen = session.wait_for(&title, Duration::from_secs(120), |s| s.contains(&title));
    assert!(
        screen.contains("all · by name") && screen.contains("6 images"),
        "{screen}"
    );
    // The flat list: paths below the folder, each with its verdict mark.
    for &(rel, (right, in_top5)) in &labelled {
        let mark = if right {
            '✓'
        } else if in_top5 {
            '5'
        } else {
            '✗'
        };
        let row = screen
            .lines()
            .find(|l| l.starts_with('│') && l.contains(rel))
            .unwrap_or_else(|| panic!("{rel} not listed:\n{screen}"));
        assert!(row.starts_with(&format!("│{mark}")), "{rel}: {row}");
    }

    session.keys("m");
    let screen = session.wait_for("the misses", Duration::from_secs(10), |s| {
        s.contains("top-1 misses · by name")
    });
    let listed: Vec<&str> = labelled
        .iter()
        .map(|(rel, _)| *rel)
        .chain(["loose.png"])
        .filter(|rel| {
            screen
                .lines()
                .any(|l| l.starts_with('│') && l.contains(rel))
        })
        .collect();
    let misses: Vec<&str> = labelled
        .iter()
        .filter(|(_, v)| !v.0)
        .map(|(rel, _)| *rel)
        .collect();
    let mut want = misses.clone();
    want.sort_by_key(|r| r.to_lowercase());
    let mut got = listed.clone();
    got.sort_by_key(|r| r.to_lowercase());
    assert_eq!(got, want, "{screen}");
    assert!(
        screen.contains(&format!("{} images", misses.len())),
        "{screen}"
    );
    session.keys("q");
    let screen = session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
}

#[test]
fn an_image_given_opens_its_folder_with_it_selected() {
    if !tmux_available() {
        return;
    }
    let command = format!(
        "cd {} && CAMVIEW_WEIGHTS={} {} --protocol halfblocks --no-store images/coffee.png; \
         echo EXITED:$?; sleep 60",
        quote(&root()),
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));
    let label = top1("coffee");
    let screen = session.wait_for("coffee selected", Duration::from_secs(60), |s| {
        status_line(s).contains("coffee.png") && shown_row(s).is_some_and(|r| r.contains(&label))
    });
    assert!(screen.contains("▶ coffee.png"), "{screen}");
    assert!(screen.contains("4 images"), "the whole folder:\n{screen}");
    session.keys("q");
    session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:0"));
}

/// The bug of issue 21 in a real terminal: an espresso filed as a tench has its true class
/// in the table's sixth row, with the rank the golden reference gives it; `t` shows its CAM,
/// and so does a mouse click on that row.
#[test]
fn a_true_class_below_the_top_5_is_shown_and_chosen_by_key_and_click() {
    if !tmux_available() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    crate::labelled::build_misfiled_at(data.path());
    let command = format!(
        "CAMVIEW_WEIGHTS={} {} --protocol halfblocks --no-store {}; echo EXITED:$?; sleep 60",
        quote(weights_path()),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
        quote(data.path()),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));
    let rank = crate::labelled::tench_rank_for_coffee();
    assert!(rank > 5, "the reference ranks tench {rank}");
    let truth_row = |s: &str| {
        s.lines()
            .find(|l| l.contains("← true class"))
            .map(str::to_string)
    };
    let screen = session.wait_for("the true class's row", Duration::from_secs(60), |s| {
        truth_row(s).is_some_and(|r| r.contains(&format!(" {rank} tench ← true class")))
    });
    assert!(
        shown_row(&screen).is_some_and(|r| r.contains(&top1("coffee"))),
        "{screen}"
    );
    let shown = |s: &str, label: &str| s.contains(&format!("CAM of {label}"));
    let marked = format!("▶{rank} tench ← true class");

    session.keys("t");
    session.wait_for("t: the CAM of tench", Duration::from_secs(10), |s| {
        shown(s, "tench") && truth_row(s).is_some_and(|r| r.contains(&marked))
    });

    session.keys("1");
    let screen = session.wait_for("1: the CAM of espresso", Duration::from_secs(10), |s| {
        shown(s, "espresso") && !s.contains(&marked)
    });
    // A left click on the row's label, as an SGR mouse report (1-based column and row):
    // what the terminal sends once the app has asked for mouse reports.
    let (y, row) = screen
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("← true class"))
        .unwrap();
    let x = row[..row.find("tench").unwrap()].chars().count();
    let click = format!("\x1b[<0;{};{}M\x1b[<0;{};{}m", x + 1, y + 1, x + 1, y + 1);
    let hex: Vec<String> = click.bytes().map(|b| format!("{b:02x}")).collect();
    let mut args = vec!["send-keys", "-t", &session.name, "-H"];
    args.extend(hex.iter().map(String::as_str));
    assert!(tmux(&args).status.success());
    session.wait_for("click: the CAM of tench", Duration::from_secs(10), |s| {
        shown(s, "tench") && truth_row(s).is_some_and(|r| r.contains(&marked))
    });

    session.keys("q");
    let screen = session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
}

/// The browser on an ImageFolder whose folders name a model nothing else names (basic.pth,
/// a bare checkpoint with a 7-class head; torchvision's sorted-folder rule): the status line
/// says so, and the review is what `camview eval --json` says (see [`review_own_folder`]).
#[test]
fn reviews_an_image_folder_named_by_its_folders_for_an_own_model() {
    review_own_folder(
        "basic.pth",
        &["apple", "Zinc", "9", "fig", "10", "pear", "kiwi"],
        Some("the model's 7 classes are named after the sorted class"),
    );
}

/// The same with a timm folder whose config names its 3 classes, the folders written as a
/// user might.
#[test]
fn reviews_an_image_folder_named_by_a_timm_folders_classes() {
    review_own_folder("timm_resnetd", &["Scratch", "dent", "clean", "dent"], None);
}

/// The browser with `tests/fixtures/models/{model}` on the sample photos copied into
/// `folders` (the i-th photo into the i-th folder; more folders stay empty): every verdict
/// mark is what `camview eval --json` says of the image, whose top-1 accuracy the title
/// gives, `m` lists exactly the misses, and the summary's confusions are named by the
/// model's classes; `note` is the status line's, if any.
fn review_own_folder(model: &str, folders: &[&str], note: Option<&str>) {
    if !tmux_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for folder in folders {
        std::fs::create_dir_all(data.join(folder)).unwrap();
    }
    let mut rels = Vec::new();
    for (i, name) in crate::common::PHOTOS.iter().enumerate() {
        let from = crate::common::photo(name);
        let rel = format!(
            "{}/{}",
            folders[i],
            from.file_name().unwrap().to_str().unwrap()
        );
        std::fs::copy(&from, data.join(&rel)).unwrap();
        rels.push(rel);
    }
    let model = root().join("tests/fixtures/models").join(model);
    // The reference: eval's verdicts on the same folder.
    let out = Command::new(env!("CARGO_BIN_EXE_camview"))
        .args(["eval", "--json", "--no-store", "--model"])
        .arg(&model)
        .arg(&data)
        .env_remove("CAMVIEW_MODEL")
        .env_remove("CAMVIEW_WEIGHTS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let verdict = |rel: &str| {
        let line = lines
            .iter()
            .find(|l| l["path"].as_str().unwrap().ends_with(rel))
            .unwrap();
        (
            line["top1_correct"].as_bool().unwrap(),
            line["top5_correct"].as_bool().unwrap(),
            format!(
                "{} → {}",
                line["truth"]["label"].as_str().unwrap(),
                line["top"][0]["label"].as_str().unwrap()
            ),
        )
    };
    let n = rels.len();
    let top1 = rels.iter().filter(|r| verdict(r).0).count();
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["top1"].as_f64().unwrap(), top1 as f64 / n as f64);
    assert_eq!(summary["unlabelled"], 0, "{summary}");
    let top5 = rels.iter().filter(|r| verdict(r).1).count();

    let command = format!(
        "{} --model {} --protocol halfblocks --no-store {}; echo EXITED:$?; sleep 60",
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
        quote(&model),
        quote(&data),
    );
    let session = Session::start(&format!(
        "env -u CAMVIEW_MODEL -u CAMVIEW_WEIGHTS sh -c {}",
        quote(Path::new(&command))
    ));
    let title = format!("top-1 {top1}/{n} · top-5 {top5}/{n}");
    let screen = session.wait_for(&title, Duration::from_secs(120), |s| s.contains(&title));
    if let Some(note) = note {
        assert!(status_line(&screen).contains(note), "{screen}");
    }
    for rel in &rels {
        let (right, in_top5, _) = verdict(rel);
        let mark = if right {
            '✓'
        } else if in_top5 {
            '5'
        } else {
            '✗'
        };
        let row = screen
            .lines()
            .find(|l| l.starts_with('│') && l.contains(rel.as_str()))
            .unwrap_or_else(|| panic!("{rel} not listed:\n{screen}"));
        assert!(row.starts_with(&format!("│{mark}")), "{rel}: {row}");
    }

    session.keys("m");
    let screen = session.wait_for("the misses", Duration::from_secs(10), |s| {
        s.contains("top-1 misses · by name")
    });
    let mut listed: Vec<&str> = rels
        .iter()
        .map(String::as_str)
        .filter(|rel| {
            screen
                .lines()
                .any(|l| l.starts_with('│') && l.contains(rel))
        })
        .collect();
    let mut misses: Vec<&str> = rels
        .iter()
        .map(String::as_str)
        .filter(|r| !verdict(r).0)
        .collect();
    listed.sort();
    misses.sort();
    assert_eq!(listed, misses, "{screen}");

    session.keys("d");
    let screen = session.wait_for("the summary", Duration::from_secs(10), |s| {
        s.contains("Most frequent confusions")
    });
    for rel in &misses {
        let confusion = verdict(rel).2;
        assert!(screen.contains(&confusion), "`{confusion}` in:\n{screen}");
    }
    session.keys("q");
    session.keys("q");
    let screen = session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
}

/// The method key in a real terminal: `--method` (here through `CAMVIEW_METHOD`) chooses the
/// first, `a` cycles, the picture's title names each, `s` saves the engine's map of that
/// method, Score-CAM shows its passes' progress and a newer selection stops them, and the
/// help lists the key.
#[test]
fn the_method_key_cycles_the_maps_method() {
    use camview::model::cam_methods::CamMethod;
    use camview::overlay::{self, Style};

    if !tmux_available() {
        return;
    }
    let saved = tempfile::tempdir().unwrap();
    let log = saved.path().join("camview.log");
    let command = format!(
        "cd {} && CAMVIEW_WEIGHTS={} CAMVIEW_METHOD=layercam CAMVIEW_LOG={} {} \
         --protocol halfblocks --save-dir {} images/chelsea.png; echo EXITED:$?; sleep 60",
        quote(&root()),
        quote(weights_path()),
        quote(&log),
        quote(Path::new(env!("CARGO_BIN_EXE_camview"))),
        quote(saved.path()),
    );
    let session = Session::start(&format!("sh -c {}", quote(Path::new(&command))));
    // The title's border follows the method's name once its maps are in (` …` before).
    let title = |s: &str, what: &str| {
        s.lines()
            .any(|l| l.contains(&format!("chelsea.png — {what}")))
    };
    session.wait_for("LayerCAM's map", Duration::from_secs(60), |s| {
        title(s, "LayerCAM of Egyptian cat ─")
    });

    // The picture saved is the engine's LayerCAM map, drawn as every CAM is.
    session.keys("s");
    session.wait_for("saved", Duration::from_secs(20), |s| s.contains("saved "));
    let name = "chelsea.overlay.layercam.285-Egyptian_cat.png";
    let classifier = crate::common::classifier();
    let chelsea = crate::common::photo("chelsea");
    let img = camview::model::preprocess::load_rgb(&chelsea).unwrap();
    let prepared = classifier
        .prepare(&img, camview::model::ResizeMode::Full)
        .unwrap();
    let mut analysis = classifier.analyze(&prepared, 5, None).unwrap();
    let classes: Vec<usize> = analysis.top.iter().map(|p| p.index).collect();
    analysis.cams = classifier
        .method_maps(&prepared, &classes, CamMethod::LayerCam, 16, &mut |_, _| {
            std::ops::ControlFlow::Continue(())
        })
        .unwrap()
        .unwrap();
    let expected = overlay::render(&img, img.dimensions(), Some(&analysis), 0, Style::default());
    let png = image::open(saved.path().join(name)).unwrap().to_rgb8();
    assert!(
        png == expected,
        "the saved picture is the engine's LayerCAM map"
    );

    // `a` cycles; each method is named in the picture's title.
    for method in [
        "Ablation-CAM of Egyptian cat ─",
        "EigenCAM (class-agnostic) ─",
    ] {
        session.keys("a");
        session.wait_for(method, Duration::from_secs(20), |s| title(s, method));
    }
    // Score-CAM: its passes run in the background, their progress on screen.
    session.keys("a");
    let progress = |s: &str| {
        s.lines()
            .any(|l| l.contains("Score-CAM ") && l.contains("/2048"))
    };
    session.wait_for("Score-CAM's progress", Duration::from_secs(120), |s| {
        title(s, "Score-CAM of Egyptian cat: ") && progress(s)
    });
    // A newer selection: coffee's Score-CAM starts, chelsea's stops; keys keep working.
    session.keys("j");
    session.wait_for("coffee's Score-CAM", Duration::from_secs(60), |s| {
        s.lines()
            .any(|l| l.contains("coffee.png — Score-CAM of espresso"))
    });
    session.keys("a");
    session.wait_for("CAM again", Duration::from_secs(20), |s| {
        s.lines()
            .any(|l| l.contains("coffee.png — CAM of espresso"))
            && !progress(s)
    });
    let stopped = "scorecam maps of images/chelsea.png: stopped";
    let logged = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(stopped)
    {
        assert!(
            logged.elapsed() < Duration::from_secs(60),
            "chelsea's Score-CAM never stopped:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The help lists the key.
    session.keys("?");
    let help = session.wait_for("help", Duration::from_secs(10), |s| s.contains(" Keys "));
    assert!(
        help.lines()
            .any(|l| l.contains(" a ") && l.contains("cycle the map's method")),
        "{help}"
    );
    session.keys("q");
    let screen = session.wait_for("exit", Duration::from_secs(10), |s| s.contains("EXITED:"));
    assert!(screen.contains("EXITED:0"), "{screen}");
}
