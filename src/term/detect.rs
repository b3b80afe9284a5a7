//! Choosing how pictures reach the terminal: ask it (ratatui-image's picker), honour
//! `--protocol`, steer clear of kitty versions whose graphics ratatui-image cannot drive, and
//! use Konsole's graphics, which it does not announce.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui_image::picker::cap_parser::QueryStdioOptions;
use ratatui_image::picker::{Picker, ProtocolType};

use super::Protocol;
use crate::log;

/// Kitty draws ratatui-image's pictures through Unicode placeholders, which it has understood
/// since 0.28; older versions show the placeholders as boxes.
const KITTY_PLACEHOLDERS_SINCE: (u32, u32) = (0, 28);

/// Konsole shows iTerm2 and sixel pictures (seen in 22.12.3 and 25.04.2) but its answer to
/// the capability query announces neither, so the query alone gives half blocks. It names
/// itself in `KONSOLE_VERSION` (`221203` for 22.12.3), set in its sessions (not over ssh).
const KONSOLE_GRAPHICS_SINCE: u32 = 221200;

/// How long the terminal may take to answer the capability query. Local terminals answer in
/// milliseconds; this leaves room for ssh without making a silent terminal slow to start.
const QUERY_TIMEOUT: Duration = Duration::from_millis(1000);

/// How pictures reach this terminal.
#[derive(Debug, Clone)]
pub struct Graphics {
    /// The protocol and the font size, which sizes the pictures.
    pub picker: Picker,
    /// The largest picture the terminal shows, in pixels, where it says. xterm draws no sixel
    /// picture larger than its `maxGraphicSize` (1000 × 1000 unless configured), and says
    /// nothing: a browser pane or `camview cam` wider than 1000 pixels stayed blank.
    pub max_pixels: Option<(u32, u32)>,
}

impl From<Picker> for Graphics {
    fn from(picker: Picker) -> Self {
        Self {
            picker,
            max_pixels: None,
        }
    }
}

/// The graphics protocol (see [`picker`]) and, for sixel, the largest picture the terminal
/// shows. Call it in raw mode, before anything else reads stdin.
pub fn detect(protocol: Protocol) -> Graphics {
    let (picker, answered) = picker(protocol);
    // Only a terminal that answered the first query is asked again: a silent one would cost
    // another second and leave a reader waiting on its input.
    let max_pixels = if answered && picker.protocol_type() == ProtocolType::Sixel {
        query_sixel_limit()
    } else {
        None
    };
    log::debug(&format!(
        "picker: {:?}, font {:?}, largest picture {max_pixels:?}",
        picker.protocol_type(),
        picker.font_size()
    ));
    Graphics { picker, max_pixels }
}

/// The graphics protocol: asked of the terminal, unless `--protocol` names one; and whether
/// the terminal answered the query.
fn picker(protocol: Protocol) -> (Picker, bool) {
    let forced = match protocol {
        Protocol::Auto => None,
        Protocol::Halfblocks => return (Picker::halfblocks(), false),
        Protocol::Kitty => Some(ProtocolType::Kitty),
        Protocol::Sixel => Some(ProtocolType::Sixel),
        Protocol::Iterm2 => Some(ProtocolType::Iterm2),
    };
    if forced.is_none() && tmux_blocks_passthrough() {
        // tmux would swallow the query, and we would wait for answers that never come.
        log::debug("tmux without allow-passthrough: half blocks");
        return (Picker::halfblocks(), false);
    }
    // The query also measures the font, which sizes the pictures; a terminal that does not
    // answer gets half blocks, which need no font size.
    let options = QueryStdioOptions {
        timeout: QUERY_TIMEOUT,
        ..QueryStdioOptions::default()
    };
    let started = Instant::now();
    let (mut picker, mut answered) = match Picker::from_query_stdio_with_options(options) {
        Ok(picker) => (picker, true),
        Err(e) => {
            log::debug(&format!("graphics query failed ({e}): half blocks"));
            (Picker::halfblocks(), false)
        }
    };
    // ratatui-image turns a timeout into a guess; only the time tells it apart.
    if started.elapsed() >= QUERY_TIMEOUT {
        log::debug("no answer to the graphics query in time");
        release_query_reader();
        answered = false;
    }
    match forced {
        Some(kind) => picker.set_protocol_type(kind),
        None if picker.protocol_type() == ProtocolType::Kitty => {
            if let Some(version) = query_kitty_version()
                && version < KITTY_PLACEHOLDERS_SINCE
            {
                log::debug(&format!(
                    "kitty {version:?} predates Unicode placeholders: using half blocks"
                ));
                picker.set_protocol_type(ProtocolType::Halfblocks);
            }
        }
        // The answer measured the font, which sizes the pictures: only then are they usable.
        None if picker.protocol_type() == ProtocolType::Halfblocks && answered => {
            let konsole = std::env::var("KONSOLE_VERSION").ok();
            if let Some(kind) = konsole_protocol(konsole.as_deref()) {
                log::debug(&format!("Konsole {konsole:?}: {kind:?}"));
                picker.set_protocol_type(kind);
            }
        }
        None => {}
    }
    (picker, answered)
}

