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
        assert!(
            below[0].starts_with("reload failed, nothing changed: \"Beta\""),
            "{below:?}"
        );
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

/// A terminal too short for every row: only whole rows are drawn, the line
/// naming the others counts exactly those not drawn and stays (alone on a
/// terminal of one line), and the footer comes only where there is room.
#[test]
fn a_very_short_terminal_still_says_how_many_rows_it_hides() {
    let snap = snap(4);
    for rows in 1u16..=12 {
        let frame = lines(&header(), &snap, 100, rows);
        assert!(frame.len() <= usize::from(rows), "{rows}: {frame:#?}");
        let drawn = frame.iter().filter(|l| l.contains("/ws ")).count();
        let hidden = 4 - drawn;
        let said = frame.iter().find(|l| l.contains("more circles not shown"));
        match said {
            Some(line) => assert!(
                line.starts_with(&format!("… {hidden} more circles not shown")),
                "{rows}: {frame:#?}"
            ),
            None => assert_eq!(hidden, 0, "{rows}: {frame:#?}"),
        }
        if hidden > 0 && rows < 10 {
            let last =
                frame.len() - usize::from(frame.last().is_some_and(|l| l.starts_with("up ")));
            assert!(frame[last - 1].contains("not shown"), "{rows}: {frame:#?}");
        }
        // A table drawn is whole: its top and bottom borders both.
        let borders = frame
            .iter()
            .filter(|l| l.starts_with('┌') || l.starts_with('└'))
            .count();
        assert!(borders == 0 || borders == 2, "{rows}: {frame:#?}");
    }
    assert_eq!(
        lines(&header(), &snap, 100, 1),
        [
            "… 4 more circles not shown (1 of them not running); enlarge the terminal or use --output plain"
        ]
    );
    let frame = lines(&header(), &snap, 100, 12);
    assert!(
        frame.last().is_some_and(|l| l.starts_with("up ")),
        "{frame:#?}"
    );
    assert!(!frame.iter().any(|l| l.contains("not shown")), "{frame:#?}");
}

/// Any size of terminal, a reload's message of long words and wide
/// characters, no circle or several: no line wider than the terminal, no
/// more lines than it has, and a message word wider than a line is broken
/// where the line ends, not dropped.
#[test]
fn any_terminal_size_gets_a_frame_within_it() {
    let message = format!("{} 日本語のメッセージ {}", "x".repeat(70), "y".repeat(30));
    for n in [0, 1, 3] {
        let mut snap = snap(n.max(1));
        snap.circles.truncate(n);
        snap.reload = Some(failed_reload(&message));
        for cols in [1u16, 2, 3, 10, 40, 81] {
            for rows in 1u16..=9 {
                let frame = lines(&header(), &snap, cols, rows);
                assert!(
                    !frame.is_empty() && frame.len() <= usize::from(rows),
                    "{n} {cols}x{rows}: {frame:#?}"
                );
                assert!(
                    frame.iter().all(|l| l.width() <= usize::from(cols)),
                    "{n} {cols}x{rows}: {frame:#?}"
                );
            }
        }
    }
    let wrapped = wrap(&message, 40, 10);
    assert_eq!(wrapped[0], "x".repeat(40));
    assert_eq!(wrapped[1], "x".repeat(30));
    assert_eq!(wrapped[2], "日本語のメッセージ");
    assert_eq!(wrapped[3], "y".repeat(30));
    assert!(wrapped.iter().all(|l| l.width() <= 40), "{wrapped:#?}");
    assert_eq!(wrapped.concat().replace(' ', ""), message.replace(' ', ""));
}

/// A reload refused for a field whose name holds a line feed and an
/// escape sequence (serde names an unknown field as written): the
/// header is still one line of the frame and sends no escape sequence
/// to the terminal.
#[test]
fn a_reload_error_with_control_characters_stays_one_clean_line() {
    let problem = crate::config::parse(r#"[{"id":1,"name":"A","port":1,"x\u001b[2J\nSECOND":1}]"#)
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

/// A header wider than the terminal ends with `…` where it is cut, so a
/// cut value (an admin port of five digits) is not read as whole; one that
/// fits is drawn as it is.
#[test]
fn a_header_cut_at_the_terminals_edge_says_so() {
    let mut header = header();
    header.admin = Some("http://127.0.0.1:19106".into());
    let whole = header_base(&header, &snap(1));
    let cols = u16::try_from(whole.width() - 2).expect("narrow");
    let frame = lines(&header, &snap(1), cols, 20);
    assert_eq!(frame[0].width(), usize::from(cols), "{frame:#?}");
    assert!(frame[0].ends_with('…'), "{frame:#?}");
    assert!(
        whole.starts_with(frame[0].trim_end_matches('…')),
        "{frame:#?}"
    );
    let frame = lines(
        &header,
        &snap(1),
        u16::try_from(whole.width()).expect("fits"),
        20,
    );
    assert_eq!(frame[0], whole);
}
