//! Redis over TLS for the end-to-end tests: certificates (rcgen), a
//! persistent Redis that also serves TLS, and commands on its plain port.

use std::path::{Path, PathBuf};

use super::{Sandbox, port};

/// When a certificate is valid.
#[derive(Clone, Copy)]
pub enum Validity {
    Now,
    Expired,
    NotYet,
}

/// A self-signed certificate for `names`, valid `when`, written to
/// `<prefix>cert.pem` and `<prefix>key.pem` in the sandbox.
pub fn certificate(
    sandbox: &Sandbox,
    prefix: &str,
    names: &[&str],
    when: Validity,
) -> (PathBuf, PathBuf) {
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    match when {
        Validity::Now => {}
        Validity::Expired => {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        Validity::NotYet => {
            params.not_before = rcgen::date_time_ymd(2090, 1, 1);
            params.not_after = rcgen::date_time_ymd(2091, 1, 1);
        }
    }
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("self-signed");
    (
        sandbox.write(&format!("{prefix}cert.pem"), &cert.pem()),
        sandbox.write(&format!("{prefix}key.pem"), &key.serialize_pem()),
    )
}

pub const LOCAL: &[&str] = &["localhost", "127.0.0.1"];

pub fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Sends one inline command to the plain port of the test Redis; its reply line.
pub fn command(port: u16, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .expect("send");
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).expect("reply");
    line
}

/// A Redis with the append-only file on (as `start_persistent`) that also
/// serves TLS with `cert` and `key` (read again at each restart), and the
/// port it serves TLS on.
pub fn persistent_tls_redis(cert: &Path, key: &Path) -> (testkit::RedisServer, u16) {
    let tls_port = port().to_string();
    let redis = testkit::RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        path(cert),
        "--tls-key-file",
        path(key),
        "--tls-ca-cert-file",
        path(cert),
        "--tls-auth-clients",
        "no",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
    ]);
    (redis, tls_port.parse().expect("port"))
}

/// Sends inline `commands` on one connection to the plain port of the
/// test Redis, authenticated with `password`; each must answer `+OK` or a
/// count.
pub fn as_admin(port: u16, password: &str, commands: &[&str]) {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    for command in
        std::iter::once(format!("AUTH {password}").as_str()).chain(commands.iter().copied())
    {
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("send");
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply");
        assert!(
            line.starts_with('+') || line.starts_with(':'),
            "{command}: {line}"
        );
    }
}