/// The protocol for a terminal whose `KONSOLE_VERSION` is `version`: iTerm2's (full colour
/// PNG, and a third of the sixel encoder's time here), from the versions seen to show it.
fn konsole_protocol(version: Option<&str>) -> Option<ProtocolType> {
    let version: u32 = version?.trim().parse().ok()?;
    (version >= KONSOLE_GRAPHICS_SINCE).then_some(ProtocolType::Iterm2)
}

/// True inside a tmux pane whose `allow-passthrough` is off (tmux ≥ 3.3; older versions pass
/// everything through and have no such option).
fn tmux_blocks_passthrough() -> bool {
    if std::env::var_os("TMUX").is_none() {
        return false;
    }
    std::process::Command::new("tmux")
        .args(["show-options", "-Apv", "allow-passthrough"])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"off")
}

/// After a timed-out query, ratatui-image's reader thread still waits on stdin for a status
/// report, and would steal the user's first keys. Ask for one (every terminal, and tmux
/// itself, answers `ESC [ 5 n`) so it finishes, and give it a moment to read it.
fn release_query_reader() {
    let mut out = std::io::stdout();
    if out.write_all(b"\x1b[5n").and_then(|()| out.flush()).is_ok() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The protocol's name for the status line.
pub fn protocol_name(picker: &Picker) -> &'static str {
    match picker.protocol_type() {
        ProtocolType::Halfblocks => "halfblocks",
        ProtocolType::Sixel => "sixel",
        ProtocolType::Kitty => "kitty",
        ProtocolType::Iterm2 => "iterm2",
    }
}

/// Asks the terminal its name and version (XTVERSION). `None` when the answer is not kitty's
/// (tmux answers for itself) or does not come in time.
fn query_kitty_version() -> Option<(u32, u32)> {
    parse_kitty_version(&query(b"\x1b[>0q")?)
}

/// Asks a sixel terminal the largest picture it shows (XTSMGRAPHICS, read the maximum).
/// `None` from terminals that do not know the request.
fn query_sixel_limit() -> Option<(u32, u32)> {
    parse_sixel_limit(&query(b"\x1b[?2;4;0S")?)
}

/// Sends `request` followed by a device-attributes request, which every terminal answers,
/// so the read always ends; returns everything read up to that answer, or `None` after a
/// second without it. The answer is read from `/dev/tty` a byte at a time, unbuffered: std's
/// buffered stdin could take keys typed meanwhile, which the input thread then never sees.
fn query(request: &[u8]) -> Option<String> {
    let mut tty = std::fs::File::open("/dev/tty").ok()?;
    let mut out = std::io::stdout();
    out.write_all(request).ok()?;
    out.write_all(b"\x1b[c").ok()?;
    out.flush().ok()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while tty.read_exact(&mut byte).is_ok() {
            reply.push(byte[0]);
            if ends_with_device_attributes(&reply) {
                break;
            }
        }
        let _ = tx.send(reply);
    });
    let reply = rx.recv_timeout(Duration::from_secs(1)).ok()?;
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// True once `reply` ends with a primary device attributes answer (`ESC [ ? … c`).
fn ends_with_device_attributes(reply: &[u8]) -> bool {
    reply.last() == Some(&b'c')
        && reply
            .windows(3)
            .rposition(|w| w == b"\x1b[?")
            .is_some_and(|start| {
                reply[start + 3..reply.len() - 1]
                    .iter()
                    .all(|b| b.is_ascii_digit() || *b == b';')
            })
}

