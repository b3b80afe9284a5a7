//! A picture printed into the terminal's scrollback, outside the browser (`camview cam`). It
//! goes through the browser's protocol choice ([`super::detect`]), so `--protocol`
//! works the same and sixel terminals and Konsole get pixels, not half blocks. With stdin
//! elsewhere (a pipe, `xargs`) nothing can be asked, and half blocks, plain coloured text,
//! need nothing.

use std::io::{IsTerminal, Write, stdout};

use anyhow::{Context, bail};
use crossterm::queue;
use crossterm::style::{Print, ResetColor, SetBackgroundColor, SetForegroundColor};
use crossterm::terminal;
use image::RgbImage;
use ratatui::backend::IntoCrossterm;
use ratatui::buffer::Buffer;
use ratatui::layout::{Rect, Size};
use ratatui::prelude::CrosstermBackend;
use ratatui::widgets::Widget;
use ratatui::{Terminal, TerminalOptions, Viewport};
use ratatui_image::Image;
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::Protocol as ImageProtocol;

use super::place::{self, Placement};
use super::{Graphics, Protocol};

/// Prints `picture` below the cursor, as large as the terminal's width and height allow
/// with two rows to spare (a caption and the prompt), and leaves the cursor on the line after
/// it. Returns the protocol's name.
pub fn print_picture(picture: RgbImage, protocol: Protocol) -> anyhow::Result<&'static str> {
    check_terminal()?;
    let graphics = if std::io::stdin().is_terminal() {
        let _raw = RawMode::enable()?;
        super::detect(protocol)
    } else {
        // Nobody can answer a query (`xargs camview cam`): half blocks need none.
        if !matches!(protocol, Protocol::Auto | Protocol::Halfblocks) {
            let name = format!("{protocol:?}").to_lowercase();
            bail!("--protocol {name} needs stdin to be the terminal, to ask its font size");
        }
        Graphics::from(Picker::halfblocks())
    };
    let picker = &graphics.picker;
    let (cols, rows) = terminal::size().context("cannot read the terminal size")?;
    let room = Size::new(cols.max(1), rows.saturating_sub(2).max(1));
    let Placement { cells, pixels } = place::placement(&graphics, picture.dimensions(), room);
    let picture = crate::overlay::scale(&picture, pixels);
    let image = place::encode(picker, picture, cells)?;
    if picker.protocol_type() == ProtocolType::Halfblocks {
        print_text(&image, cells)?;
    } else {
        print_graphics(&image, cells)?;
    }
    Ok(super::protocol_name(picker))
}

/// Half blocks are coloured text: printed row by row, they need no cursor position, which a
/// terminal that answers no query would never give.
fn print_text(image: &ImageProtocol, cells: Size) -> std::io::Result<()> {
    let area = Rect::new(0, 0, cells.width, cells.height);
    let mut buffer = Buffer::empty(area);
    Image::new(image).render(area, &mut buffer);
    let mut out = stdout().lock();
    for y in 0..cells.height {
        for x in 0..cells.width {
            let cell = &buffer[(x, y)];
            queue!(
                out,
                SetForegroundColor(cell.fg.into_crossterm()),
                SetBackgroundColor(cell.bg.into_crossterm()),
                Print(cell.symbol())
            )?;
        }
        queue!(out, ResetColor, Print("\n"))?;
    }
    out.flush()
}

/// Pictures in a graphics protocol are drawn at a place on the screen: through an inline
/// viewport, which asks the terminal where the cursor is (it answered the graphics query).
fn print_graphics(image: &ImageProtocol, cells: Size) -> anyhow::Result<()> {
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
            frame.render_widget(Image::new(image), at);
        })
        .context("cannot draw the picture")?;
    // The viewport's last row holds the picture's bottom: the prompt goes on the next one.
    let bottom = terminal.get_frame().area().bottom();
    terminal.set_cursor_position((0, bottom.saturating_sub(1)))?;
    drop(terminal);
    let mut out = stdout();
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Fails unless stdout is a terminal: cheap, so callers check before slow work.
pub fn check_terminal() -> anyhow::Result<()> {
    if !stdout().is_terminal() {
        bail!("stdout is not a terminal: pass -o OUT.png to write the picture to a file");
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
