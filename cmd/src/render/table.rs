//! The comfy-table layout shared by the live and plain modes.

use comfy_table::{ContentArrangement, Table, presets};
use unicode_width::UnicodeWidthStr;

use super::human_duration;
use crate::status::Row;

/// The fixed columns of DESIGN §6, then the extras.
pub const COLUMNS: [&str; 14] = [
    "Circle Name",
    "ID",
    "Worker Status",
    "Worker Queues",
    "WS Server URL",
    "Access",
    "Server",
    "Gateways",
    "Queue Len",
    "Processed",
    "Failed",
    "Clients",
    "Uptime",
    "Restarts",
];

/// Longest failure reason shown in a cell of the live table; the full text
/// is in the log.
const DETAIL_CHARS: usize = 48;

/// Builds the table with every column and every reason whole (for a pipe or
/// a file, which have no width); `utf8` picks box characters. Cells never
/// wrap, so one row is one line.
pub fn build(rows: &[Row], utf8: bool) -> Table {
    build_columns(rows, COLUMNS.len(), utf8, &Cut::WHOLE)
}

/// The widest table that fits `width`, each reason at most
/// [`DETAIL_CHARS`]: extras are dropped from the right until it fits; the
/// five fixed columns always stay. When even they do not fit, the Worker
/// Status cells are shortened (down to [`SHORTEST_CELL`] columns, an
/// ellipsis marking the cut; the whole reason is in the log), then the
/// names, so the queue and URL stay in sight. Still too wide (an 80-column
/// terminal), the fixed column names go on two lines each and the same
/// cells are shortened further, down to [`SHORTEST_STACKED`], when that
/// makes it fit; else the long queue keys (a long name's) are shortened
/// too, first with the column names on one line, then on two, when that
/// makes it fit; otherwise the caller cuts the lines of the table whose
/// cells kept [`SHORTEST_CELL`] columns.
pub fn build_fitting(rows: &[Row], width: u16, utf8: bool) -> Table {
    let fits = |table: &Table| {
        // Terminal columns, not chars: a CJK character or an emoji takes two.
        table.lines().map(|l| l.width()).max().unwrap_or(0) <= usize::from(width)
    };
    for columns in (FIXED_COLUMNS + 1..=COLUMNS.len()).rev() {
        let table = build_columns(rows, columns, utf8, &Cut::LIVE);
        if fits(&table) {
            return table;
        }
    }
    let table = shorten(rows, utf8, Cut::LIVE, SHORTEST_CELL, &[STATUS, NAME], &fits);
    if fits(&table) {
        return table;
    }
    // From the uncut cells again: the status goes below 12 columns before
    // a name is cut further.
    let stacked = Cut {
        stacked: true,
        ..Cut::LIVE
    };
    let tighter = shorten(
        rows,
        utf8,
        stacked,
        SHORTEST_STACKED,
        &[STATUS, NAME],
        &fits,
    );
    if fits(&tighter) {
        return tighter;
    }
    // A long name's queue key repeats it: cut last, so that the URLs come
    // in sight (the whole key is in `plain`, `status` and the JSON).
    let keyed = shorten(
        rows,
        utf8,
        Cut::LIVE,
        SHORTEST_CELL,
        &[STATUS, NAME, QUEUE],
        &fits,
    );
    if fits(&keyed) {
        return keyed;
    }
    // The same with the column names on two lines, down to
    // SHORTEST_STACKED, the keys first (cut this far, they say little), a
    // status last: the URLs stay whole as long as the fixed columns fit.
    let stacked_keyed = shorten(
        rows,
        utf8,
        stacked,
        SHORTEST_STACKED,
        &[QUEUE, NAME, STATUS],
        &fits,
    );
    // Narrower still, the URL is cut either way: the status cells keep
    // their SHORTEST_CELL columns, which say more.
    if fits(&stacked_keyed) {
        stacked_keyed
    } else {
        table
    }
}

/// The five fixed columns cut as `cut` says, with the cells of `columns`
/// (of [`STATUS`], [`NAME`], [`QUEUE`]), one column after the other,
/// shortened one terminal column at a time, down to `shortest`, until the
/// table fits.
fn shorten(
    rows: &[Row],
    utf8: bool,
    mut cut: Cut,
    shortest: usize,
    columns: &[usize],
    fits: &dyn Fn(&Table) -> bool,
) -> Table {
    let mut table = build_columns(rows, FIXED_COLUMNS, utf8, &cut);
    let widest = |column: usize| {
        let cell = |r: &Row| match column {
            STATUS => state_text(r.worker, &r.worker_detail, Some(DETAIL_CHARS)),
            NAME => r.name.clone(),
            _ => r.queue_key.clone(),
        };
        rows.iter().map(|r| cell(r).width()).max()
    };
    for &column in columns {
        let mut max = widest(column).unwrap_or(0);
        while !fits(&table) && max > shortest {
            max -= 1;
            cut.max[column] = Some(max);
            table = build_columns(rows, FIXED_COLUMNS, utf8, &cut);
        }
    }
    table
}

