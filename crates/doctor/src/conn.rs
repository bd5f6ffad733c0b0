//! A small async Redis connection for the doctor: one stream (plain or
//! TLS, opened by `tls::connect` as every connection to Redis is), RESP
//! framing from the `resp` crate, a timeout on every step and a deadline
//! for the whole diagnosis. Deliberately not the proxy's upstream pool:
//! the doctor must work when everything else is broken, and must classify
//! each way a connection can fail.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::BytesMut;
use resp::{Frame, Limits};
use thiserror::Error;
use tls::{ConnectFailure, Failure, Stream, TlsClient};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

/// Bytes the doctor accepts in one reply. Generous for INFO / CLIENT LIST
/// on a busy server, but bounded so a misbehaving peer cannot make the
/// doctor allocate without limit.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// Why a step of talking to Redis failed.
#[derive(Debug, Error)]
pub(crate) enum ConnError {
    /// The host name did not resolve.
    #[error("name resolution failed: {0}")]
    Dns(String),
    /// TCP connect failed (refused, unreachable, ...).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// No answer within the step's time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The peer sent bytes that are not RESP; `first` are the first bytes.
    #[error("reply is not RESP")]
    NotResp {
        /// First bytes received, for classification (TLS, HTTP, ...).
        first: Vec<u8>,
    },
    /// The peer closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// Read or write failed after connecting.
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// The TLS handshake failed, or TLS broke after it (a client
    /// certificate refused once the TLS 1.3 handshake is over).
    #[error("{0}")]
    Tls(Failure),
}

/// A read or write error: a TLS failure inside it is named as one.
fn io_error(e: io::Error) -> ConnError {
    if Failure::is_tls_error(&e) {
        ConnError::Tls(Failure::from_io(&e))
    } else {
        ConnError::Io(e)
    }
}

/// An open connection with a per-command timeout and an overall deadline.
pub(crate) struct Conn {
    stream: Stream,
    buf: BytesMut,
    command_timeout: Duration,
    deadline: Instant,
    /// An error reply read while a write failed, handed to the next read.
    pending_error: Option<Frame>,
}

