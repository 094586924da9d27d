//! The live table on a terminal: alternate screen, hidden cursor, each frame
//! drawn from the top-left with every line cleared to its end and the rest of
//! the screen cleared below, inside a synchronized update, written with one
//! flush. Nothing scrolls: lines are cut to the terminal width and rows that
//! do not fit the height are summarised in one line. Logs go to a file in this
//! mode (see `logging`), so nothing else writes to the terminal. The terminal
//! is restored on exit and on panic, and the final table is printed to the
//! normal screen.

use std::io::Write;

use unicode_width::UnicodeWidthStr;

use crossterm::cursor::{Hide, MoveTo, Show};
use crossterm::terminal::{
    self, BeginSynchronizedUpdate, Clear, ClearType, EndSynchronizedUpdate, EnterAlternateScreen,
    LeaveAlternateScreen,
};
use crossterm::{execute, queue};

use super::table::{build_fitting, cut_to_width};
use super::{Renderer, header_base, human_duration, reload_failure};
use crate::status::{Header, Snapshot};

/// Live renderer on stdout.
pub struct Live {
    active: bool,
    /// The last frame could not be drawn (the terminal is gone, say): logged
    /// once, not at every frame, until a frame is drawn again.
    failing: bool,
}

impl Live {
    /// Enters the alternate screen and hides the cursor; installs a panic hook
    /// that sends other threads' panics to the log and restores the terminal
    /// before reporting a main-thread panic.
    pub fn start() -> std::io::Result<Live> {
        execute!(
            std::io::stdout(),
            EnterAlternateScreen,
            Hide,
            Clear(ClearType::All)
        )?;
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // One on the main thread ends the program: restore the terminal
            // first, then report it. Others go to the log (the logging's
            // hook), never over the table.
            if std::thread::current().name() == Some("main") {
                restore();
            }
            previous(info);
        }));
        Ok(Live {
            active: true,
            failing: false,
        })
    }
}

fn restore() {
    let _ = execute!(std::io::stdout(), Show, LeaveAlternateScreen);
}

/// The terminal's size, columns and rows; 120 × 40 when it is unknown: not
/// readable, or 0 × 0 (a pty whose size nobody set: `script`, `docker run
/// -t`, `ssh -t` from a pipe), where a frame cut to it would show nothing.
fn size() -> (u16, u16) {
    match terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => (cols, rows),
        _ => (120, 40),
    }
}

/// Lines a failed reload's message may take below the header.
const RELOAD_LINES: usize = 3;

/// The lines of one frame for a `cols` × `rows` terminal: the header, a
/// failed reload's message on lines of its own (wrapped, so a terminal
/// narrower than the message still shows why; fewer on a very short
/// terminal), the table, a line naming the rows that do not fit, the
/// footer. Only whole rows are drawn, as many as fit with the line naming
/// the others and the footer (none, on a terminal too short for one); the
/// footer goes only where even that line leaves it no room.
pub fn lines(header: &Header, snap: &Snapshot, cols: u16, rows: u16) -> Vec<String> {
    let width = usize::from(cols);
    let rows = usize::from(rows).max(1);
    let circles = &snap.circles;
    let mut top = vec![header_base(header, snap)];
    let reload_room = RELOAD_LINES.min(rows.saturating_sub(2));
    if let Some(failure) = reload_failure(snap)
        && reload_room > 0
    {
        top.extend(wrap(&failure, width, reload_room));
    }
    let footer = match snap.phase {
        "running" => {
            let logs = header
                .log_file
                .as_deref()
                .map(|f| format!(" | logs: {f}"))
                .unwrap_or_default();
            format!(
                "up {} | Ctrl-C to stop{logs}",
                human_duration(snap.uptime_secs)
            )
        }
        other => format!("{other}: letting running scripts finish…"),
    };
    // The table of the first `shown` rows: none at all for 0 of several
    // (the line naming them says it), the column names alone for 0 of 0.
    let table_of = |shown: usize| -> Vec<String> {
        if shown == 0 && !circles.is_empty() {
            return Vec::new();
        }
        let table = build_fitting(&circles[..shown], cols, true).to_string();
        table.lines().map(str::to_string).collect()
    };
    // The footer keeps its line unless the terminal has no room for it
    // beside the top lines and the one naming hidden rows.
    let footer_room = usize::from(top.len() + 2 <= rows);
    // The table's frame takes 3 lines (top, header rule, bottom) and the
    // column names 1 or 2 (a narrow terminal): a first guess, then one row
    // less until the lines fit, with the one naming the hidden rows.
    let mut shown = circles
        .len()
        .min(rows.saturating_sub(top.len() + 4 + footer_room));
    let mut table = table_of(shown);
    let height = |table: &Vec<String>, shown: usize| {
        top.len() + table.len() + usize::from(shown < circles.len()) + footer_room
    };
    while shown > 0 && height(&table, shown) > rows {
        shown -= 1;
        table = table_of(shown);
    }
    let hidden = circles.len() - shown;
    let mut out = top;
    out.extend(table);
    if hidden > 0 {
        let not_running = circles[shown..].iter().filter(|r| !r.up()).count();
        out.push(format!(
            "… {hidden} more circles not shown ({not_running} of them not running); \
             enlarge the terminal or use --output plain"
        ));
    }
    if out.len() < rows {
        out.push(footer);
    }
    // Too many only on a terminal of one line (the line naming the hidden
    // rows stays, alone) or with no circle at all (the column names are cut).
    let skip = if hidden > 0 {
        out.len().saturating_sub(rows)
    } else {
        0
    };
    out.into_iter()
        .skip(skip)
        .take(rows)
        .map(|l| fitted(l, width))
        .collect()
}

