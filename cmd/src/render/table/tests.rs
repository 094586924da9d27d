use super::*;

fn row(name: &str) -> Row {
    Row {
        server: "restarting",
        server_detail: Some("address vanished".into()),
        queue_len: Some(3),
        in_flight: Some(0),
        processed: Some(10),
        clients: 2,
        uptime_secs: 65,
        restarts: 1,
        ..Row::sample(name, 7, "alpha_circle")
    }
}

#[test]
fn the_header_starts_with_the_five_fixed_columns_in_order() {
    let text = build(&[row("Alpha Circle")], false).to_string();
    let header = text.lines().nth(1).expect("header line");
    let names: Vec<&str> = header
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(
        names[..5],
        [
            "Circle Name",
            "ID",
            "Worker Status",
            "Worker Queues",
            "WS Server URL"
        ]
    );
}

#[test]
fn a_row_shows_state_reason_queue_and_url() {
    let text = build(&[row("Alpha Circle")], false).to_string();
    assert!(text.contains("Alpha Circle"));
    assert!(text.contains("alpha_circle"));
    let key = client::keys::tasks("alpha_circle");
    let cells: Vec<&str> = text
        .lines()
        .find(|l| l.contains("Alpha Circle"))
        .expect("the row")
        .split('|')
        .map(str::trim)
        .collect();
    assert_eq!(cells[4], key, "Worker Queues shows the Redis key:\n{text}");
    assert!(text.contains("ws://127.0.0.1:8081/ws"));
    assert!(text.contains("Restarting: address vanished"));
    assert!(text.contains("1m05s"));
}

#[test]
fn the_access_column_follows_the_fixed_ones_and_says_open_or_how_many_principals() {
    assert_eq!(COLUMNS[5], "Access");
    assert_eq!(access_text(0), "open");
    assert_eq!(access_text(1), "1 principal");
    assert_eq!(access_text(3), "3 principals");
    let rows = [
        row("Alpha Circle"),
        Row {
            principals: 2,
            ..row("Beta")
        },
    ];
    let text = build(&rows, false).to_string();
    let access = |name: &str| -> String {
        let line = text.lines().find(|l| l.contains(name)).expect("row");
        line.split('|')
            .map(str::trim)
            .nth(6)
            .expect("cell")
            .to_string()
    };
    assert_eq!(access("Alpha Circle"), "open", "{text}");
    assert_eq!(access("Beta"), "2 principals", "{text}");
}

#[test]
fn the_gateways_column_counts_the_gateways_serving_the_circle() {
    assert_eq!(COLUMNS[7], "Gateways");
    let rows = [
        row("Alpha Circle"),
        Row {
            gateway_count: Some(2),
            ..row("Beta")
        },
    ];
    let text = build(&rows, false).to_string();
    let gateways = |name: &str| -> String {
        let line = text.lines().find(|l| l.contains(name)).expect("row");
        line.split('|')
            .map(str::trim)
            .nth(8)
            .expect("cell")
            .to_string()
    };
    assert_eq!(gateways("Alpha Circle"), "-", "not read yet:\n{text}");
    assert_eq!(gateways("Beta"), "2", "{text}");
}

#[test]
fn a_long_reason_is_whole_in_the_plain_table_and_cut_in_the_live_one() {
    let reason = format!("the lease is held by {}", "another-host-".repeat(6));
    let rows = [Row {
        worker: "standby",
        worker_detail: Some(reason.clone()),
        ..row("Alpha")
    }];
    let plain = build(&rows, false).to_string();
    assert!(plain.contains(&format!("Standby: {reason}")), "{plain}");
    let live = build_fitting(&rows, 400, true).to_string();
    assert!(!live.contains(&reason), "{live}");
    let cut: String = reason.chars().take(DETAIL_CHARS).collect();
    assert!(live.contains(&format!("Standby: {cut}…")), "{live}");
}

#[test]
fn a_long_worker_status_is_shortened_so_the_queue_and_url_stay_in_sight() {
    let rows = [Row {
        worker: "reconnecting",
        worker_detail: Some("redis is unreachable".into()),
        ..row("Live Beta With A Long Name")
    }];
    let table = build_fitting(&rows, 100, true).to_string();
    assert!(table.lines().all(|l| l.width() <= 100), "{table}");
    let body = table.lines().nth(3).expect("the row");
    // The status first, down to the shortest cell, then the name.
    assert!(
        body.contains("Reconnectin…") && body.contains("Live Beta"),
        "{table}"
    );
    assert!(
        body.contains("rhai_tasks:alpha_circle") && body.contains("ws://127.0.0.1:8081/ws"),
        "the queue and the URL are whole: {table}"
    );
    // Wide enough: nothing is cut.
    let table = build_fitting(&rows, 300, true).to_string();
    assert!(
        table.contains("Reconnecting: redis is unreachable"),
        "{table}"
    );
    assert!(table.contains("Live Beta With A Long Name"), "{table}");
}