impl Conn {
    /// Resolves and connects (with `tls`, the TLS handshake too), each
    /// bounded by `connect_timeout` and the deadline.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        tls: Option<&TlsClient>,
        connect_timeout: Duration,
        command_timeout: Duration,
        deadline: Instant,
    ) -> Result<Conn, ConnError> {
        let step = step_deadline(connect_timeout, deadline);
        let addrs = match tokio::time::timeout_at(step, resolve(host, port)).await {
            Err(_) => {
                return Err(ConnError::Dns(format!(
                    "no answer from the resolver within {connect_timeout:?}"
                )))
            }
            Ok(Err(e)) => return Err(ConnError::Dns(e.to_string())),
            Ok(Ok(a)) => a,
        };
        let mut last = ConnError::Dns("the name resolved to no address".into());
        for addr in addrs {
            match tokio::time::timeout_at(step, tls::connect(addr, host, tls)).await {
                Err(_) => return Err(ConnError::Timeout(connect_timeout)),
                Ok(Err(ConnectFailure::Tcp(e))) => last = ConnError::Connect(e),
                // The server answered: another address would not do better.
                Ok(Err(ConnectFailure::Tls(f))) => return Err(ConnError::Tls(f)),
                Ok(Ok(stream)) => {
                    return Ok(Conn {
                        stream,
                        buf: BytesMut::with_capacity(16 * 1024),
                        command_timeout,
                        deadline,
                        pending_error: None,
                    });
                }
            }
        }
        Err(last)
    }

    /// Sends one command and waits for its reply.
    pub(crate) async fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Frame, ConnError> {
        let mut out = BytesMut::new();
        resp::frame::encode_command(&mut out, args);
        self.send(&out).await?;
        self.read_frame().await
    }

    /// Sends several commands in one write and reads their replies in order
    /// (one round trip for a SCAN page's TYPE or TTL lookups).
    pub(crate) async fn pipeline(
        &mut self,
        cmds: &[Vec<Vec<u8>>],
    ) -> Result<Vec<Frame>, ConnError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = BytesMut::new();
        for c in cmds {
            resp::frame::encode_command(&mut out, c);
        }
        self.send(&out).await?;
        let mut replies = Vec::with_capacity(cmds.len());
        for _ in cmds {
            replies.push(self.read_frame().await?);
        }
        Ok(replies)
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        let step = step_deadline(self.command_timeout, self.deadline);
        match tokio::time::timeout_at(step, tls::send(&mut self.stream, bytes)).await {
            Err(_) => Err(ConnError::Timeout(self.command_timeout)),
            Ok(Ok(())) => Ok(()),
            // A server that refuses us at accept time (DENIED, max clients)
            // writes its reason and closes; our write can then fail with a
            // reset. The reason may still be readable, and it is the
            // useful part.
            Ok(Err(e)) => match self.read_frame().await {
                Ok(frame) if frame.is_error() => {
                    self.buf.clear();
                    self.pending_error = Some(frame);
                    Ok(())
                }
                _ => Err(io_error(e)),
            },
        }
    }

    async fn read_frame(&mut self) -> Result<Frame, ConnError> {
        if let Some(f) = self.pending_error.take() {
            return Ok(f);
        }
        let step = step_deadline(self.command_timeout, self.deadline);
        let limits = Limits::upstream();
        loop {
            match resp::parse_frame(&self.buf, &limits) {
                Ok(Some((frame, used))) => {
                    let _ = self.buf.split_to(used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(_) => {
                    return Err(ConnError::NotResp {
                        first: self.buf[..self.buf.len().min(16)].to_vec(),
                    })
                }
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                return Err(ConnError::NotResp {
                    first: self.buf[..16].to_vec(),
                });
            }
            match tokio::time::timeout_at(step, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Err(ConnError::Timeout(self.command_timeout)),
                Ok(Ok(0)) => {
                    return if self.buf.is_empty() {
                        Err(ConnError::Closed)
                    } else {
                        Err(ConnError::NotResp {
                            first: self.buf[..self.buf.len().min(16)].to_vec(),
                        })
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(io_error(e)),
            }
        }
    }
}

/// Whether a TLS server answers at `host:port`: a handshake that trusts
/// any certificate (only to tell what the port speaks; nothing is sent
/// over it).
pub(crate) async fn speaks_tls(host: &str, port: u16, within: Duration) -> bool {
    let Ok(any) = TlsClient::new(&tls::ClientOptions {
        insecure_skip_verify: true,
        ..tls::ClientOptions::default()
    }) else {
        return false;
    };
    let Ok(Ok(addrs)) = tokio::time::timeout(within, resolve(host, port)).await else {
        return false;
    };
    let Some(addr) = addrs.first() else {
        return false;
    };
    matches!(
        tokio::time::timeout(within, tls::connect(*addr, host, Some(&any))).await,
        Ok(Ok(_))
            | Ok(Err(ConnectFailure::Tls(
                Failure::ClientCertRequired | Failure::ClientCertRejected
            )))
    )
}

/// Whether plain RESP answers at `host:port`: `PING` over TCP, any RESP
/// reply (`+PONG`, `-NOAUTH …`) counts.
pub(crate) async fn speaks_plain_resp(host: &str, port: u16, within: Duration) -> bool {
    let probe = async {
        let addrs = resolve(host, port).await.ok()?;
        let mut s = tls::connect(*addrs.first()?, host, None).await.ok()?;
        tls::send(&mut s, b"*1\r\n$4\r\nPING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        Some(n > 0 && matches!(buf[0], b'+' | b'-') && buf[..n].ends_with(b"\r\n"))
    };
    matches!(tokio::time::timeout(within, probe).await, Ok(Some(true)))
}

/// Resolves `host` on a detached thread. tokio's `lookup_host` runs on
/// the blocking pool, and a runtime waits for its blocking pool when it is
/// dropped: a resolver that hangs would then hold up the process after the
/// diagnosis already gave up on it. A detached thread does not.
async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = host.to_string();
    std::thread::Builder::new()
        .name("doctor-resolve".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect),
            );
        })?;
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("resolver thread ended without an answer")))
}

/// The earlier of "now + step" and the overall deadline.
fn step_deadline(step: Duration, deadline: Instant) -> Instant {
    (Instant::now() + step).min(deadline)
}

/// Text of a reply, for simple, bulk and verbatim strings (verbatim
/// strings lose their `txt:` prefix) and error replies.
pub(crate) fn text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::Verbatim(b) => {
            let s = String::from_utf8_lossy(b);
            Some(s.get(4..).unwrap_or("").to_string())
        }
        Frame::Error(b) | Frame::BulkError(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => other
            .as_bytes()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}
