//! The loads of a run and the scripts they send.

/// OurDB commit durability of the orchestrator under test (`--durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit fsynced.
    Sync,
    /// Every commit written to the OS only.
    Flush,
}

impl Durability {
    /// The `--durability` value.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Flush => "flush",
        }
    }
}

/// What a load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Script {
    /// `40 + 2`.
    Trivial,
    /// `db::get(<id>)` of an existing record, cycling over up to 200 ids (so
    /// every text stays in the engine's compiled-script cache).
    Read,
    /// One `db::insert` of a map of about 1 KiB.
    Write,
}

/// Distinct ids the read-heavy load cycles over.
const READ_IDS: usize = 200;

impl Script {
    /// The texts request `n` picks from (`texts[n % len]`), with `prefilled`
    /// records present.
    pub fn texts(self, prefilled: usize) -> Vec<String> {
        match self {
            Script::Trivial => vec!["40 + 2".to_string()],
            Script::Read => (1..=READ_IDS.min(prefilled))
                .map(|id| format!("db::get({id})"))
                .collect(),
            Script::Write => {
                let fields: Vec<String> = (0..16)
                    .map(|i| format!("f{i:02}: \"{}\"", "x".repeat(56)))
                    .collect();
                vec![format!("db::insert(#{{ {} }})", fields.join(", "))]
            }
        }
    }
}

/// One load.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// What it sends.
    pub script: Script,
    /// Circles it spreads its connections over.
    pub circles: usize,
    /// Connections, one request in flight on each.
    pub conns: usize,
    /// One connection, a fixed number of requests, latency percentiles.
    pub sequential: bool,
    /// The orchestrator's durability mode.
    pub durability: Durability,
}

impl Load {
    /// The name shown in the table.
    pub fn name(&self) -> &'static str {
        match (self.script, self.sequential) {
            (Script::Trivial, true) => "`40 + 2` sequential",
            (Script::Trivial, false) => "`40 + 2`",
            (Script::Read, _) => "read: `db::get`",
            (Script::Write, _) => "write: 1 KiB `db::insert`",
        }
    }
}

/// The loads run in one durability mode: the trivial ones in `Sync` only
/// (they write nothing), the read- and write-heavy ones in both.
pub fn loads(durability: Durability) -> Vec<Load> {
    let load = |script, circles, conns, sequential| Load {
        script,
        circles,
        conns,
        sequential,
        durability,
    };
    let mut loads = Vec::new();
    if durability == Durability::Sync {
        loads.push(load(Script::Trivial, 1, 1, true));
        for circles in [1, 4] {
            for conns in [1, 16, 64, 256] {
                loads.push(load(Script::Trivial, circles, conns, false));
            }
        }
    }
    for script in [Script::Read, Script::Write] {
        for (circles, conns) in [(1, 1), (1, 64), (4, 64)] {
            loads.push(load(script, circles, conns, false));
        }
    }
    loads
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_script_inserts_about_one_kib() {
        let text = &Script::Write.texts(0)[0];
        assert!((1000..1200).contains(&text.len()), "{}", text.len());
        assert_eq!(Script::Read.texts(1000).len(), READ_IDS);
        assert_eq!(
            Script::Read.texts(5),
            [
                "db::get(1)",
                "db::get(2)",
                "db::get(3)",
                "db::get(4)",
                "db::get(5)"
            ]
        );
    }

    #[test]
    fn every_connection_count_runs_over_one_and_four_circles_in_sync_mode() {
        let sync = loads(Durability::Sync);
        for circles in [1, 4] {
            for conns in [1, 16, 64, 256] {
                assert!(sync.iter().any(|l| l.script == Script::Trivial
                    && !l.sequential
                    && (l.circles, l.conns) == (circles, conns)));
            }
        }
        let flush = loads(Durability::Flush);
        assert!(flush.iter().all(|l| l.script != Script::Trivial));
        assert_eq!(flush.len(), 6);
    }
}
