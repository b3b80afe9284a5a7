//! A picture printed into the terminal's scrollback, outside the browser (`camview cam`). It
//! goes through the browser's protocol choice ([`super::terminal::detect`]), so `--protocol`
//! works the same and sixel terminals and Konsole get pixels, not half blocks.

use std::io::{IsTerminal, Write, stdout};

use anyhow::{Context, bail};
use crossterm::terminal;
use image::RgbImage;
use ratatui::layout::{Rect, Size};
use ratatui::prelude::CrosstermBackend;
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::Image;

use super::render::{self, Placement};
use crate::cli::Protocol;

/// Prints `picture` below the cursor, as large as the terminal's width and height allow
/// with two rows to spare (a caption and the prompt), and leaves the cursor on the line after
/// it. Returns the protocol's name.
pub fn print_picture(picture: RgbImage, protocol: Protocol) -> anyhow::Result<&'static str> {
    check_terminal()?;
    let graphics = {
        let _raw = RawMode::enable()?;
        super::terminal::detect(protocol)
    };
    let picker = &graphics.picker;
    let (cols, rows) = terminal::size().context("cannot read the terminal size")?;
    let room = Size::new(cols.max(1), rows.saturating_sub(2).max(1));
    let Placement { cells, pixels } = render::placement(&graphics, picture.dimensions(), room);
    let picture = render::scale(&picture, pixels);
    let image = render::encode(picker, picture, cells).map_err(anyhow::Error::msg)?;
    let mut terminal = Terminal::with_options(
        CrosstermBackend::new(stdout()),
        TerminalOptions {
            viewport: Viewport::Inline(cells.height),
        },
    )
    .context("cannot set up the terminal")?;
    terminal
        .draw(|frame| {
            let area = frame.area();
            let at = Rect {
                width: cells.width.min(area.width),
                ..area
            };
            frame.render_widget(Image::new(&image), at);
        })
        .context("cannot draw the picture")?;
    // The viewport's last row holds the picture's bottom: the prompt goes on the next one.
    let bottom = terminal.get_frame().area().bottom();
    terminal.set_cursor_position((0, bottom.saturating_sub(1)))?;
    drop(terminal);
    let mut out = stdout();
    writeln!(out)?;
    out.flush()?;
    Ok(super::terminal::protocol_name(picker))
}

/// Fails unless stdin and stdout are a terminal (the graphics query needs both): cheap, so
/// callers check before slow work.
pub fn check_terminal() -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() || !stdout().is_terminal() {
        bail!(
            "stdin and stdout are not a terminal: pass -o OUT.png to write the picture to a file"
        );
    }
    Ok(())
}

/// Raw mode for the graphics query, switched off again however the query ends.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<Self> {
        terminal::enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        Ok(Self)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = terminal::disable_raw_mode();
    }
}