/// The version in an XTVERSION answer such as `ESC P >|kitty(0.26.5) ESC \`.
fn parse_kitty_version(reply: &str) -> Option<(u32, u32)> {
    let start = reply.find(">|kitty(")? + ">|kitty(".len();
    let version = &reply[start..];
    let version = &version[..version.find(')')?];
    let mut parts = version.split('.').map(str::parse::<u32>);
    Some((parts.next()?.ok()?, parts.next()?.ok()?))
}

/// The size in an XTSMGRAPHICS answer for sixel pictures, `ESC [ ? 2 ; 0 ; W ; H S` (status
/// 0: success).
fn parse_sixel_limit(reply: &str) -> Option<(u32, u32)> {
    let start = reply.find("\x1b[?2;0;")? + "\x1b[?2;0;".len();
    let size = &reply[start..];
    let (width, height) = size[..size.find('S')?].split_once(';')?;
    let (width, height) = (width.parse().ok()?, height.parse().ok()?);
    (width > 0 && height > 0).then_some((width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kitty_versions_from_xtversion() {
        let reply = "\x1bP>|kitty(0.26.5)\x1b\\\x1b[?62;c";
        assert_eq!(parse_kitty_version(reply), Some((0, 26)));
        assert_eq!(
            parse_kitty_version("\x1bP>|kitty(0.35.2)\x1b\\"),
            Some((0, 35))
        );
        assert_eq!(parse_kitty_version("\x1bP>|tmux 3.3a\x1b\\"), None);
        assert!((0, 26) < KITTY_PLACEHOLDERS_SINCE && (0, 35) >= KITTY_PLACEHOLDERS_SINCE);
    }

    #[test]
    fn konsole_gets_iterm2_pictures_from_the_versions_seen_to_show_them() {
        assert_eq!(konsole_protocol(Some("221203")), Some(ProtocolType::Iterm2));
        assert_eq!(konsole_protocol(Some("250402")), Some(ProtocolType::Iterm2));
        assert_eq!(konsole_protocol(Some("210803")), None);
        assert_eq!(konsole_protocol(Some("")), None);
        assert_eq!(konsole_protocol(Some("konsole")), None);
        assert_eq!(konsole_protocol(None), None);
    }

    #[test]
    fn reads_the_largest_sixel_picture_from_xtsmgraphics() {
        // xterm 379's answer, then its device attributes.
        let reply = "\x1b[?2;0;1000;1000S\x1b[?63;1;2;4;6;9;15;16;22;28c";
        assert_eq!(parse_sixel_limit(reply), Some((1000, 1000)));
        assert_eq!(
            parse_sixel_limit("\x1b[?2;0;1920;1080S"),
            Some((1920, 1080))
        );
        // Failure statuses, other items and terminals that only answer the second request.
        assert_eq!(parse_sixel_limit("\x1b[?2;3;0S\x1b[?62c"), None);
        assert_eq!(parse_sixel_limit("\x1b[?1;0;256S\x1b[?62c"), None);
        assert_eq!(parse_sixel_limit("\x1b[?62;4c"), None);
        assert_eq!(parse_sixel_limit("\x1b[?2;0;0;0S"), None);
    }

    #[test]
    fn device_attributes_end_the_reply() {
        assert!(ends_with_device_attributes(
            b"\x1bP>|kitty(0.26.5)\x1b\\\x1b[?62;c"
        ));
        assert!(ends_with_device_attributes(b"\x1b[?1;2c"));
        assert!(!ends_with_device_attributes(b"\x1bP>|kitty(0.26.5)\x1b\\"));
        assert!(!ends_with_device_attributes(b"abc"));
    }
}