#[test]
fn an_80_column_terminal_shows_the_whole_queue_and_url_of_the_example_circles() {
    let rows = [
        row("Alpha Circle"),
        Row {
            queue_key: "rhai_tasks:beta_circle".into(),
            url: "ws://127.0.0.1:8082/ws".into(),
            ..row("Beta Circle")
        },
    ];
    let table = build_fitting(&rows, 80, true).to_string();
    assert!(table.lines().all(|l| l.width() <= 80), "{table}");
    for (queue, url) in [
        ("rhai_tasks:alpha_circle", "ws://127.0.0.1:8081/ws"),
        ("rhai_tasks:beta_circle", "ws://127.0.0.1:8082/ws"),
    ] {
        assert!(
            table.lines().any(|l| l.contains(queue) && l.contains(url)),
            "{table}"
        );
    }
    // The names of the fixed columns, each on two lines.
    let head: Vec<&str> = table.lines().skip(1).take(2).collect();
    for (first, last) in [
        ("Circle", "Name"),
        ("Worker", "Status"),
        ("WS Server", "URL"),
    ] {
        assert!(head[0].contains(first) && head[1].contains(last), "{table}");
    }
    // Wide enough for one-line names: not stacked.
    let table = build_fitting(&rows, 100, true).to_string();
    assert!(table.contains("Circle Name"), "{table}");
}

#[test]
fn a_narrow_terminal_drops_extra_columns_but_keeps_the_fixed_five() {
    let rows = [row("Alpha Circle")];
    let wide = build_fitting(&rows, 300, true).to_string();
    assert!(wide.contains("Restarts"));
    let narrow = build_fitting(&rows, 100, true).to_string();
    assert!(narrow.lines().all(|l| l.chars().count() <= 100), "{narrow}");
    assert!(
        narrow.contains("WS Server URL") && !narrow.contains("Restarts"),
        "{narrow}"
    );
    assert_eq!(
        narrow.lines().count(),
        5,
        "one line per row, never wrapped:\n{narrow}"
    );
}

/// README ("Output"): a long name is shortened "so the queue and the
/// URL stay in sight". A name may have 100 characters, and the queue
/// key repeats it: one such circle pushes the URL of every circle out
/// of a 150-column terminal.
#[test]
fn one_long_name_keeps_every_url_in_sight_on_a_150_column_terminal() {
    let long = "Northern Region Operations And Logistics Coordination Circle For Quarterly Planning Reviews 2026";
    assert!(long.chars().count() <= crate::config::MAX_NAME_CHARS);
    let queue = client::queue_name(long);
    let rows = [
        Row {
            url: "ws://127.0.0.1:8082/ws".into(),
            ..Row::sample(long, 2, &queue)
        },
        Row::sample("Alpha", 1, "alpha"),
    ];
    let table = build_fitting(&rows, 150, true).to_string();
    let visible: Vec<String> = table.lines().map(|l| cut_to_width(l, 150)).collect();
    for url in ["ws://127.0.0.1:8081/ws", "ws://127.0.0.1:8082/ws"] {
        assert!(
            visible.iter().any(|l| l.contains(url)),
            "{url} is cut off a 150-column terminal:\n{}",
            visible.join("\n")
        );
    }
}

/// Narrower than 80 columns, a long name's queue key is shortened with
/// the column names on two lines, so every URL stays whole as long as the
/// fixed columns can fit at all (here 66 and 60 columns), and a short
/// Worker Status with it.
#[test]
fn a_66_or_60_column_terminal_keeps_every_url_whole_beside_a_long_name() {
    let long = "Alpha Circle of Very Long Names";
    let rows = [
        Row {
            url: "ws://127.0.0.1:18111/ws".into(),
            ..Row::sample(long, 1, &client::queue_name(long))
        },
        Row {
            url: "ws://127.0.0.1:18112/ws".into(),
            ..Row::sample("Beta", 2, "beta")
        },
    ];
    for width in [66, 60] {
        let table = build_fitting(&rows, width, true).to_string();
        assert!(
            table.lines().all(|l| l.width() <= usize::from(width)),
            "{table}"
        );
        for url in ["ws://127.0.0.1:18111/ws", "ws://127.0.0.1:18112/ws"] {
            assert!(table.contains(url), "{url} is cut:\n{table}");
        }
        // The keys are shortened first, marked so, not clipped at the
        // edge; a short status stays whole.
        for row in table.lines().filter(|l| l.contains("ws://")) {
            assert!(row.contains("rhai_") && row.contains('…'), "{table}");
            assert!(row.contains("Running"), "{table}");
        }
    }
}
