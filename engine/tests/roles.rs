//! A run's caller: `caller()` returns its name, and with role read the
//! writing `db::` functions fail with `forbidden` and nothing is written,
//! while reads work.

mod common;

use common::{Circle, run_with};
use engine::{Caller, ErrorKind, Outcome, Role, RunControl, ScriptError};

fn control(name: &str, role: Role) -> RunControl {
    RunControl {
        caller: Caller {
            name: name.to_owned(),
            role,
        },
        ..RunControl::default()
    }
}

fn run_as(c: &Circle, name: &str, role: Role, script: &str) -> Result<Outcome, ScriptError> {
    run_with(&c.engine, script, &control(name, role))
}

/// Two records (ids 1 and 2, record 1 with two versions) written by the
/// trusted identity.
fn seeded() -> Circle {
    let c = Circle::new();
    c.ok(r#"let a = db::insert(#{ n: 1 }); db::update(a, #{ n: 11 }); db::insert("two");"#);
    c
}

const SNAPSHOT: &str =
    r#"`${db::get(1)}|${db::get(2)}|${db::get(3)}|${db::history(1, 5)}|${db::next_id()}`"#;

fn snapshot(c: &Circle) -> String {
    c.ok(SNAPSHOT).output
}

#[test]
fn a_read_caller_gets_forbidden_from_each_writing_function_and_the_db_is_unchanged() {
    let c = seeded();
    let before = snapshot(&c);
    let writes = [
        ("db::insert", r#"db::insert(#{ n: 3 })"#, 1),
        ("db::update", r#"db::update(1, "changed")"#, 1),
        ("db::delete", "db::delete(2)", 1),
        // After reads, and on the third line: the position is the call's.
        (
            "db::insert",
            "let x = db::get(1);\nlet y = db::exists(2);\ndb::insert(x)",
            3,
        ),
    ];
    for (function, script, line) in writes {
        let e = run_as(&c, "bob", Role::Read, script).expect_err(script);
        assert_eq!(e.kind, ErrorKind::Forbidden, "{script}: {e:?}");
        assert_eq!(e.kind.as_str(), "forbidden");
        assert_eq!(
            e.message,
            format!(
                "{function} is not allowed: principal 'bob' has role read; writes need role write"
            )
        );
        assert_eq!(e.line, Some(line), "{script}");
        assert_eq!(snapshot(&c), before, "{script} changed the database");
    }
    // Even a write of a value that cannot be stored, or to a bad id, is
    // refused for the role first.
    for script in ["db::insert(|| 1)", "db::update(-1, 1)", "db::delete(-1)"] {
        let e = run_as(&c, "bob", Role::Read, script).expect_err(script);
        assert_eq!(e.kind, ErrorKind::Forbidden, "{script}: {e:?}");
    }
    assert_eq!(snapshot(&c), before);
}

#[test]
fn a_read_caller_can_read_everything() {
    let c = seeded();
    let expected = snapshot(&c);
    let read = run_as(&c, "bob", Role::Read, SNAPSHOT).expect("reads work");
    assert_eq!(read.output, expected);
    assert_eq!(read.writes, 0);
    assert_eq!(
        run_as(&c, "bob", Role::Read, "[db::exists(1), db::exists(9)]")
            .expect("exists")
            .output,
        "[true, false]"
    );
}

#[test]
fn a_write_caller_writes() {
    let c = seeded();
    let out = run_as(
        &c,
        "alice",
        Role::Write,
        r#"let id = db::insert("three"); db::update(1, "one"); db::delete(2); id"#,
    )
    .expect("a write caller writes");
    assert_eq!(out.output, "3");
    assert_eq!(out.writes, 3);
    assert_eq!(
        c.ok("[db::get(1), db::get(2), db::get(3)]").output,
        r#"["one", (), "three"]"#
    );
}

#[test]
fn caller_returns_the_name_of_the_run_and_nothing_after_it() {
    let c = Circle::new();
    assert_eq!(
        run_as(&c, "alice", Role::Write, "caller()")
            .expect("caller")
            .output,
        "alice"
    );
    assert_eq!(
        run_as(&c, "bob", Role::Read, "`${caller()}!`")
            .expect("caller")
            .output,
        "bob!"
    );
    // The default control is the trusted identity: no name, may write.
    assert_eq!(c.ok("caller()").output, "");
    assert_eq!(c.ok(r#"db::insert(caller())"#).output, "1");
    // A cached script gives each run its own caller.
    for name in ["carol", "dave", ""] {
        assert_eq!(
            run_as(&c, name, Role::Read, "caller()")
                .expect("caller")
                .output,
            name
        );
    }
}

#[test]
fn a_caught_forbidden_error_is_seen_by_the_script_and_writes_nothing() {
    let c = seeded();
    let before = snapshot(&c);
    let script = r#"
        let seen = [];
        for v in [1, 2, 3] {
            try { db::insert(v); } catch (e) { seen.push(`${e.kind}: ${e.message}`); }
        }
        try { db::update(1, 0); } catch (e) { seen.push(e.kind); }
        try { db::delete(1); } catch (e) { seen.push(e.kind); }
        seen.push(db::next_id());
        seen
    "#;
    let out = run_as(&c, "bob", Role::Read, script).expect("the script caught every refusal");
    let msg = "db::insert is not allowed: principal 'bob' has role read; writes need role write";
    assert_eq!(
        out.output,
        format!(
            r#"["forbidden: {msg}", "forbidden: {msg}", "forbidden: {msg}", "forbidden", "forbidden", 3]"#
        )
    );
    assert_eq!(out.writes, 0);
    assert_eq!(snapshot(&c), before);
}

#[test]
fn a_script_defined_caller_function_does_not_change_enforcement() {
    let c = seeded();
    let before = snapshot(&c);
    let script = r#"
        fn caller() { "admin" }
        let shown = caller();
        db::insert(shown)
    "#;
    let e = run_as(&c, "bob", Role::Read, script).expect_err("still read-only");
    assert_eq!(e.kind, ErrorKind::Forbidden);
    assert_eq!(
        e.message,
        "db::insert is not allowed: principal 'bob' has role read; writes need role write"
    );
    assert_eq!(snapshot(&c), before);
    // The script's own function shadows only its own calls.
    assert_eq!(
        run_as(&c, "bob", Role::Read, "fn caller() { \"admin\" } caller()")
            .expect("runs")
            .output,
        "admin"
    );
    assert_eq!(
        run_as(&c, "bob", Role::Read, "caller()")
            .expect("runs")
            .output,
        "bob"
    );
}

#[test]
fn a_read_run_does_not_leave_its_role_to_the_next_run() {
    let c = Circle::new();
    run_as(&c, "bob", Role::Read, "db::insert(1)").expect_err("forbidden");
    assert_eq!(
        run_as(&c, "alice", Role::Write, "db::insert(1)")
            .expect("write")
            .output,
        "1"
    );
    run_as(&c, "bob", Role::Read, "db::insert(1)").expect_err("forbidden again");
    assert_eq!(c.ok("db::next_id()").output, "2");
}

/// README's example of going on after a refused write.
#[test]
fn a_read_caller_can_catch_forbidden_and_go_on() {
    let c = seeded();
    let script = r#"let denied = false; try { db::insert(3) } catch (e) { denied = e.kind == "forbidden"; } `${denied} ${db::get(2)}`"#;
    let out = run_as(&c, "reader", Role::Read, script).expect("runs");
    assert_eq!(out.output, "true two");
    assert_eq!(c.ok("db::next_id()").output, "3", "nothing written");
}