/// `line`, or as much of it as fits in `width` columns with `…` after it:
/// a header cut at the terminal's edge must not read as whole (an admin
/// port of five digits shown as four).
fn fitted(line: String, width: usize) -> String {
    if line.width() <= width {
        return line;
    }
    format!("{}…", cut_to_width(&line, width.saturating_sub(1)))
}

/// `text` in lines of at most `width` columns, broken at spaces (a word
/// wider than a line is broken where the line ends), at most `max` of them
/// (1 at least): the last one ends with `…` when the text goes on.
fn wrap(text: &str, width: usize, max: usize) -> Vec<String> {
    let (width, max) = (width.max(2), max.max(1));
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.width() + 1 + word.width() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        for c in word.chars() {
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if line.width() + w > width {
                lines.push(std::mem::take(&mut line));
            }
            line.push(c);
        }
    }
    lines.push(line);
    if lines.len() > max {
        lines.truncate(max);
        let last = &mut lines[max - 1];
        *last = format!("{}…", cut_to_width(last, width - 1));
    }
    lines
}

impl Renderer for Live {
    fn frame(&mut self, header: &Header, snap: &Snapshot) {
        let (cols, rows) = size();
        let mut out = std::io::stdout().lock();
        let mut draw = || -> std::io::Result<()> {
            queue!(out, BeginSynchronizedUpdate, MoveTo(0, 0))?;
            let frame = lines(header, snap, cols, rows);
            let count = frame.len();
            for (i, line) in frame.into_iter().enumerate() {
                out.write_all(line.as_bytes())?;
                queue!(out, Clear(ClearType::UntilNewLine))?;
                if i + 1 < count {
                    out.write_all(b"\r\n")?;
                }
            }
            queue!(out, Clear(ClearType::FromCursorDown), EndSynchronizedUpdate)?;
            out.flush()
        };
        match draw() {
            Err(e) if !self.failing => {
                self.failing = true;
                log::warn!(
                    "cannot draw the status table: {e}; it goes on serving, and this is not \
                     logged again until a frame is drawn"
                );
            }
            Err(_) => {}
            Ok(()) if self.failing => {
                self.failing = false;
                log::info!("the status table is drawn again");
            }
            Ok(()) => {}
        }
    }

    fn holds_terminal(&self) -> bool {
        self.active
    }

    fn suspend(&mut self) {
        if self.active {
            restore();
        }
    }

    fn resume(&mut self) {
        if self.active {
            let _ = execute!(
                std::io::stdout(),
                EnterAlternateScreen,
                Hide,
                Clear(ClearType::All)
            );
        }
    }

    fn finish(&mut self, header: &Header, snap: &Snapshot) {
        if self.active {
            restore();
            self.active = false;
        }
        let (cols, _) = size();
        let table = build_fitting(&snap.circles, cols, true).to_string();
        let mut top = vec![header_base(header, snap)];
        if let Some(failure) = reload_failure(snap) {
            top.extend(wrap(&failure, usize::from(cols), usize::MAX));
        }
        let text = format!("{}\n{table}\n{}", top.join("\n"), snap.phase);
        // Cut as the frames are: a line wider than the terminal would wrap.
        let mut out = std::io::stdout().lock();
        for line in text.lines() {
            let _ = writeln!(out, "{}", cut_to_width(line, usize::from(cols)));
        }
        let _ = out.flush();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.active {
            restore();
        }
    }
}

#[cfg(test)]
mod tests;
