//! Every key of the browser in one table: it turns key presses into [`Action`]s, draws the
//! help screen, and a test holds the README's key tables to it, so the three cannot drift.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key asks of the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    /// Esc: clears the filter, else the confusion the list is narrowed to, else quits.
    Escape,
    Up,
    Down,
    PageUp,
    PageDown,
    First,
    Last,
    OpenFolder,
    LeaveFolder,
    StartFilter,
    Reload,
    OpenHelp,
    CloseHelp,
    NextView,
    NextColormap,
    /// The next method of the CAM family.
    NextMethod,
    MoreHeat,
    LessHeat,
    ToggleBoxes,
    Save,
    /// Show the CAM of this row of the predictions table (0 = the best class).
    Row(usize),
    NextRow,
    PreviousRow,
    ShowTrueClass,
    NextShow,
    NextOrder,
    NextMiss,
    PreviousMiss,
    ToggleFlat,
    OpenSummary,
    // While typing a filter.
    KeepFilter,
    DeleteChar,
    ClearFilter,
    /// The typed character is added to the filter.
    Type,
    // While the dataset summary is open.
    PreviousConfusion,
    NextConfusion,
    NarrowToConfusion,
    CloseSummary,
}

/// When a key has its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Browsing (listed in the help and the README's browser table).
    Browser,
    /// Browsing a labelled folder (listed in the help of a dataset and the README's
    /// dataset table; elsewhere these keys do nothing).
    Dataset,
    /// While a filter is typed; other keys keep their browsing meaning.
    Filter,
    /// While the dataset summary is open.
    Summary,
    /// While the help is open.
    Help,
}

/// A key press a table entry answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// This key, whatever the modifiers.
    Key(KeyCode),
    /// The character with Ctrl held, in any context.
    Ctrl(char),
    /// Any character typed without Ctrl.
    Typed,
    /// Any other key (last in its context).
    Other,
}

impl Press {
    fn matches(self, key: KeyEvent) -> bool {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match (self, key.code) {
            (Press::Key(code), pressed) => code == pressed,
            (Press::Ctrl(c), KeyCode::Char(pressed)) => ctrl && pressed.eq_ignore_ascii_case(&c),
            (Press::Typed, KeyCode::Char(_)) => !ctrl,
            (Press::Other, _) => true,
            _ => false,
        }
    }
}

/// One row of the table: the keys as shown, what each press does, and what to say of it.
#[derive(Debug)]
pub struct Entry {
    pub keys: &'static str,
    pub presses: &'static [(Press, Action)],
    pub help: &'static str,
    pub context: Context,
}

const fn entry(
    context: Context,
    keys: &'static str,
    presses: &'static [(Press, Action)],
    help: &'static str,
) -> Entry {
    Entry {
        keys,
        presses,
        help,
        context,
    }
}

use Action as A;
use Context::{Browser, Dataset, Filter, Help, Summary};
use KeyCode as K;
use Press::{Ctrl, Key, Other, Typed};

const fn ch(c: char) -> Press {
    Key(K::Char(c))
}

