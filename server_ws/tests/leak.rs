//! DESIGN §4: "-32603 only for genuine internal faults, with no
//! internals leaked": a storage fault under a script must not hand the
//! client the server's file system paths.

mod common;

use common::{Fixture, call, play, start_worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_fault_under_a_script_does_not_tell_the_client_the_servers_paths() {
    let fx = Fixture::start_with(|_| {}, server_ws::ServerTiming::default(), false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let _worker = start_worker(&fx, dir.path());
    let mut ws = fx.connect().await;
    // A value over 64 KiB: never cached, so a read goes to the file.
    let big = "q".repeat(100_000);
    let reply = call(&mut ws, &play(1, &format!(r#"db::insert("{big}")"#))).await;
    assert_eq!(reply["result"]["output"], "1", "{reply}");
    // The disk flips a byte in the middle of that value.
    let mut flipped = false;
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        let mut bytes = std::fs::read(&path).expect("read file");
        if let Some(at) = bytes
            .windows(1000)
            .position(|w| w.iter().all(|&b| b == b'q'))
        {
            bytes[at + 500] = b'r';
            std::fs::write(&path, &bytes).expect("write file");
            flipped = true;
        }
    }
    assert!(flipped, "the value is on disk");
    let reply = call(&mut ws, &play(2, "db::get(1).len()")).await;
    assert!(
        reply.get("error").is_some(),
        "a corrupt record fails the read: {reply}"
    );
    let text = reply.to_string();
    let dir_text = dir.path().display().to_string();
    assert!(
        !text.contains(&dir_text),
        "the reply names the server's data directory {dir_text}: {reply}"
    );
}
