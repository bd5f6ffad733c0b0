//! `redoubt status`: one GET of `/status` from a running Redoubt.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// Fetches and prints `/status`; exit 3 when nothing answers.
pub fn run(admin: &str, token: Option<&str>) -> ExitCode {
    match fetch(admin, "/status", token) {
        Ok((200, body)) => {
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body)),
                Err(_) => println!("{body}"),
            }
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!(
                "redoubt status: admin endpoint {admin} answered HTTP {code}: {}",
                body.trim()
            );
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("redoubt status: no answer from the admin endpoint at {admin} ({e}); is `redoubt serve` running with admin.listen = \"{admin}\"?");
            ExitCode::from(3)
        }
    }
}

/// A plain HTTP/1.1 GET; the admin endpoint is ours and local, so a
/// client library would be more than this needs.
pub fn fetch(addr: &str, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let sock = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
    })?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}
