//! Deeply nested values: printing, comparing, interpolating, cloning,
//! dropping, storing or returning one ends in a clear error or succeeds,
//! never in a stack overflow that would abort the whole process; and the next
//! script runs.

mod common;

use std::time::Duration;

use common::Circle;
use engine::{ErrorKind, Limits, MAX_NESTING};

/// A circle whose time limit cannot be what ends these scripts: building a
/// deep value costs the square of its depth, seconds per script in a debug
/// build, and a loaded machine must not turn the expected `limit` error into
/// a `timeout`.
fn patient_circle() -> Circle {
    Circle::with_limits(Limits {
        timeout: Duration::from_secs(600),
        ..Limits::default()
    })
}

/// A script that nests `depth` arrays in `v` (then maps, every other level,
/// when `maps`), then does `tail`.
fn nested(depth: usize, maps: bool, tail: &str) -> String {
    let step = if maps {
        "if i % 2 == 0 { v = [v.take()]; } else { v = #{ k: v.take() }; }"
    } else {
        "v = [v.take()];"
    };
    format!("let v = ();\nfor i in 0..{depth} {{ {step} }}\n{tail}")
}

/// Everything that stock Rhai recurses through once per level of `v`.
const USES: &[&str] = &[
    "v.to_string().len()",
    "v.to_debug().len()",
    "print(v); 1",
    "debug(v); 1",
    "v == v",
    "v != v",
    "`${v}`.len()",
    "(\"x\" + v).len()",
    "[v].contains(v)",
    "v in [v]",
    "[v].index_of(v)",
    "#{ a: v }.to_json().len()",
    "#{ a: v } == #{ a: v }",
    "v.to_string()",
];

/// Uses that never print nor compare: they succeed at any reachable depth.
const HARMLESS: &[&str] = &["let w = v; 1", "v = (); 1", "let w = [v, v]; w.len() - 1"];

fn check_depth(c: &Circle, depth: usize, maps: bool, uses: &[&str]) {
    for tail in uses {
        let e = c.fails(&nested(depth, maps, tail), ErrorKind::Limit);
        assert!(
            e.message
                .contains(&format!("deeper than {MAX_NESTING} levels")),
            "{depth} {tail}: {e:?}"
        );
        c.still_works();
    }
    for tail in HARMLESS {
        assert_eq!(
            c.ok(&nested(depth, maps, tail)).output,
            "1",
            "{depth} {tail}"
        );
    }
    let e = c.fails(&nested(depth, maps, "v"), ErrorKind::Limit);
    assert!(e.message.contains("result nests"), "{e:?}");
    let e = c.fails(&nested(depth, maps, "db::insert(v)"), ErrorKind::Value);
    assert!(e.message.contains("deeper than 64 levels"), "{e:?}");
    c.still_works();
}

#[test]
fn values_nested_3000_levels_deep_are_refused_not_crashing() {
    let c = patient_circle();
    check_depth(&c, 3_000, false, USES);
    check_depth(&c, 3_000, true, USES);
}

#[test]
fn values_nested_10000_levels_deep_are_refused_not_crashing() {
    let c = patient_circle();
    // Building costs the square of the depth: a few uses only.
    check_depth(
        &c,
        10_000,
        false,
        &[
            "v.to_string().len()",
            "v == v",
            "`${v}`.len()",
            "print(v); 1",
        ],
    );
}

#[test]
fn values_within_the_bound_still_print_and_compare() {
    let c = Circle::new();
    let depth = MAX_NESTING - 1;
    let out = c.ok(&nested(depth, false, "v.to_string()")).output;
    assert_eq!(out, format!("{}(){}", "[".repeat(depth), "]".repeat(depth)));
    assert_eq!(c.ok(&nested(depth, false, "v == v")).output, "true");
    assert_eq!(
        c.ok(&nested(depth, true, "`${v}`.len() > 0")).output,
        "true"
    );
    assert_eq!(
        c.ok("[1, [2, \"a\"], #{b: 1.5}] == [1, [2, \"a\"], #{b: 1.5}]")
            .output,
        "true"
    );
    assert_eq!(c.ok("[1, [2, \"a\"]] == [1, [2, \"b\"]]").output, "false");
    assert_eq!(c.ok("[1, [2]] != [1, [3]]").output, "true");
    assert_eq!(c.ok("#{a: [1]} == #{a: [1]}").output, "true");
    assert_eq!(c.ok("[[1], 2].contains([1])").output, "true");
    assert_eq!(
        c.ok("`${[1, \"a\", #{b: ()}]}`").output,
        "[1, \"a\", #{\"b\": ()}]"
    );
    let e = c.fails(
        &nested(MAX_NESTING + 1, false, "v.to_string()"),
        ErrorKind::Limit,
    );
    assert!(e.message.contains("deeper than"), "{e:?}");
}

#[test]
fn the_deepest_value_reachable_within_the_default_limits_is_safe_to_clone_and_drop() {
    // Rhai checks the size of every new array recursively, so nesting costs
    // time in the square of the depth: the deepest value a script can build
    // is whatever it reaches when the time limit stops it. This script
    // nests until then, cloning its value every 1,000 levels; the value is
    // dropped when the run ends.
    let c = Circle::new();
    let script = "let v = (); let n = 0;\n\
                  loop { v = [v.take()]; n += 1; if n % 1000 == 0 { let w = v; } }";
    c.fails(script, ErrorKind::Timeout);
    c.still_works();
}

