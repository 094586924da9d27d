//! Breaks the reference cycles a script's closures can form, so that what a
//! run allocated is freed when it ends.
//!
//! A closure captures a variable by turning it into a shared cell (an `Arc`
//! under Rhai's `sync` feature) that the variable and the closure both hold.
//! A cell that ends up holding the closure itself (`a.f = || a`) holds its own
//! count, so Rhai never frees it: each such run would leak what the cell
//! holds, for the life of the process.
//!
//! Rhai makes a cell in one place, the `Share` statement before a closure,
//! and reads the variable right after it to put the cell into the closure;
//! both go through the variable callback (`Engine::on_var`). The callback
//! ([`note`]) keeps one handle to every cell a run reads, and the end of the
//! run ([`Guard`]'s drop, also after an error or a panic) empties each cell.
//! That drops every value a cell held, closures and cycles included; the
//! result was rendered before, and nothing of a run outlives it.
//!
//! Only a closure makes cells, and the callback costs every variable read
//! (up to a third more run time for a script that does little else), so
//! only scripts that define closures ([`defines_closures`]) run on the
//! engine that has it.

use std::cell::RefCell;
use std::collections::HashSet;

use rhai::{Dynamic, Scope};

#[derive(Default)]
struct Cells {
    /// One handle to each cell the run read, its address in `seen`.
    held: Vec<Dynamic>,
    seen: HashSet<usize>,
}

thread_local! {
    static CELLS: RefCell<Cells> = RefCell::new(Cells::default());
}

/// The name Rhai gives the function of each closure starts with this.
const CLOSURE_PREFIX: &str = "anon$";

/// Whether `ast` defines a closure.
#[inline]
pub fn defines_closures(ast: &rhai::AST) -> bool {
    ast.iter_functions()
        .any(|f| f.name.starts_with(CLOSURE_PREFIX))
}

/// Where a script that defines closures uses `switch` (the first one, in
/// its body or any function's), if it does. Rhai's `switch` hashes its
/// value, and the hash follows what closures captured one recursion per
/// level, without a bound: a chain of closures each capturing the one
/// before (`v = #{ f: || w }` in a loop) is cheap to build hundreds of
/// thousands of levels deep and would overflow the stack, which aborts the
/// whole process. No guard can run first (the hashing is inside Rhai's
/// evaluation of the statement), so such a script is refused when it
/// compiles: [`SWITCH_REFUSAL`].
pub fn switch_beside_closures(ast: &rhai::AST) -> Option<rhai::Position> {
    if !defines_closures(ast) {
        return None;
    }
    let mut found = None;
    ast.walk(&mut |nodes: &[rhai::ASTNode]| {
        if let Some(rhai::ASTNode::Stmt(stmt @ rhai::Stmt::Switch(..))) = nodes.last() {
            found = Some(stmt.position());
            return false;
        }
        true
    });
    found
}

/// The error of a script refused by [`switch_beside_closures`].
pub const SWITCH_REFUSAL: &str = "'switch' is not available in a script that defines closures: \
     a value closures captured can nest deeper than the stack allows switch to follow; use \
     if / else if instead";

/// Keeps a handle to the variable `name` when it is a shared cell; `index`
/// is Rhai's position of it from the end of `scope` (1-based), 0 when
/// unknown.
#[inline]
pub fn note(name: &str, index: usize, scope: &Scope) {
    let value = if index > 0 {
        // `iter_raw` walks the scope from its end.
        scope.iter_raw().nth(index - 1).map(|(_, _, v)| v)
    } else {
        scope.get(name)
    };
    match value {
        Some(v) if v.is_shared() => keep(v),
        _ => {}
    }
}

#[cold]
fn keep(cell: &Dynamic) {
    // The address of the value inside the cell names the cell. Reading it
    // fails only while Rhai holds the cell for writing (after Rhai's lock
    // wait of 50 ms), and then Rhai's own read of the variable, next, fails
    // the run with a data race after the same wait; the cell is kept anyway
    // (a second handle to one cell is harmless). The handles keep every
    // captured value alive until the run ends, within its memory bound.
    let address = cell
        .read_lock::<Dynamic>()
        .map(|inner| &*inner as *const Dynamic as usize);
    let _ = CELLS.try_with(|c| {
        let Ok(mut c) = c.try_borrow_mut() else {
            return;
        };
        if address.is_none_or(|a| c.seen.insert(a)) {
            c.held.push(cell.clone());
        }
    });
}

/// Empties every cell noted since it was made, when dropped.
pub struct Guard {
    _private: (),
}

impl Guard {
    /// Starts noting the cells of one run.
    pub fn start() -> Guard {
        clear();
        Guard { _private: () }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        clear();
    }
}

/// Empties every cell held, then lets go of them.
fn clear() {
    let held = CELLS
        .try_with(|c| {
            c.try_borrow_mut().map_or_else(
                |_| Vec::new(),
                |mut c| {
                    c.seen.clear();
                    std::mem::take(&mut c.held)
                },
            )
        })
        .unwrap_or_default();
    for mut cell in held {
        // Taken out under the lock and dropped after it: what it drops may
        // hold this very cell. A lock poisoned by a panic cannot be taken,
        // and that cell stays as it is.
        let inner = cell.write_lock::<Dynamic>().map(|mut v| v.take());
        drop(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its drops.
    #[derive(Clone)]
    struct Probe(Arc<AtomicUsize>);

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_cell_that_holds_itself_is_freed_at_the_end_of_the_run() {
        let drops = Arc::new(AtomicUsize::new(0));
        {
            let _guard = Guard::start();
            let mut cell = Dynamic::UNIT.into_shared();
            let mut map = rhai::Map::new();
            map.insert("self".into(), cell.clone());
            map.insert("probe".into(), Dynamic::from(Probe(drops.clone())));
            *cell.write_lock::<Dynamic>().expect("unlocked") = map.into();
            keep(&cell);
            keep(&cell);
            CELLS.with(|c| assert_eq!(c.borrow().held.len(), 1, "one handle per cell"));
            drop(cell);
            assert_eq!(
                drops.load(Ordering::SeqCst),
                0,
                "the cycle keeps the map alive"
            );
        }
        assert_eq!(drops.load(Ordering::SeqCst), 1, "the map was freed");
        CELLS.with(|c| assert!(c.borrow().held.is_empty()));
    }

    #[test]
    fn scripts_with_closures_are_told_apart() {
        let rhai = rhai::Engine::new_raw();
        let closures = |script: &str| defines_closures(&rhai.compile(script).expect("compiles"));
        assert!(closures("let a = 1; let f = || a; 0"));
        assert!(closures("fn g(x) { let h = |y| x + y; h.call(1) } g(1)"));
        assert!(closures("[1, 2].map(|x| x + 1)"));
        assert!(!closures("fn g(x) { x + 1 } g(1)"));
        assert!(!closures("let a = true || false; a"));
    }
}
