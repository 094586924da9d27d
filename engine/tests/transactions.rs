//! A script is one transaction: its reads see its own writes, success commits
//! everything at once, any failure leaves nothing (not even the ids it saw).

mod common;

use common::Circle;
use engine::ErrorKind;

#[test]
fn script_that_writes_then_throws_leaves_nothing() {
    let c = Circle::new();
    c.ok("db::insert(\"kept\")");
    let e = c.fails(
        "let a = db::insert(#{ n: 1 });\nlet b = db::insert(#{ n: 2 });\ndb::update(1, \"changed\");\ndb::delete(1);\nthrow `boom after ${a} and ${b}`;",
        ErrorKind::Runtime,
    );
    assert_eq!(e.message, "boom after 2 and 3");
    assert_eq!(e.line, Some(5));
    // Ids 2 and 3 were handed out inside the failed script: not visible, and
    // the next insert gets 2 again.
    let o = c.ok("[db::exists(2), db::exists(3), db::get(1), db::next_id(), db::insert(\"next\")]");
    assert_eq!(o.output, "[false, false, \"kept\", 2, 2]");
}

#[test]
fn script_failing_on_a_runtime_error_leaves_nothing() {
    let c = Circle::new();
    c.fails("db::insert(1);\nlet x = 1 / 0;", ErrorKind::Runtime);
    c.fails("db::insert(1);\nundefined_function()", ErrorKind::Runtime);
    assert_eq!(c.ok("db::next_id()").output, "1");
}

#[test]
fn successful_script_leaves_every_write() {
    let c = Circle::new();
    let o = c.ok(
        "let a = db::insert(#{ name: \"Ada\" });\nlet b = db::insert(#{ name: \"Bob\" });\n\
         db::update(a, #{ name: \"Ada L\" });\ndb::delete(b);\n[a, b]",
    );
    assert_eq!(o.output, "[1, 2]");
    assert_eq!(o.writes, 4);
    let o = c.ok("[db::get(1).name, db::exists(2), db::history(1, 10).len(), db::next_id()]");
    assert_eq!(o.output, "[\"Ada L\", false, 2, 3]");
    assert_eq!(o.writes, 0);
}

#[test]
fn reads_see_the_scripts_own_writes() {
    let c = Circle::new();
    c.ok("db::insert(\"v1\")");
    let o = c.ok(
        "let before = db::next_id();\n\
         let id = db::insert(#{ n: 1 });\n\
         let seen = db::get(id);\n\
         db::update(id, #{ n: 2 });\n\
         db::update(1, \"v2\");\n\
         let h_new = db::history(id, 10);\n\
         let h_old = db::history(1, 10);\n\
         let gone = db::delete(1);\n\
         [before, id, seen.n, db::get(id).n, h_new, h_old, gone, db::exists(1), db::get(1), db::history(1, 5), db::next_id()]",
    );
    assert_eq!(
        o.output,
        "[2, 2, 1, 2, [#{\"n\": 2}, #{\"n\": 1}], [\"v2\", \"v1\"], true, false, (), [], 3]"
    );
}

#[test]
fn history_is_newest_first_and_capped_at_n() {
    let c = Circle::new();
    c.ok("let id = db::insert(0); for i in 1..5 { db::update(id, i); }");
    c.ok("for i in 5..8 { db::update(1, i); }");
    assert_eq!(c.ok("db::history(1, 3)").output, "[7, 6, 5]");
    // Across the script's own versions and the committed ones.
    assert_eq!(
        c.ok("db::update(1, 8); db::update(1, 9); db::history(1, 4)")
            .output,
        "[9, 8, 7, 6]"
    );
    assert_eq!(c.ok("db::history(1, 0)").output, "[]");
    assert_eq!(c.ok("db::history(99, 5)").output, "[]");
}

