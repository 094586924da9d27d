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
/// narrower than the message still shows why), the table, a line naming
/// the rows that do not fit, the footer. On a terminal too short for all of
/// them the footer goes first, then the table's last lines; the line
/// naming the hidden rows stays.
pub fn lines(header: &Header, snap: &Snapshot, cols: u16, rows: u16) -> Vec<String> {
    let width = usize::from(cols);
    let rows = usize::from(rows);
    let mut top = vec![header_base(header, snap)];
    if let Some(failure) = reload_failure(snap) {
        top.extend(wrap(&failure, width, RELOAD_LINES));
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
    // The top lines, the table's 3 frame lines (top, header rule, bottom),
    // the footer.
    let room = rows.saturating_sub(top.len() + 5).max(1);
    let shown = snap.circles.len().min(room);
    let hidden = snap.circles.len() - shown;
    let mut shown = if hidden > 0 {
        shown.saturating_sub(1).max(1)
    } else {
        shown
    };
    let mut hidden = snap.circles.len() - shown;
    let mut table = build_fitting(&snap.circles[..shown], cols, true).to_string();
    // Column names on two lines (a narrow terminal) take one more line; the
    // first row dropped may only make room for the line saying so.
    let height = |table: &str, hidden: usize| {
        top.len() + 1 + table.lines().count() + usize::from(hidden > 0)
    };
    while height(&table, hidden) > rows && shown > 1 {
        shown -= 1;
        hidden += 1;
        table = build_fitting(&snap.circles[..shown], cols, true).to_string();
    }
    let mut tail = Vec::new();
    if hidden > 0 {
        let not_running = snap.circles[shown..].iter().filter(|r| !r.up()).count();
        tail.push(format!(
            "… {hidden} more circles not shown ({not_running} of them not running); \
             enlarge the terminal or use --output plain"
        ));
    }
    let table: Vec<String> = table.lines().map(str::to_string).collect();
    if top.len() + table.len() + tail.len() < rows {
        tail.push(footer);
    }
    let fits = rows.saturating_sub(top.len() + tail.len());
    let mut out = top;
    out.extend(table.into_iter().take(fits));
    out.extend(tail);
    out.into_iter()
        .take(rows)
        .map(|l| cut_to_width(&l, width))
        .collect()
}

/// `text` in lines of at most `width` columns, broken at spaces (a word
/// wider than a line is cut), at most `max` of them: the last one ends
/// with `…` when the text goes on.
fn wrap(text: &str, width: usize, max: usize) -> Vec<String> {
    let width = width.max(2);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let fits = line.width() + usize::from(!line.is_empty()) + word.width() <= width;
        if !line.is_empty() && !fits {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    if lines.len() > max {
        lines.truncate(max);
        let last = &mut lines[max - 1];
        *last = format!("{}…", cut_to_width(last, width - 1));
    } else if let Some(last) = lines.last_mut()
        && last.width() > width
    {
        *last = cut_to_width(last, width);
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
mod tests {
    use super::*;
    use crate::status::Row;
    use std::time::Instant;

    fn snap(n: usize) -> Snapshot {
        Snapshot {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_managed: false,
            redis_restarts: 0,
            data_dir: "/home/someone/.hero/circles".into(),
            admin: None,
            phase: "running",
            uptime_secs: 3,
            circles: (0..n)
                .map(|i| Row {
                    url: format!("ws://127.0.0.1:{}/ws", 20000 + i),
                    worker: if i == n - 1 { "restarting" } else { "running" },
                    queue_len: Some(0),
                    in_flight: Some(0),
                    processed: Some(0),
                    failed: Some(0),
                    uptime_secs: 3,
                    ..Row::sample(&format!("circle {i}"), i as u32, &format!("circle_{i}"))
                })
                .collect(),
            reload: None,
            polled: true,
        }
    }

    fn header() -> Header {
        Header {
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_managed: false,
            data_dir: "/home/someone/.hero/circles".into(),
            log_file: Some("/home/someone/.hero/circles/orchestrator.log".into()),
            admin: None,
            redis_restarts: Default::default(),
            started: Instant::now(),
            reload: Default::default(),
        }
    }

    #[test]
    fn a_frame_never_exceeds_the_terminal_so_nothing_scrolls() {
        // 4 circles at 80x10 fit with one-line column names, not with two.
        for (circles, cols, rows) in [
            (200, 80u16, 24u16),
            (200, 200, 50),
            (200, 40, 10),
            (4, 80, 10),
        ] {
            let frame = lines(&header(), &snap(circles), cols, rows);
            assert!(
                frame.len() <= usize::from(rows),
                "{cols}x{rows}: {} lines",
                frame.len()
            );
            // Nothing is cut off at the bottom either (the column names
            // take two lines on a narrow terminal).
            let last = frame.last().expect("a frame");
            assert!(
                last.starts_with("up ") || last.contains(": letting"),
                "{cols}x{rows}: {frame:#?}"
            );
            for line in &frame {
                assert!(
                    line.chars().count() <= usize::from(cols),
                    "{cols}x{rows}: {line}"
                );
            }
        }
        let frame = lines(&header(), &snap(200), 200, 50);
        let more = frame
            .iter()
            .find(|l| l.contains("more circles not shown"))
            .expect("hidden rows are summarised");
        assert!(more.contains("1 of them not running"), "{more}");
    }

    #[test]
    fn wide_characters_are_measured_in_terminal_columns() {
        let mut snap = snap(3);
        snap.circles[0].name = "日本語 サークル 🎉".repeat(4);
        let mut aligned_checked = false;
        for cols in [60u16, 80, 200] {
            let frame = lines(&header(), &snap, cols, 50);
            for line in &frame {
                assert!(line.width() <= usize::from(cols), "{cols}: {line}");
            }
            // The rows of the table are as wide as its borders: aligned.
            let table: Vec<&String> = frame
                .iter()
                .filter(|l| l.starts_with('│') || l.starts_with('┌') || l.starts_with('└'))
                .collect();
            if table[0].width() < usize::from(cols) {
                let w = table[0].width();
                assert!(table.iter().all(|l| l.width() == w), "{cols}: {table:#?}");
                aligned_checked = true;
            }
        }
        assert!(aligned_checked, "the widest terminal holds the whole table");
        assert_eq!(
            cut_to_width("ab日本", 3),
            "ab",
            "a wide char never straddles the edge"
        );
        assert_eq!(cut_to_width("ab日本", 4), "ab日");
    }

    fn failed_reload(message: &str) -> crate::reload::LastReload {
        crate::reload::LastReload {
            seq: 1,
            applied: false,
            summary: None,
            error: Some(crate::reload::ReloadError::new(
                crate::reload::ReloadErrorKind::CannotStart,
                message.to_string(),
            )),
            stopped: None,
        }
    }

    /// A failed reload's message, longer than the terminal is wide, shows
    /// on lines of its own below the header, wrapped: its end is seen at
    /// 120 columns, and at 60; a longer one ends its third line with `…`.
    #[test]
    fn a_failed_reloads_message_is_wrapped_below_the_header_to_the_terminals_width() {
        let message = format!(
            "\"Beta\" (added) did not start: circle Beta: port 28123 is in use by another \
             process{}. Fix the cause and reload again",
            " (held)".repeat(8)
        );
        let mut snap = snap(2);
        snap.reload = Some(failed_reload(&message));
        for cols in [120u16, 60] {
            let frame = lines(&header(), &snap, cols, 40);
            assert!(!frame[0].contains("reload failed"), "{frame:#?}");
            let below: Vec<&String> = frame
                .iter()
                .skip(1)
                .take_while(|l| !l.starts_with('┌'))
                .collect();
            assert!(
                below.len() >= 2 && below.len() <= RELOAD_LINES,
                "{cols}: {frame:#?}"
            );
            assert!(below[0].starts_with("reload failed: \"Beta\""), "{below:?}");
            let joined = below
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            if cols == 120 {
                assert!(joined.ends_with("reload again"), "{cols}: {below:?}");
            } else {
                assert!(joined.ends_with('…'), "{cols}: {below:?}");
            }
            assert!(
                frame.iter().all(|l| l.width() <= usize::from(cols)),
                "{frame:#?}"
            );
            assert!(
                frame.iter().any(|l| l.contains("20001/ws")),
                "both rows: {frame:#?}"
            );
        }
    }

    /// A terminal too short for every row, the footer and the line naming
    /// the hidden rows: the footer goes, the line naming them stays.
    #[test]
    fn a_very_short_terminal_still_says_how_many_rows_it_hides() {
        let snap = snap(4);
        for rows in [5u16, 6, 7] {
            let frame = lines(&header(), &snap, 100, rows);
            assert!(frame.len() <= usize::from(rows), "{rows}: {frame:#?}");
            let last = frame.last().expect("a line");
            assert!(
                last.starts_with("… 3 more circles not shown"),
                "{rows}: {frame:#?}"
            );
        }
        let frame = lines(&header(), &snap, 100, 12);
        assert!(
            frame.last().is_some_and(|l| l.starts_with("up ")),
            "{frame:#?}"
        );
        assert!(!frame.iter().any(|l| l.contains("not shown")), "{frame:#?}");
    }

    /// A reload refused for a field whose name holds a line feed and an
    /// escape sequence (serde names an unknown field as written): the
    /// header is still one line of the frame and sends no escape sequence
    /// to the terminal.
    #[test]
    fn a_reload_error_with_control_characters_stays_one_clean_header_line() {
        let problem =
            crate::config::parse(r#"[{"id":1,"name":"A","port":1,"x\u001b[2J\nSECOND":1}]"#)
                .expect_err("an unknown field");
        let mut snap = snap(3);
        snap.reload = Some(crate::reload::LastReload {
            seq: 1,
            applied: false,
            summary: None,
            error: Some(crate::reload::ReloadError::new(
                crate::reload::ReloadErrorKind::InvalidConfig,
                format!("circles.json: {problem}"),
            )),
            stopped: None,
        });
        let frame = lines(&header(), &snap, 400, 50);
        assert!(
            frame[1].contains("reload failed") && frame[1].contains("SECOND"),
            "the line below the header holds the whole message: {frame:#?}"
        );
        for line in &frame {
            assert!(
                !line.contains(['\n', '\u{1b}']),
                "a control character of the file is in the frame: {line:?}"
            );
        }
    }

    #[test]
    fn a_small_system_shows_every_row_and_the_log_file() {
        let frame = lines(&header(), &snap(3), 200, 50);
        for i in 0..3 {
            let key = client::keys::tasks(&format!("circle_{i}"));
            assert!(
                frame
                    .iter()
                    .any(|l| l.contains(&format!("circle {i}")) && l.contains(&key)),
                "the row of circle {i} shows its queue's Redis key: {frame:#?}"
            );
        }
        assert_eq!(
            frame
                .iter()
                .filter(|l| l.contains("ws://127.0.0.1:"))
                .count(),
            3
        );
        assert!(frame.last().expect("footer").contains("orchestrator.log"));
    }
}