/// Every key, in the order the help lists them.
pub const KEYS: &[Entry] = &[
    entry(
        Browser,
        "↑ ↓ / k j",
        &[
            (Key(K::Up), A::Up),
            (ch('k'), A::Up),
            (Key(K::Down), A::Down),
            (ch('j'), A::Down),
        ],
        "select the previous / next file",
    ),
    entry(
        Browser,
        "PgUp PgDn",
        &[(Key(K::PageUp), A::PageUp), (Key(K::PageDown), A::PageDown)],
        "move a page",
    ),
    entry(
        Browser,
        "g G, Home End",
        &[
            (ch('g'), A::First),
            (Key(K::Home), A::First),
            (ch('G'), A::Last),
            (Key(K::End), A::Last),
        ],
        "first / last file",
    ),
    entry(
        Browser,
        "Enter → l",
        &[
            (Key(K::Enter), A::OpenFolder),
            (Key(K::Right), A::OpenFolder),
            (ch('l'), A::OpenFolder),
        ],
        "open the selected folder",
    ),
    entry(
        Browser,
        "Backspace ← h",
        &[
            (Key(K::Backspace), A::LeaveFolder),
            (Key(K::Left), A::LeaveFolder),
            (ch('h'), A::LeaveFolder),
        ],
        "go up (not above the starting folder)",
    ),
    entry(
        Browser,
        "/",
        &[(ch('/'), A::StartFilter)],
        "filter names as you type (Enter keeps it)",
    ),
    entry(
        Browser,
        "Esc",
        &[(Key(K::Esc), A::Escape)],
        "clear the filter (or the confusion shown), else quit",
    ),
    entry(
        Browser,
        "r",
        &[(ch('r'), A::Reload)],
        "re-read the folder (or the dataset's images and labels)",
    ),
    // The mouse is handled apart; listed here to be in the help and the README.
    entry(
        Browser,
        "mouse",
        &[],
        "click selects a file or class, wheel scrolls",
    ),
    entry(
        Browser,
        "1 – 6",
        &[
            (ch('1'), A::Row(0)),
            (ch('2'), A::Row(1)),
            (ch('3'), A::Row(2)),
            (ch('4'), A::Row(3)),
            (ch('5'), A::Row(4)),
            (ch('6'), A::Row(5)),
        ],
        "show the CAM of that row of the table",
    ),
    entry(
        Browser,
        "Tab, Shift-Tab",
        &[(Key(K::Tab), A::NextRow), (Key(K::BackTab), A::PreviousRow)],
        "next / previous class",
    ),
    entry(
        Browser,
        "v",
        &[(ch('v'), A::NextView)],
        "cycle view: overlay, original, heat map, top-5 grid",
    ),
    entry(
        Browser,
        "c",
        &[(ch('c'), A::NextColormap)],
        "cycle colormap: jet, turbo, viridis, inferno",
    ),
    entry(
        Browser,
        "a",
        &[(ch('a'), A::NextMethod)],
        "cycle the map's method: CAM, Grad-CAM++ … Score-CAM",
    ),
    entry(
        Browser,
        "+ - (or = _)",
        &[
            (ch('+'), A::MoreHeat),
            (ch('='), A::MoreHeat),
            (ch('-'), A::LessHeat),
            (ch('_'), A::LessHeat),
        ],
        "more / less heat map in the blend",
    ),
    entry(
        Browser,
        "b",
        &[(ch('b'), A::ToggleBoxes)],
        "toggle the CAM box (green) and truth boxes (magenta)",
    ),
    entry(
        Browser,
        "s",
        &[(ch('s'), A::Save)],
        "save the picture at full size as PNG",
    ),
    entry(Browser, "?", &[(ch('?'), A::OpenHelp)], "toggle this help"),
    entry(
        Browser,
        "q, Ctrl-C",
        &[(ch('q'), A::Quit), (Ctrl('c'), A::Quit)],
        "quit",
    ),
    entry(
        Dataset,
        "m",
        &[(ch('m'), A::NextShow)],
        "show all → top-1 misses → top-1 hits",
    ),
    entry(
        Dataset,
        "o",
        &[(ch('o'), A::NextOrder)],
        "order: name → confidence ↑ → loss ↓ → margin ↑",
    ),
    entry(
        Dataset,
        "n / N",
        &[(ch('n'), A::NextMiss), (ch('N'), A::PreviousMiss)],
        "next / previous top-1 miss",
    ),
    entry(
        Dataset,
        "t",
        &[(ch('t'), A::ShowTrueClass)],
        "show the true class's CAM",
    ),
    entry(
        Dataset,
        "d",
        &[(ch('d'), A::OpenSummary)],
        "summary: per-class accuracy, confusions (Enter)",
    ),
    entry(
        Dataset,
        "f",
        &[(ch('f'), A::ToggleFlat)],
        "the flat list of all images, or their folders",
    ),
    entry(
        Filter,
        "Enter",
        &[(Key(K::Enter), A::KeepFilter)],
        "keeps the filter",
    ),
    entry(
        Filter,
        "Backspace",
        &[(Key(K::Backspace), A::DeleteChar)],
        "deletes a character",
    ),
    entry(
        Filter,
        "Esc",
        &[(Key(K::Esc), A::ClearFilter)],
        "clears the filter",
    ),
    entry(
        Filter,
        "a character",
        &[(Typed, A::Type)],
        "adds to the filter",
    ),
    entry(
        Summary,
        "↑ ↓ / k j",
        &[
            (Key(K::Up), A::PreviousConfusion),
            (ch('k'), A::PreviousConfusion),
            (Key(K::Down), A::NextConfusion),
            (ch('j'), A::NextConfusion),
        ],
        "choose a confusion",
    ),
    entry(
        Summary,
        "Enter",
        &[(Key(K::Enter), A::NarrowToConfusion)],
        "narrows the list to its images",
    ),
    entry(Summary, "q", &[(ch('q'), A::Quit)], "quits"),
    entry(
        Summary,
        "any other key",
        &[(Other, A::CloseSummary)],
        "closes",
    ),
    entry(Help, "q", &[(ch('q'), A::Quit)], "quits"),
    entry(
        Help,
        "any other key",
        &[(Other, A::CloseHelp)],
        "closes this help",
    ),
];