#[test]
fn missing_records_read_as_unit_and_updating_them_is_a_database_error() {
    let c = Circle::new();
    assert_eq!(c.ok("db::get(42)").output, "");
    assert_eq!(c.ok("db::get(42) == ()").output, "true");
    assert_eq!(
        c.ok("[db::exists(42), db::delete(42)]").output,
        "[false, false]"
    );
    let e = c.fails("let x = 1;\n  db::update(42, \"x\")", ErrorKind::Database);
    assert!(e.message.contains("record 42 not found"), "{e:?}");
    // Rhai places a call at its function name: `update` in `  db::update`.
    assert_eq!((e.line, e.column), (Some(2), Some(7)));
    c.fails(
        "let id = db::insert(1); db::delete(id); db::update(id, 2)",
        ErrorKind::Database,
    );
    assert_eq!(c.ok("db::next_id()").output, "1");
}

#[test]
fn ids_outside_the_range_given_out_are_a_clear_error() {
    let c = Circle::new();
    for script in [
        "db::get(-1)",
        "db::get(0)",
        "db::exists(0)",
        "db::history(0, 1)",
        "db::get(4294967295)",
        "db::exists(4294967295)",
        "db::get(4294967296)",
        "db::update(-5, 1)",
        "db::update(0, 1)",
        "db::delete(0)",
        "db::delete(1 << 40)",
    ] {
        let e = c.fails(script, ErrorKind::Database);
        assert!(e.message.contains("invalid record id"), "{e:?}");
    }
    c.fails("db::history(1, -1)", ErrorKind::Database);
}

#[test]
fn script_can_catch_a_database_error_and_carry_on() {
    let c = Circle::new();
    let o = c.ok("let r = \"no error\";\n\
         try { db::update(7, 1); } catch (e) { r = `${e.kind}: ${e.message}`; }\n\
         db::insert(r);\nr");
    assert_eq!(o.output, "database: record 7 not found");
    assert_eq!(c.ok("db::get(1)").output, "database: record 7 not found");
}

#[test]
fn writes_before_a_caught_throw_stay_and_commit_with_the_script() {
    let c = Circle::new();
    let o = c.ok("db::insert(\"before\");\n\
         try { db::insert(\"inside\"); throw \"stop\"; } catch (e) { db::insert(e); }\n\
         db::next_id()");
    assert_eq!(o.output, "4");
    assert_eq!(
        c.ok("[db::get(1), db::get(2), db::get(3)]").output,
        "[\"before\", \"inside\", \"stop\"]"
    );
}

#[test]
fn two_engines_on_two_databases_never_see_each_others_data() {
    let a = Circle::new();
    let b = Circle::new();
    a.ok("db::insert(\"from a\"); db::insert(\"a again\")");
    b.ok("db::insert(\"from b\")");
    assert_eq!(
        a.ok("[db::get(1), db::get(2), db::next_id()]").output,
        "[\"from a\", \"a again\", 3]"
    );
    assert_eq!(
        b.ok("[db::get(1), db::get(2), db::next_id()]").output,
        "[\"from b\", (), 2]"
    );
    // Directly on disk, too.
    assert_eq!(b.engine.db().get(2).expect("read b"), None);
}

#[test]
fn writes_are_visible_to_the_next_script_and_on_reopen() {
    let c = Circle::new();
    c.ok("db::insert(#{ list: [1, 2.5, \"x\"], flag: true })");
    let dir = c.dir.path().to_path_buf();
    let Circle { dir: keep, engine } = c;
    drop(engine);
    let reopened = engine::CircleEngine::new(
        common::open(&dir, ourdb::Durability::Flush),
        engine::Limits::default(),
    );
    let o = common::run_with(&reopened, "db::get(1)", &engine::RunControl::default())
        .expect("read after reopen");
    assert_eq!(o.output, "#{\"flag\": true, \"list\": [1, 2.5, \"x\"]}");
    drop(keep);
}

#[test]
fn concurrent_runs_on_one_engine_are_serialised_and_lose_no_update() {
    let c = Circle::new();
    c.ok("db::insert(0)");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10 {
                    c.ok("let n = db::get(1); db::update(1, n + 1); db::insert(n)");
                }
            });
        }
    });
    assert_eq!(c.ok("[db::get(1), db::next_id()]").output, "[40, 42]");
}
