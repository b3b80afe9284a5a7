//! The terminal's side of pictures, shared by the browser and `camview cam`: which graphics
//! protocol to use ([`detect`]), where a picture goes and how it is encoded ([`place`]), and
//! printing one below the prompt ([`inline`]).

pub mod detect;
pub mod inline;
pub mod place;
pub mod shown;

pub use detect::{Graphics, detect, protocol_name};
pub use shown::ShownPicture;

/// How pictures reach the terminal, as the user asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Protocol {
    /// Ask the terminal what it supports.
    #[default]
    Auto,
    Kitty,
    Sixel,
    Iterm2,
    /// Unicode half blocks: works in any colour terminal.
    Halfblocks,
}