/// The action of `key` in the first of `contexts` that has one; a Ctrl key (Ctrl-C) means
/// the same everywhere, so it always gets out.
pub fn action(key: KeyEvent, contexts: &[Context]) -> Option<Action> {
    let global = KEYS
        .iter()
        .flat_map(|e| e.presses)
        .find(|(press, _)| matches!(press, Ctrl(_)) && press.matches(key));
    let press = global.or_else(|| {
        contexts.iter().find_map(|&context| {
            KEYS.iter()
                .filter(|e| e.context == context)
                .flat_map(|e| e.presses)
                .find(|(press, _)| press.matches(key))
        })
    });
    press.map(|&(_, action)| action)
}

/// The entries of `context`, in the table's order.
pub fn of(context: Context) -> impl Iterator<Item = &'static Entry> {
    KEYS.iter().filter(move |e| e.context == context)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn ctrl_c_quits_in_every_context() {
        let ctrl_c = press(K::Char('c'), KeyModifiers::CONTROL);
        for context in [Browser, Filter, Summary, Help] {
            assert_eq!(action(ctrl_c, &[context]), Some(A::Quit));
        }
    }

    #[test]
    fn the_first_context_with_the_key_wins() {
        let enter = press(K::Enter, KeyModifiers::NONE);
        assert_eq!(action(enter, &[Filter, Browser]), Some(A::KeepFilter));
        assert_eq!(action(enter, &[Browser]), Some(A::OpenFolder));
        // Ctrl-j is not typed into the filter: it moves down.
        let ctrl_j = press(K::Char('j'), KeyModifiers::CONTROL);
        assert_eq!(action(ctrl_j, &[Filter, Browser]), Some(A::Down));
        assert_eq!(action(press(K::F(5), KeyModifiers::NONE), &[Browser]), None);
        assert_eq!(
            action(press(K::F(5), KeyModifiers::NONE), &[Summary]),
            Some(A::CloseSummary)
        );
    }

    #[test]
    fn no_press_has_two_meanings_in_one_context() {
        for a in KEYS {
            for b in KEYS.iter().filter(|b| b.context == a.context) {
                for (p, _) in a.presses {
                    let twice = b.presses.iter().filter(|(q, _)| q == p).count();
                    let expected = usize::from(std::ptr::eq(a, b));
                    assert!(twice <= expected, "{p:?} twice in {:?}", a.context);
                }
            }
        }
    }

    /// The README's key tables: (context, keys, action) a row, backticks dropped. The
    /// browser's table is the first after its heading, the dataset's after its own.
    fn readme_rows() -> Vec<(Context, String, String)> {
        let readme = include_str!("../../README.md");
        let mut context = None;
        let mut rows = Vec::new();
        for line in readme.lines() {
            if line.starts_with("## The browser") {
                context = Some(Browser);
            } else if line.starts_with("### Reviewing a labelled dataset") {
                context = Some(Dataset);
            } else if line.starts_with("## ") {
                context = None;
            }
            let cells: Vec<String> = line
                .split('|')
                .map(|cell| cell.replace('`', "").trim().to_string())
                .collect();
            if let (Some(context), [_, keys, action, _]) = (context, cells.as_slice())
                && !matches!(keys.as_str(), "key" | "---")
            {
                rows.push((context, keys.clone(), action.clone()));
            }
        }
        rows
    }

    #[test]
    fn the_readme_lists_every_key_as_the_table_does() {
        let rows = readme_rows();
        assert!(rows.len() > 20, "the README's key tables are found");
        for e in KEYS
            .iter()
            .filter(|e| matches!(e.context, Browser | Dataset))
        {
            assert!(
                rows.iter()
                    .any(|(context, keys, action)| *context == e.context
                        && *keys == e.keys
                        && action.contains(e.help)),
                "README lacks the row `{}`: {} ({:?})",
                e.keys,
                e.help,
                e.context
            );
        }
        for (context, keys, _) in &rows {
            assert!(
                of(*context).any(|e| e.keys == keys),
                "the README's `{keys}` ({context:?}) is not in the key table"
            );
        }
        // Keys of a mode are told in the row of the key that opens it.
        for (mode, opener) in [(Filter, "/"), (Summary, "d"), (Help, "?")] {
            let (_, _, action) = rows.iter().find(|(_, keys, _)| keys == opener).unwrap();
            for e in of(mode) {
                let said = format!("{} {}", e.keys, e.help);
                assert!(action.contains(&said), "README's `{opener}` lacks `{said}`");
            }
        }
    }
}