#[test]
fn throwing_or_switching_on_a_deeply_nested_value_does_not_crash() {
    let c = Circle::new();
    let e = c.fails(&nested(3_000, true, "throw v;"), ErrorKind::Runtime);
    assert!(e.message.contains("threw a value nesting"), "{e:?}");
    let script = nested(3_000, false, "switch v { 1 => 1, _ => 2 }");
    assert_eq!(c.ok(&script).output, "2");
    c.still_works();
}

#[test]
fn a_result_may_nest_exactly_max_nesting_levels_as_printing_may() {
    let c = Circle::new();
    let out = c.ok(&nested(MAX_NESTING, false, "v")).output;
    assert_eq!(
        out,
        format!("{}(){}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING))
    );
    let e = c.fails(&nested(MAX_NESTING + 1, false, "v"), ErrorKind::Limit);
    assert!(e.message.contains("result nests"), "{e:?}");
    // Printing has the same bound.
    c.ok(&nested(MAX_NESTING, false, "print(v); 1"));
    c.fails(
        &nested(MAX_NESTING + 1, false, "print(v); 1"),
        ErrorKind::Limit,
    );
}

/// Rhai's `to_json` writes what a closure captured, following shared cells
/// with no bound and no cycle check (unlike its `to_string`): a copy of a map
/// holding a closure over that map (`m.f = || m`) is infinitely deep JSON,
/// and so is a chain of closures deeper than the bound. Each is refused as
/// too deep, not written until the stack overflows and the process aborts.
#[test]
fn to_json_of_a_map_reaching_itself_through_a_closure_is_refused_not_crashing() {
    let c = patient_circle();
    for script in [
        "let m = #{}; m.f = || m; let n = m; n.to_json()",
        "let m = #{}; m.f = || m; m.g = || m; let n = m; n.to_json()",
        "let m = #{}; m.f = || [m, m]; let n = [m, m]; #{ n: n }.to_json()",
        "let v = #{}; for i in 0..300 { let w = v; v = #{ f: || w }; } v.to_json()",
        // On the shared map itself, locked while its method runs.
        "let m = #{}; m.f = || m; m.to_json()",
    ] {
        let e = c.fails(script, ErrorKind::Limit);
        assert!(
            e.message
                .contains(&format!("deeper than {MAX_NESTING} levels")),
            "{script}: {e:?}"
        );
        c.still_works();
    }
    // A closure chain within the bound is written as stock Rhai writes it.
    let json = c
        .ok("let v = #{}; for i in 0..3 { let w = v; v = #{ f: || w }; } v.to_json()")
        .output;
    let shape: String = json
        .split('"')
        .map(|part| {
            if part.starts_with("anon$") {
                "anon"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("\"");
    assert_eq!(shape, r#"{"f":["anon",{"f":["anon",{"f":["anon",{}]}]}]}"#);
}

/// A script that nests `depth` maps through closures: each level a map
/// holding a closure that captured the level below. Building it is linear
/// (Rhai's size checks do not look into what closures captured): 300,000
/// levels take a second within the default limits.
fn closure_chain(depth: usize, tail: &str) -> String {
    format!("let v = #{{}};\nfor i in 0..{depth} {{ let w = v; v = #{{ f: || w }}; }}\n{tail}")
}

/// Rhai's text of a thrown array or map (its `Display`) writes what the
/// closures in it captured, one recursion per level: a value nesting deeper
/// than the bound through closures is named, not written.
#[test]
fn throwing_a_value_nesting_deeply_through_closures_does_not_crash() {
    let c = patient_circle();
    for tail in ["throw v;", "throw [v.f];"] {
        let e = c.fails(&closure_chain(300_000, tail), ErrorKind::Runtime);
        assert!(
            e.message.contains(&format!(
                "threw a value nesting arrays or maps deeper than {MAX_NESTING} levels"
            )),
            "{tail}: {e:?}"
        );
        c.still_works();
    }
    // Within the bound the text is Rhai's, captured values included.
    let e = c.fails(&closure_chain(2, "throw v;"), ErrorKind::Runtime);
    assert!(e.message.starts_with("#{\"f\": Fn*(\"anon$"), "{e:?}");
}

/// `switch` hashes its value, following what closures captured, one
/// recursion per level (Rhai's `is_hashable` and `Hash`), and no guard can
/// run before it: a script that defines closures may not use `switch`
/// (refused when it compiles, wherever the `switch` is), so a value nesting
/// hundreds of thousands of levels through closures never reaches it. A
/// script without closures keeps `switch`.
#[test]
fn switching_on_a_value_nesting_deeply_through_closures_is_refused_not_crashing() {
    let c = patient_circle();
    let refused = [
        closure_chain(300_000, "switch v { 1 => 1, _ => 2 }"),
        closure_chain(2, "fn pick(x) { switch x { 1 => 1, _ => 2 } }\npick(v)"),
        "let f = |x| switch x { 1 => 1, _ => 2 };\nf.call(1)".to_string(),
    ];
    for script in &refused {
        let e = c.fails(script, ErrorKind::Syntax);
        assert!(
            e.message
                .contains("'switch' is not available in a script that defines closures"),
            "{script}: {e:?}"
        );
        assert!(e.line.is_some(), "the refusal points at the switch: {e:?}");
        c.still_works();
    }
    assert_eq!(
        c.ok("let x = 2; switch x { 1 => \"one\", _ => \"other\" }")
            .output,
        "other"
    );
}