/// The narrowest a shortened cell gets, in terminal columns.
pub const SHORTEST_CELL: usize = 12;

/// The narrowest a shortened cell gets once the column names are on two
/// lines (`Worker` / `Status` are 6 wide).
pub const SHORTEST_STACKED: usize = 6;

/// Columns of the cells [`build_fitting`] may shorten.
const NAME: usize = 0;
const STATUS: usize = 2;
const QUEUE: usize = 3;

/// How cells are cut: the most terminal columns a cell of each fixed column
/// may take, and the most characters of a reason.
#[derive(Clone, Copy)]
struct Cut {
    max: [Option<usize>; FIXED_COLUMNS],
    detail: Option<usize>,
    /// The column names on two lines each (`Worker` over `Status`).
    stacked: bool,
}

impl Cut {
    /// The live table's cut before it is fitted: reasons at [`DETAIL_CHARS`].
    const LIVE: Cut = Cut {
        max: [None; FIXED_COLUMNS],
        detail: Some(DETAIL_CHARS),
        stacked: false,
    };
    /// Nothing cut.
    const WHOLE: Cut = Cut {
        max: [None; FIXED_COLUMNS],
        detail: None,
        stacked: false,
    };
}

/// `text` in at most `max` terminal columns, the last of them `…` when
/// anything was cut.
fn shortened(text: String, max: usize) -> String {
    if text.width() <= max {
        return text;
    }
    cut_to_width(&text, max.saturating_sub(1)) + "…"
}

/// The longest start of `line` that fills at most `width` terminal columns
/// (a wide character that would straddle the edge is left out: a line one
/// column too long wraps, and the frame scrolls).
pub fn cut_to_width(line: &str, width: usize) -> String {
    let mut used = 0;
    line.chars()
        .take_while(|c| {
            used += unicode_width::UnicodeWidthChar::width(*c).unwrap_or(0);
            used <= width
        })
        .collect()
}

/// The columns DESIGN §6 fixes.
const FIXED_COLUMNS: usize = 5;

fn build_columns(rows: &[Row], columns: usize, utf8: bool, cut: &Cut) -> Table {
    let mut table = Table::new();
    table.load_style(if utf8 {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::ASCII_FULL_CONDENSED
    });
    table.set_content_arrangement(ContentArrangement::Disabled);
    if cut.stacked {
        // `WS Server URL` breaks at its last space: `WS Server` over `URL`.
        table.set_header(
            COLUMNS[..columns]
                .iter()
                .map(|name| match name.rsplit_once(' ') {
                    Some((first, last)) => format!("{first}\n{last}"),
                    None => (*name).to_string(),
                }),
        );
    } else {
        table.set_header(&COLUMNS[..columns]);
    }
    for row in rows {
        let mut cells = cells(row, cut.detail);
        cells.truncate(columns);
        for (cell, max) in cells.iter_mut().zip(cut.max) {
            if let Some(max) = max {
                *cell = shortened(std::mem::take(cell), max);
            }
        }
        table.add_row(cells);
    }
    table
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A state with its reason, e.g. `restarting: port vanished`; a reason
/// longer than `cap` characters is cut there, ending in `…`.
pub fn state_text(state: &str, detail: &Option<String>, cap: Option<usize>) -> String {
    let mut text = capitalise(state);
    if let Some(detail) = detail {
        let cap = cap.unwrap_or(usize::MAX);
        let short: String = detail.chars().take(cap).collect();
        let ellipsis = if detail.chars().count() > cap {
            "…"
        } else {
            ""
        };
        text.push_str(&format!(": {short}{ellipsis}"));
    }
    text
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `open`, `1 principal`, `N principals`.
pub fn access_text(principals: usize) -> String {
    match principals {
        0 => "open".to_string(),
        1 => "1 principal".to_string(),
        n => format!("{n} principals"),
    }
}

/// A row's cells, each reason cut at `detail` characters if given.
fn cells(row: &Row, detail: Option<usize>) -> Vec<String> {
    vec![
        row.name.clone(),
        row.id.to_string(),
        state_text(row.worker, &row.worker_detail, detail),
        row.queue_key.clone(),
        row.url.clone(),
        access_text(row.principals),
        state_text(row.server, &row.server_detail, detail),
        opt(row.gateway_count.map(|n| n as u64)),
        opt(row.queue_len),
        opt(row.processed),
        opt(row.failed),
        row.clients.to_string(),
        human_duration(row.uptime_secs),
        row.restarts.to_string(),
    ]
}

#[cfg(test)]
mod tests;
