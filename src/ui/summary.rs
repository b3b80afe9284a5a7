//! The dataset summary, drawn over the picture and the table: the running accuracy, the
//! most frequent confusions (one of which Enter narrows the list to) and per-class top-1
//! accuracy, worst first.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Widget};

use super::review::Review;

/// Draws the summary of `review` into `area`, the confusion at `selected` highlighted.
pub fn draw(review: &Review, selected: usize, area: Rect, buf: &mut Buffer) {
    Clear.render(area, buf);
    let c = review.counts();
    let percent = |k: usize| {
        if c.analysed == 0 {
            "–".to_string()
        } else {
            format!("{:.1} %", k as f64 * 100.0 / c.analysed as f64)
        }
    };
    let block = Block::bordered()
        .title(Line::from(" Summary ").bold())
        .title_bottom(
            Line::from(" j k choose · Enter shows those images · any other key closes ")
                .fg(Color::DarkGray)
                .right_aligned(),
        )
        .border_style(Color::Cyan);
    let inner = block.inner(area);
    block.render(area, buf);

    let names = &review.dataset.classes;
    let confusions = review.confusions();
    let classes = review.per_class();
    let rows = usize::from(inner.height);
    let mut lines = vec![
        Line::from(format!(
            "{} of {} labelled images analysed: top-1 {} ({}) · top-5 {} ({})",
            c.analysed,
            c.labelled,
            c.top1,
            percent(c.top1),
            c.top5,
            percent(c.top5)
        )),
        Line::raw(""),
        Line::from("Most frequent confusions (true → predicted)").bold(),
    ];
    // The confusions get at most half the rows left, scrolled to keep the selection shown.
    let room = rows.saturating_sub(lines.len() + 3) / 2;
    if confusions.is_empty() {
        lines.push(Line::styled("  none yet", Color::DarkGray));
    }
    let first = (selected + 1).saturating_sub(room.max(1));
    for (i, confusion) in confusions.iter().enumerate().skip(first).take(room.max(1)) {
        let chosen = i == selected;
        let text = format!(
            "{} {:>4}  {} → {}",
            if chosen { "▶" } else { " " },
            confusion.images,
            names.label(confusion.truth),
            names.label(confusion.predicted)
        );
        let style = if chosen {
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        lines.push(Line::styled(text, style));
    }
    lines.push(Line::raw(""));
    lines.push(Line::from("Per class, worst first (top-1)").bold());
    for class in classes {
        lines.push(Line::from(vec![
            Span::raw(format!(
                "  {:>6.1} %  {:>4} / {:<4}  ",
                class.accuracy() * 100.0,
                class.top1_hits,
                class.images
            )),
            Span::raw(names.label(class.class)),
        ]));
    }
    Paragraph::new(lines).render(inner, buf);
}
