//! The worker's and the waiters' decoding of what a third party may write
//! into Redis: a claim script's reply (its fields come from the task hash),
//! a task hash read as an outcome, a published notification. Never a panic;
//! a claimed task whose id, script or caller is not text, or whose role is
//! neither `read` nor `write`, becomes `Unreadable` (the worker ends it as
//! invalid), never a crash, a mangled script or another identity.
#![no_main]

use std::collections::HashMap;

use client::broker::Claim;
use client::fuzzing::{self, ClaimReading};
use client::{Outcome, fields};
use libfuzzer_sys::fuzz_target;

/// Splits `data` into fields at 0xFF bytes (never in UTF-8 text).
fn split(data: &[u8]) -> Vec<Vec<u8>> {
    data.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect()
}

fn check_claim(reply: Vec<Vec<u8>>) {
    let tag = reply.first().cloned().unwrap_or_default();
    let field = |i: usize| reply.get(i).cloned().unwrap_or_default();
    let read = fuzzing::claim(Some(reply.clone()));
    match &read {
        Err(_) => assert!(
            !matches!(
                &tag[..],
                b"run" | b"expired" | b"cancelled" | b"lost" | b"missing" | b"invalid" | b"skipped"
            ),
            "a known reply was refused: {read:?}"
        ),
        Ok(None) => panic!("a reply is never read as an empty queue"),
        Ok(Some(ClaimReading::Claim(Claim::Run(task)))) => {
            assert_eq!(tag, b"run");
            assert_eq!(
                task.task_id.as_bytes(),
                &field(1)[..],
                "the id is kept as is"
            );
            assert_eq!(
                task.script.as_bytes(),
                &field(2)[..],
                "the script is kept as is"
            );
            // No role: the trusted identity, whatever `caller` holds; a
            // role runs as exactly that role and name, never another.
            match &task.caller {
                None => assert!(field(5).is_empty(), "a role was dropped"),
                Some(caller) => {
                    assert_eq!(caller.role.as_str().as_bytes(), &field(5)[..]);
                    assert_eq!(caller.name.as_bytes(), &field(4)[..]);
                }
            }
        }
        Ok(Some(ClaimReading::Unreadable { raw_id, reason })) => {
            assert_eq!(tag, b"run");
            assert_eq!(raw_id, &field(1));
            let role = field(5);
            let bad_role = !role.is_empty() && role != b"read" && role != b"write";
            let not_text = std::str::from_utf8(&field(1)).is_err()
                || std::str::from_utf8(&field(2)).is_err()
                || (!role.is_empty() && std::str::from_utf8(&field(4)).is_err());
            assert!(bad_role || not_text, "refused a readable task: {reason}");
            assert!(
                reason.contains("not valid UTF-8") || reason.contains("neither"),
                "{reason}"
            );
        }
        Ok(Some(ClaimReading::Claim(_))) => assert_ne!(tag, b"run"),
    }
    assert!(fuzzing::claim(None).expect("an empty queue").is_none());
}

fn check_outcome(task_id: &str, hash: &HashMap<String, String>) {
    match fuzzing::outcome(task_id, hash) {
        Ok(Some(Outcome::Completed(out))) => {
            assert_eq!(
                hash.get(fields::STATUS).map(String::as_str),
                Some("completed")
            );
            assert_eq!(out.task_id, task_id);
        }
        Ok(Some(Outcome::Failed(failure))) => {
            assert_eq!(hash.get(fields::STATUS).map(String::as_str), Some("error"));
            assert_eq!(failure.task_id, task_id);
        }
        Ok(None) | Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => check_claim(split(rest)),
        1 => {
            // A task hash: alternating field names and values.
            let parts = split(rest);
            let hash: HashMap<String, String> = parts
                .chunks(2)
                .map(|kv| {
                    let text = |b: Option<&Vec<u8>>| {
                        String::from_utf8_lossy(b.map_or(&[][..], Vec::as_slice)).into_owned()
                    };
                    (text(kv.first()), text(kv.get(1)))
                })
                .collect();
            check_outcome("t", &hash);
        }
        2 => {
            if let Some((id, outcome)) = fuzzing::notification(rest) {
                let task_id = match &outcome {
                    Outcome::Completed(out) => &out.task_id,
                    Outcome::Failed(failure) => &failure.task_id,
                };
                assert_eq!(&id, task_id);
            }
        }
        _ => {
            let shown = fuzzing::shown_reason(rest);
            assert!(shown.len() <= 200 || shown.starts_with('('), "{shown}");
            let _ = fuzzing::utf8(rest, "script");
        }
    }
});
