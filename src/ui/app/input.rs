//! Keys and the mouse: a key is looked up in the key table ([`super::super::keys`]) and its [`Action`] done here.

use crossterm::event::{KeyCode, KeyEvent, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Size};
use ratatui::widgets::Block;

use super::{App, Command};
use crate::ui::keys::{self, Action, Context};

/// Alpha moved by `steps` tenths, kept within 0..=1 and on the tenths.
fn step_alpha(alpha: f32, steps: i32) -> f32 {
    let tenths = ((alpha * 10.0).round() as i32 + steps).clamp(0, 10);
    tenths as f32 / 10.0
}

impl App {
    /// A key: looked up in the key table where it now has its meaning, then done.
    pub(super) fn on_key(&mut self, key: KeyEvent) {
        self.notice = None;
        if let Some(action) = keys::action(key, self.key_contexts()) {
            self.perform(action, key);
        }
    }

    /// Where keys are looked up now, first to last: the help and the dataset summary take
    /// every key; while a filter is typed, keys it does not use keep their meaning.
    pub(super) fn key_contexts(&self) -> &'static [Context] {
        let summary = self.review.as_ref().is_some_and(|r| r.summary.is_some());
        match (self.help, self.files.typing, summary) {
            (true, _, _) => &[Context::Help],
            (false, true, true) => &[Context::Filter, Context::Summary],
            (false, true, false) => &[Context::Filter, Context::Browser, Context::Dataset],
            (false, false, true) => &[Context::Summary],
            (false, false, false) => &[Context::Browser, Context::Dataset],
        }
    }

    pub(super) fn perform(&mut self, action: Action, key: KeyEvent) {
        match action {
            Action::Quit => self.quit = true,
            Action::Escape => self.escape(),
            Action::Up => self.move_selection(-1),
            Action::Down => self.move_selection(1),
            Action::PageUp => self.move_selection(-self.page_rows()),
            Action::PageDown => self.move_selection(self.page_rows()),
            Action::First => self.select(0),
            Action::Last => self.select(usize::MAX),
            Action::OpenFolder => self.open_folder(),
            Action::LeaveFolder => self.go_up(),
            Action::StartFilter => self.files.typing = true,
            Action::Reload => self.reload(),
            Action::OpenHelp => self.help = true,
            Action::CloseHelp => self.help = false,
            Action::NextView => self.restyle(|s| s.view = s.view.next()),
            Action::NextColormap => self.restyle(|s| s.colormap = s.colormap.next()),
            Action::NextMethod => self.next_method(),
            Action::MoreHeat => self.restyle(|s| s.alpha = step_alpha(s.alpha, 1)),
            Action::LessHeat => self.restyle(|s| s.alpha = step_alpha(s.alpha, -1)),
            Action::ToggleBoxes => self.restyle(|s| s.bbox = !s.bbox),
            Action::Save => self.save(),
            Action::Row(row) => self.choose_class(row),
            Action::NextRow => self.cycle_class(1),
            Action::PreviousRow => self.cycle_class(-1),
            Action::ShowTrueClass => self.show_true_class(),
            Action::NextShow => self.rearrange(|r| {
                r.flat = true;
                r.show = r.show.next();
            }),
            Action::NextOrder => self.rearrange(|r| {
                r.flat = true;
                r.order = r.order.next();
            }),
            Action::NextMiss => self.jump_to_miss(1),
            Action::PreviousMiss => self.jump_to_miss(-1),
            Action::ToggleFlat => self.toggle_flat(),
            Action::OpenSummary => {
                if let Some(review) = &mut self.review {
                    review.summary = Some(0);
                }
            }
            Action::KeepFilter => self.files.typing = false,
            Action::DeleteChar => self.delete_filter_char(),
            Action::ClearFilter => self.clear_filter(),
            Action::Type => {
                if let KeyCode::Char(c) = key.code {
                    let filter = format!("{}{c}", self.files.filter);
                    self.files.set_filter(filter);
                    self.selection_changed();
                }
            }
            Action::PreviousConfusion
            | Action::NextConfusion
            | Action::NarrowToConfusion
            | Action::CloseSummary => self.in_summary(action),
        }
    }

    /// Esc: the filter goes first, then the confusion the list is narrowed to, then camview.
    pub(super) fn escape(&mut self) {
        if !self.files.filter.is_empty() {
            self.clear_filter();
        } else if self.review.as_ref().is_some_and(|r| r.confusion.is_some()) {
            self.rearrange(|r| r.confusion = None);
        } else {
            self.quit = true;
        }
    }

    pub(super) fn reload(&mut self) {
        if self.files.flat {
            // The dataset's images and labels, read again; the list stays meanwhile.
            self.commands.push(Command::ReadDataset);
        } else {
            // New files appear; a changed file has a new key, so it is analysed again.
            let listing = self.files.reload();
            self.commands.push(Command::List(listing));
        }
    }

    pub(super) fn clear_filter(&mut self) {
        self.files.clear_filter();
        self.selection_changed();
    }

    /// Backspace in the filter; on an empty filter it stops the typing.
    pub(super) fn delete_filter_char(&mut self) {
        let mut filter = self.files.filter.clone();
        if filter.pop().is_none() {
            self.files.typing = false;
        }
        self.files.set_filter(filter);
        self.selection_changed();
    }

    /// The dataset summary's keys: move among the confusions, narrow the list to the chosen
    /// one, or close it.
    pub(super) fn in_summary(&mut self, action: Action) {
        let Some(review) = &mut self.review else {
            return;
        };
        let confusions = review.confusions();
        let at = review.summary.unwrap_or(0);
        match action {
            Action::PreviousConfusion => review.summary = Some(at.saturating_sub(1)),
            Action::NextConfusion => {
                review.summary = Some((at + 1).min(confusions.len().saturating_sub(1)));
            }
            Action::NarrowToConfusion => {
                if let Some(c) = confusions.get(at) {
                    let pair = (c.truth, c.predicted);
                    self.rearrange(|r| {
                        r.summary = None;
                        r.flat = true;
                        r.show = crate::ui::review::Show::All;
                        r.confusion = Some(pair);
                    });
                }
            }
            _ => review.summary = None,
        }
    }

    pub(super) fn on_mouse(&mut self, mouse: MouseEvent) {
        let Some(panes) = self.panes().filter(|_| !self.help) else {
            return;
        };
        let at = Position::new(mouse.column, mouse.row);
        let rows = panes.file_rows();
        let table = Block::bordered().inner(panes.predictions);
        match mouse.kind {
            _ if self.review.as_ref().is_some_and(|r| r.summary.is_some()) => {}
            MouseEventKind::Down(MouseButton::Left) if rows.contains(at) => {
                let index = self.files.offset + usize::from(at.y - rows.y);
                if index < self.files.visible.len() {
                    self.select(index);
                }
            }
            // Row 0 of the table is its header.
            MouseEventKind::Down(MouseButton::Left) if table.contains(at) && at.y > table.y => {
                self.choose_class(usize::from(at.y - table.y - 1));
            }
            MouseEventKind::ScrollDown if panes.files.contains(at) => self.move_selection(1),
            MouseEventKind::ScrollUp if panes.files.contains(at) => self.move_selection(-1),
            _ => {}
        }
    }

    pub(super) fn resize(&mut self, size: Size) {
        let before = self.panes().map(|p| p.picture());
        self.size = size;
        let after = self.panes();
        if let Some(p) = after {
            self.files
                .scroll_into_view(usize::from(p.file_rows().height));
        }
        if after.map(|p| p.picture()) != before {
            self.request_render();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_steps_stay_in_range() {
        assert_eq!(step_alpha(0.5, 1), 0.6);
        assert_eq!(step_alpha(1.0, 1), 1.0);
        assert_eq!(step_alpha(0.0, -1), 0.0);
        assert_eq!(step_alpha(0.3, -1), 0.2);
    }
}
