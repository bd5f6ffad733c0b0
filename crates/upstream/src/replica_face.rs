//! What a Redis Sentinel finds when it follows Redoubt's replica link.
//!
//! Redis lists every replica in `INFO replication` with the port it
//! announced (`REPLCONF listening-port`), and a Sentinel monitoring that
//! Redis connects there to watch the replica, and may promote it in a
//! failover or send it `REPLICAOF`. Redoubt's own port would forward all of
//! that to Redis itself. So the link announces this small listener instead:
//! it answers as a replica that must never be promoted (`slave_priority:0`)
//! and that Sentinel keeps out of `SENTINEL replicas`
//! (`replica_announced:0`), accepts (and ignores) Sentinel's `REPLICAOF`,
//! and holds no data.

use std::io;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use resp::{parse_frame, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::endpoint::Endpoint;

/// Binds the face on `host` (any free port) and serves it on the current
/// runtime; returns the port to announce. `primary` is where the link goes.
pub fn spawn(host: &str, primary: Endpoint) -> io::Result<u16> {
    let std_listener = std::net::TcpListener::bind((host, 0))?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let port = listener.local_addr()?.port();
    let face = Arc::new(Face {
        primary,
        run_id: run_id(),
        told: Mutex::new(None),
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((s, _)) => {
                    tokio::spawn(face.clone().serve(s));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "replica face: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(port)
}

struct Face {
    primary: Endpoint,
    run_id: String,
    /// The last `REPLICAOF host port` a Sentinel sent, reported back until
    /// the link follows it, so Sentinel sees its reconfiguration done.
    told: Mutex<Option<(String, String)>>,
}

impl Face {
    async fn serve(self: Arc<Self>, mut s: TcpStream) {
        let mut buf = BytesMut::with_capacity(1024);
        let mut queued: Option<Vec<Frame>> = None;
        let limits = Limits::default();
        loop {
            let mut out = BytesMut::new();
            loop {
                let (frame, n) = match parse_frame(&buf, &limits) {
                    Ok(Some(x)) => x,
                    Ok(None) => break,
                    Err(_) => return,
                };
                let _ = buf.split_to(n);
                let args = match frame {
                    Frame::Array(items) => items
                        .iter()
                        .map(|f| String::from_utf8_lossy(f.as_bytes().unwrap_or(b"")).into_owned())
                        .collect::<Vec<_>>(),
                    _ => return,
                };
                let name = args
                    .first()
                    .map(|a| a.to_ascii_uppercase())
                    .unwrap_or_default();
                let reply = match (name.as_str(), queued.as_mut()) {
                    ("MULTI", _) => {
                        queued = Some(Vec::new());
                        Frame::simple("OK")
                    }
                    ("EXEC", Some(_)) => Frame::Array(queued.take().unwrap_or_default()),
                    ("DISCARD", Some(_)) => {
                        queued = None;
                        Frame::simple("OK")
                    }
                    (_, Some(q)) => {
                        q.push(self.answer(&name, &args));
                        Frame::simple("QUEUED")
                    }
                    ("SUBSCRIBE", None) => {
                        for (i, ch) in args.iter().skip(1).enumerate() {
                            Frame::Array(vec![
                                Frame::bulk("subscribe"),
                                Frame::bulk(ch),
                                Frame::Integer(i as i64 + 1),
                            ])
                            .encode(&mut out);
                        }
                        continue;
                    }
                    _ => self.answer(&name, &args),
                };
                reply.encode(&mut out);
            }
            if !out.is_empty() && s.write_all(&out).await.is_err() {
                return;
            }
            match s.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if buf.len() > 1 << 20 {
                return;
            }
        }
    }

    fn answer(&self, name: &str, args: &[String]) -> Frame {
        match name {
            "PING" => Frame::simple("PONG"),
            "AUTH" | "CLIENT" | "CONFIG" | "SELECT" => Frame::simple("OK"),
            "PUBLISH" => Frame::Integer(0),
            "INFO" => Frame::bulk(self.info()),
            "ROLE" => {
                let (host, port) = self.master();
                Frame::Array(vec![
                    Frame::bulk("slave"),
                    Frame::bulk(host),
                    Frame::Integer(port.parse().unwrap_or(0)),
                    Frame::bulk("connected"),
                    Frame::Integer(0),
                ])
            }
            "SLAVEOF" | "REPLICAOF" => {
                if let (Some(h), Some(p)) = (args.get(1), args.get(2)) {
                    if !h.eq_ignore_ascii_case("no") {
                        *self.told.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((h.clone(), p.clone()));
                    }
                }
                Frame::simple("OK")
            }
            _ => Frame::error(format!(
                "ERR this port is Redoubt's replica link as Redis's Sentinel sees it: it holds no data and runs no '{}'; clients use Redoubt's listen port",
                name.to_ascii_lowercase()
            )),
        }
    }

    /// The primary the link follows, or the one a Sentinel last told us.
    fn master(&self) -> (String, String) {
        let now = self.primary.addr();
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((h, p)) = told.as_ref() {
            if crate::sentinel::join_host_port(h, p) == now {
                *told = None;
            } else {
                return (h.clone(), p.clone());
            }
        }
        match now.rsplit_once(':') {
            Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.to_string()),
            None => (now, "0".into()),
        }
    }

    fn info(&self) -> String {
        let (host, port) = self.master();
        format!(
            "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nrun_id:{}\r\n\r\n# Replication\r\nrole:slave\r\nmaster_host:{host}\r\nmaster_port:{port}\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:0\r\nmaster_sync_in_progress:0\r\nslave_read_repl_offset:0\r\nslave_repl_offset:0\r\nslave_priority:0\r\nslave_read_only:1\r\nreplica_announced:0\r\nconnected_slaves:0\r\n",
            self.run_id
        )
    }
}

/// 40 hex characters, as Redis's `run_id` (Sentinel checks the length).
fn run_id() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..40)
        .map(|_| char::from_digit(r.gen_range(0..16), 16).unwrap_or('0'))
        .collect()
}
