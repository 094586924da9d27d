//! Tests of circles.json parsing and checking.
use super::*;

fn err(text: &str) -> String {
    parse(text).expect_err("must be rejected")
}

#[test]
fn a_circle_may_name_its_own_redis_in_any_accepted_form() {
    let circles = parse(
        r#"[{"id": 1, "name": "A", "port": 1},
            {"id": 2, "name": "B", "port": 2, "redis": "redis://:pw@10.0.0.5:6390/1"},
            {"id": 3, "name": "C", "port": 3,
             "redis": "redis+sentinel://10.0.0.1,10.0.0.2:26380/mymaster"}]"#,
    )
    .expect("valid");
    assert_eq!(circles[0].redis, None);
    let b = circles[1].redis.as_ref().expect("B has its own");
    assert_eq!(b.to_string(), "redis://10.0.0.5:6390/1");
    assert!(circles[2].redis.as_ref().is_some_and(|u| u.is_sentinel()));
}

#[test]
fn a_bad_redis_of_a_circle_names_the_circle_and_hides_the_password() {
    for (url, says) in [
        ("http://u:hunter2@h:1", "is not a redis:// URL"),
        ("unix:///tmp/r.sock?pass=hunter2", "no host and port"),
        ("redis+sentinel://u:hunter2@h:26379", "no service name"),
        ("redis+sentinel://:hunter2@h:0/m", "port \"0\""),
    ] {
        let text = format!(r#"[{{"id": 7, "name": "Beta", "port": 1, "redis": "{url}"}}]"#);
        let e = err(&text);
        assert!(e.contains("circle at index 0 (id 7, name \"Beta\")"), "{e}");
        assert!(e.contains("\"redis\""), "{e}");
        assert!(e.contains(says), "{url}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let e = err(r#"[{"id": 1, "name": "A", "port": 1, "redis": 5}]"#);
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn a_duplicated_field_is_refused_with_its_position_in_the_file() {
    let text = "[\n {\"id\": 1, \"name\": \"A\", \"port\": 8081, \"port\": 9}\n]";
    let e = err(text);
    assert!(e.contains("circle at index 0"), "{e}");
    assert!(e.contains("duplicate field `port`"), "{e}");
    // The second "port" key's closing quote is at line 2, column 44 of
    // the file (the element starts at column 2: the position is the
    // file's, not the element's).
    assert!(e.ends_with("at line 2 column 44"), "{e}");
    // Columns count bytes, as serde_json's do, also past non-ASCII text.
    let e = err(r#"[{"id":1,"name":"ééé","port":1}, {"id":2,"name":"b","port":2,"port":3}]"#);
    assert!(e.ends_with("at line 1 column 70"), "{e}");
    let e = err("[{\"id\": 1, \"name\": \"A\", \"name\": \"B\", \"port\": 1}]");
    assert!(
        e.contains("duplicate field `name`") && e.contains("line 1"),
        "{e}"
    );
}

#[test]
fn principals_decode_to_name_hash_and_role_and_are_optional() {
    let hash = "ab".repeat(32);
    let circles = parse(&format!(
        r#"[{{"id":1,"name":"A","port":1}},{{"id":2,"name":"B","port":2,"principals":[{{"name":"ann","token_sha256":"{hash}","role":"read"}}]}}]"#
    ))
    .expect("valid");
    assert!(circles[0].principals.is_empty());
    let p = &circles[1].principals[0];
    assert_eq!(p.name, "ann");
    assert_eq!(p.token_sha256, [0xab; 32]);
    assert_eq!(p.role, client::Role::Read);
    let e = err(&format!(
        "[{{\"id\":1,\"name\":\"A\",\"port\":1,\"principals\":[\n {{\"name\":\"ann\",\"token_sha256\":\"{hash}\",\"role\":\"read\",\"rol\":1}}]}}]"
    ));
    assert!(
        e.contains("principal at index 0") && e.contains("line 2"),
        "{e}"
    );
}

#[test]
fn a_byte_order_mark_before_the_json_is_accepted() {
    let circles = parse("\u{feff}[{\"id\": 1, \"name\": \"A\", \"port\": 1}]").expect("BOM");
    assert_eq!(circles[0].name, "A");
}

#[test]
fn a_name_over_the_length_limit_is_refused_and_shown_by_its_start() {
    let at_limit = "n".repeat(MAX_NAME_CHARS);
    parse(&format!(
        r#"[{{"id": 1, "name": "{at_limit}", "port": 1}}]"#
    ))
    .expect("at the limit");
    // Counted in characters, not bytes.
    let wide = format!("c{}", "円".repeat(MAX_NAME_CHARS - 1));
    parse(&format!(r#"[{{"id": 1, "name": "{wide}", "port": 1}}]"#)).expect("wide characters");
    let long = format!("{}{}", "n".repeat(MAX_NAME_CHARS), "x".repeat(99_900));
    let e = err(&format!(r#"[{{"id": 1, "name": "{long}", "port": 1}}]"#));
    assert!(
        e.contains("the name is 100000 characters long; a name has at most 100"),
        "{e}"
    );
    assert!(e.contains(&format!("name \"{at_limit}\"…")), "{e}");
    assert!(
        e.len() < 600,
        "the message shows the name by its start: {} bytes",
        e.len()
    );
}

#[test]
fn a_name_with_a_control_character_is_refused() {
    // Also the invisible ones that reorder, join or break a terminal line:
    // a right-to-left override, a zero-width joiner, a line separator.
    for name in [
        "a\\nb",
        "red\\u001b[31m",
        "tab\\there",
        "evil\\u202etxt.exe",
        "zero\\u200dwidth",
        "two\\u2028lines",
    ] {
        let e = err(&format!(r#"[{{"id": 1, "name": "{name}", "port": 1}}]"#));
        assert!(e.contains("control character"), "{name}: {e}");
        assert!(
            !e.chars().any(crate::names::garbles),
            "the message shows the name escaped: {e:?}"
        );
    }
    // Letters of any script are fine.
    parse(r#"[{"id": 1, "name": "Ćircle ünïcode 円", "port": 1}]"#).expect("unicode name");
}

#[test]
fn valid_file_gives_every_circle_in_order() {
    let circles =
        parse(r#"[{"id":1,"name":"Alpha","port":8081},{"id":2,"name":"Beta Circle","port":8082}]"#)
            .expect("valid");
    assert_eq!(circles.len(), 2);
    assert_eq!(circles[1].name, "Beta Circle");
    assert_eq!(circles[1].port, 8082);
}

#[test]
fn invalid_json_reports_line_and_column() {
    let e = err("[\n {\"id\": 1,, }\n]");
    assert!(e.contains("invalid JSON") && e.contains("line 2"), "{e}");
}

#[test]
fn element_errors_name_the_index_and_what_is_known_of_the_circle() {
    let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"B"}]"#);
    assert!(
        e.contains("index 1") && e.contains("id 2") && e.contains("`port`"),
        "{e}"
    );
    let e = err(r#"[{"id":"one","name":"A","port":1}]"#);
    assert!(e.contains("index 0") && e.contains("invalid type"), "{e}");
    let e = err(r#"[{"id":1,"name":"A","port":1,"prot":2}]"#);
    assert!(e.contains("unknown field `prot`"), "{e}");
    let e = err(r#"[{"id":1,"name":"A","port":70000}]"#);
    assert!(e.contains("index 0") && e.contains("70000"), "{e}");
}

#[test]
fn value_rules_and_duplicates_are_rejected_naming_both_circles() {
    let e = err(r#"[{"id":1,"name":"","port":1}]"#);
    assert!(e.contains("name is empty"), "{e}");
    let e = err(r#"[{"id":1,"name":"A","port":0}]"#);
    assert!(e.contains("port 0"), "{e}");
    let e = err(r#"[{"id":1,"name":"A","port":1},{"id":1,"name":"B","port":2}]"#);
    assert!(
        e.contains("duplicate id 1") && e.contains("\"A\"") && e.contains("\"B\""),
        "{e}"
    );
    let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"B","port":1}]"#);
    assert!(e.contains("duplicate port 1"), "{e}");
    let e = err(r#"[{"id":1,"name":"A","port":1},{"id":2,"name":"A","port":2}]"#);
    assert!(e.contains("duplicate name \"A\""), "{e}");
    let e =
        err(r#"[{"id":1,"name":"Alpha Circle","port":1},{"id":2,"name":"alpha-circle","port":2}]"#);
    assert!(e.contains("duplicate queue name \"alpha_circle\""), "{e}");
    assert!(err("[]").contains("empty"));
    assert!(err("{}").contains("expected a JSON array"));
}

#[test]
fn an_element_that_does_not_decode_is_shown_by_the_start_of_its_long_values() {
    // As a valid circle's too-long name is shown by its start, so is what
    // an element that does not decode holds: a huge circles.json must not
    // make a megabyte-long error (which a reload also keeps and serves in
    // the status header, `/api/status` and the events stream).
    let long = "n".repeat(100_000);
    let ids = vec!["0"; 50_000].join(",");
    for (what, text) in [
        (
            "a long name, a bad port",
            format!(r#"[{{"id": 1, "name": "{long}", "port": "x"}}]"#),
        ),
        (
            "a long id",
            format!(r#"[{{"id": [{ids}], "name": "A", "port": 1}}]"#),
        ),
        (
            "a long value serde quotes",
            format!(r#"[{{"id": 1, "name": "A", "port": "{long}"}}]"#),
        ),
    ] {
        let e = err(&text);
        assert!(e.contains("circle at index 0"), "{what}: {}", &e[..200]);
        assert!(
            e.len() < 1000,
            "{what}: the message is {} bytes: {}…",
            e.len(),
            &e[..300]
        );
    }
}
