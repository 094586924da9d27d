//! An error's message stays within the output limit, whatever the script
//! named its functions: the chain of script functions an error came through
//! is part of the message, one name per call.

mod common;

use common::Circle;
use engine::{ErrorKind, Limits};

#[test]
fn an_error_deep_in_recursive_calls_gives_a_message_within_the_output_limit() {
    let c = Circle::new();
    let max = Limits::default().max_output_bytes;
    // A function named with 80,000 characters (the script is 240 KB, within
    // the 256 KiB limit) that recurses 60 times, then divides by zero.
    let name = "f".repeat(80_000);
    let script =
        format!("fn {name}(n) {{ if n == 0 {{ 1 / 0 }} else {{ {name}(n - 1) }} }}\n{name}(60)");
    assert!(script.len() <= Limits::default().max_script_bytes);
    let e = c.fails(&script, ErrorKind::Runtime);
    assert!(
        e.message.starts_with("Division by zero"),
        "{}",
        &e.message[..60]
    );
    assert!(
        e.message.len() <= max,
        "a message of {} bytes passes the output limit of {max} bytes",
        e.message.len()
    );
    c.still_works();
}

#[test]
fn a_missing_function_named_at_run_time_gives_a_message_within_the_output_limit() {
    let c = Circle::new();
    let max = Limits::default().max_output_bytes;
    // A name of exactly the string limit, called through a function pointer.
    let e = c.fails(
        "let s = \"f\"; for i in 0..20 { s += s; } let p = Fn(s); p.call(1, 2, 3)",
        ErrorKind::Runtime,
    );
    assert!(
        e.message.len() <= max,
        "a message of {} bytes passes the output limit of {max} bytes",
        e.message.len()
    );
    c.still_works();
}
