//! What this process runs of each circle (`--role`), and which circles
//! (`--circles`): the first steps of spreading circles over several
//! processes that share one Redis.

use clap::ValueEnum;

use crate::config::CircleConfig;

/// What this process runs of each of its circles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Both: the WebSocket server and the worker with its database.
    All,
    /// The WebSocket server only: it submits to Redis and waits for results;
    /// it opens no database and runs no script.
    Gateway,
    /// The worker only: it opens the database and runs the tasks queued in
    /// Redis; it binds no port.
    Worker,
}

impl Role {
    /// Whether this process serves the circles' WebSocket endpoints.
    pub fn serves(self) -> bool {
        matches!(self, Role::All | Role::Gateway)
    }

    /// Whether this process opens the circles' databases and runs their workers.
    pub fn works(self) -> bool {
        matches!(self, Role::All | Role::Worker)
    }

    /// Its `--role` name.
    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Gateway => "gateway",
            Role::Worker => "worker",
        }
    }
}

/// The circles of `file` that `only` names (each an id or a name: exactly,
/// or else ignoring ASCII case), in file order; every circle when `only` is
/// `None`. An entry that names no circle is an error naming it.
pub fn select(
    file: Vec<CircleConfig>,
    only: Option<&[String]>,
) -> Result<Vec<CircleConfig>, String> {
    let Some(only) = only else {
        return Ok(file);
    };
    let mut chosen = std::collections::HashSet::new();
    let mut unknown = Vec::new();
    for key in only {
        match crate::config::find_circle(&file, key).map_err(|e| format!("--circles: {e}"))? {
            Some(c) => {
                chosen.insert(c.id);
            }
            None => unknown.push(format!("{key:?}")),
        }
    }
    if !unknown.is_empty() {
        return Err(format!(
            "--circles names {} that the circles file does not have (give ids or names, \
             comma-separated)",
            unknown.join(", ")
        ));
    }
    Ok(file
        .into_iter()
        .filter(|c| chosen.contains(&c.id))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, name: &str) -> CircleConfig {
        CircleConfig {
            id,
            name: name.into(),
            port: 9000 + id as u16,
            principals: Vec::new(),
            redis: None,
        }
    }

    #[test]
    fn circles_are_chosen_by_id_or_name_in_file_order_and_an_unknown_one_is_named() {
        let file = vec![c(1, "Alpha"), c(2, "Beta Circle"), c(3, "Gamma")];
        let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let ids = |cs: Vec<CircleConfig>| cs.iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(select(file.clone(), None).expect("all")), [1, 2, 3]);
        let only = keys(&["gamma", "1"]);
        assert_eq!(ids(select(file.clone(), Some(&only)).expect("two")), [1, 3]);
        let only = keys(&["Beta Circle", "2"]);
        assert_eq!(ids(select(file.clone(), Some(&only)).expect("one")), [2]);
        let only = keys(&["Alpha", "Delta", "7"]);
        let e = select(file, Some(&only)).expect_err("unknown");
        assert!(e.contains("\"Delta\", \"7\""), "{e}");
    }

    #[test]
    fn a_key_that_is_one_circles_id_and_anothers_name_picks_neither() {
        // In either order of the file: never the first that matches.
        for file in [vec![c(1, "2"), c(2, "Beta")], vec![c(2, "Beta"), c(1, "2")]] {
            let e = select(file.clone(), Some(&["2".to_string()])).expect_err("ambiguous");
            assert!(
                e.contains("\"2\" could mean")
                    && e.contains("\"Beta\" (id 2)")
                    && e.contains("\"2\" (id 1)"),
                "{e}"
            );
            let only = ["Beta".to_string(), "1".to_string()];
            let ids: Vec<u32> = select(file, Some(&only))
                .expect("unique keys")
                .iter()
                .map(|c| c.id)
                .collect();
            assert_eq!(ids.len(), 2);
        }
    }
}
