//! One pipelined connection to Redis.
//!
//! Callers hand in batches: the raw bytes of one or more commands and a
//! oneshot for the replies. A writer task writes batches in arrival order;
//! a reader task measures replies with [`resp::frame_len`] and hands each
//! batch its replies as one contiguous `Bytes` (no re-encoding). Replies are
//! matched to batches purely by position, so a caller that stopped waiting
//! (deadline passed) just drops its oneshot: the late reply is discarded
//! when it arrives and the connection stays usable.
//!
//! Every batch gets exactly one fate: a full [`BatchReply`]; a partial one
//! with `lost = true` (the connection died after the batch was handed to
//! the writer: the rest may have executed); or its oneshot is dropped
//! unanswered, meaning the batch was never written (safe to resend).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::frame::encode_command;
use resp::{frame_len, parse_frame, Frame, Limits};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

/// Credentials sent with `AUTH` (or `HELLO … AUTH`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// ACL user; `None` means Redis's `default` user.
    pub user: Option<String>,
    /// Password.
    pub password: String,
}

/// What a new connection says before it carries commands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Handshake {
    /// Authenticate as these, if given.
    pub auth: Option<Credentials>,
    /// `SELECT` this database when not 0.
    pub db: u32,
    /// 3 sends `HELLO 3`; 2 stays on RESP2.
    pub proto: u8,
    /// `CLIENT SETNAME`, so operators can tell Redoubt's connections apart.
    pub name: Option<String>,
}

impl Handshake {
    /// The handshake commands, pipelined, in order.
    pub fn commands(&self) -> Vec<Vec<Vec<u8>>> {
        let mut cmds = Vec::new();
        if self.proto == 3 {
            let mut hello = vec![b"HELLO".to_vec(), b"3".to_vec()];
            if let Some(a) = &self.auth {
                hello.push(b"AUTH".to_vec());
                hello.push(
                    a.user
                        .clone()
                        .unwrap_or_else(|| "default".into())
                        .into_bytes(),
                );
                hello.push(a.password.clone().into_bytes());
            }
            cmds.push(hello);
        } else if let Some(a) = &self.auth {
            let mut auth = vec![b"AUTH".to_vec()];
            if let Some(u) = &a.user {
                auth.push(u.clone().into_bytes());
            }
            auth.push(a.password.clone().into_bytes());
            cmds.push(auth);
        }
        if self.db != 0 {
            cmds.push(vec![b"SELECT".to_vec(), self.db.to_string().into_bytes()]);
        }
        if let Some(n) = &self.name {
            cmds.push(vec![
                b"CLIENT".to_vec(),
                b"SETNAME".to_vec(),
                n.clone().into_bytes(),
            ]);
        }
        cmds
    }
}

/// Why a connection could not be opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// TCP connect failed (refused, unreachable, DNS).
    #[error("cannot connect to redis at {addr}: {why}")]
    Io {
        /// Address tried.
        addr: String,
        /// The OS error.
        why: String,
    },
    /// Connect or handshake took too long.
    #[error("redis at {0} did not answer the handshake in time")]
    Timeout(String),
    /// Redis answered the handshake with an error (`WRONGPASS`, `NOAUTH`,
    /// `ERR DB index is out of range`, …). The text is Redis's.
    #[error("{0}")]
    Rejected(String),
}

/// The replies to one batch.
#[derive(Debug)]
pub struct BatchReply {
    /// `received` complete replies, back to back, as Redis sent them.
    pub data: Bytes,
    /// How many of the batch's replies `data` holds.
    pub received: usize,
    /// The connection died before every reply came: the rest may or may
    /// not have executed.
    pub lost: bool,
}

struct Batch {
    raw: Bytes,
    count: usize,
    tx: oneshot::Sender<BatchReply>,
}

struct Pending {
    count: usize,
    tx: oneshot::Sender<BatchReply>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A handle to one pipelined upstream connection. Cheap to clone.
#[derive(Clone)]
pub struct Conn {
    inner: Arc<Inner>,
}

struct Inner {
    id: u64,
    tx: mpsc::UnboundedSender<Batch>,
    alive: AtomicBool,
    dead_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Conn#{}({})",
            self.inner.id,
            if self.is_alive() { "alive" } else { "dead" }
        )
    }
}

impl Conn {
    /// Connects to `addr`, runs the handshake and starts the reader and
    /// writer tasks. The whole thing is bounded by `timeout`.
    pub async fn connect(
        addr: &str,
        hs: &Handshake,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let (stream, _) = tokio::time::timeout(timeout, open(addr, hs))
            .await
            .map_err(|_| ConnectError::Timeout(addr.to_string()))??;
        let (rd, wr) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let (dead_tx, dead_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            alive: AtomicBool::new(true),
            dead_tx,
        });
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(writer(
            wr,
            rx,
            queue.clone(),
            inner.clone(),
            dead_rx.clone(),
        ));
        tokio::spawn(reader(rd, queue, inner.clone(), dead_rx));
        Ok(Conn { inner })
    }

    /// A process-unique id, for logs and for "same connection?" checks.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// False once the connection failed or was closed.
    pub fn is_alive(&self) -> bool {
        self.inner.alive.load(Ordering::Acquire)
    }

    /// Queues `count` commands encoded back to back in `raw`. The receiver
    /// gets the replies; if it is dropped unanswered the batch was never
    /// written.
    pub fn send(&self, raw: Bytes, count: usize) -> oneshot::Receiver<BatchReply> {
        let (tx, rx) = oneshot::channel();
        if self.is_alive() {
            // A send error means the writer is gone: dropping `tx` tells the
            // caller "not sent", which is the truth.
            let _ = self.inner.tx.send(Batch { raw, count, tx });
        }
        rx
    }

    /// Sends one command and waits for its reply, decoded. For probes and
    /// control traffic, not the data path.
    pub async fn call<B: AsRef<[u8]>>(
        &self,
        args: &[B],
        timeout: Duration,
    ) -> Result<Frame, CallError> {
        let mut raw = BytesMut::new();
        encode_command(&mut raw, args);
        let rx = self.send(raw.freeze(), 1);
        let reply = tokio::time::timeout(timeout, rx)
            .await
            .map_err(|_| CallError::Timeout)?
            .map_err(|_| CallError::NotSent)?;
        if reply.received == 0 {
            return Err(CallError::Lost);
        }
        match parse_frame(&reply.data, &Limits::upstream()) {
            Ok(Some((f, _))) => Ok(f),
            _ => Err(CallError::Lost),
        }
    }

    /// Closes the connection; queued and in-flight batches fail as if it
    /// had died.
    pub fn close(&self) {
        self.inner.die();
    }
}

/// Why [`Conn::call`] got no reply.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// No reply within the timeout.
    #[error("no reply in time")]
    Timeout,
    /// The connection was dead before the command was written.
    #[error("connection closed before sending")]
    NotSent,
    /// The connection died after sending.
    #[error("connection lost")]
    Lost,
}

impl Inner {
    fn die(&self) {
        self.alive.store(false, Ordering::Release);
        let _ = self.dead_tx.send(true);
    }
}

/// Opens a TCP connection and runs the handshake, returning the raw
/// stream: for tunnels (subscribers, `MONITOR`) that relay bytes as they
/// come instead of matching replies to requests.
pub async fn open_stream(
    addr: &str,
    hs: &Handshake,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let (s, _) = tokio::time::timeout(timeout, open(addr, hs))
        .await
        .map_err(|_| ConnectError::Timeout(addr.to_string()))??;
    Ok(s)
}

async fn open(addr: &str, hs: &Handshake) -> Result<(TcpStream, ()), ConnectError> {
    let io = |e: std::io::Error| ConnectError::Io {
        addr: addr.to_string(),
        why: e.to_string(),
    };
    let mut s = TcpStream::connect(addr).await.map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let cmds = hs.commands();
    if cmds.is_empty() {
        return Ok((s, ()));
    }
    let mut out = BytesMut::new();
    for c in &cmds {
        encode_command(&mut out, c);
    }
    s.write_all(&out).await.map_err(io)?;
    let mut buf = BytesMut::with_capacity(1024);
    let mut first_error = None;
    for _ in 0..cmds.len() {
        let frame = loop {
            if let Some((f, n)) = parse_frame(&buf, &Limits::upstream())
                .map_err(|e| ConnectError::Rejected(e.to_string()))?
            {
                let _ = buf.split_to(n);
                break f;
            }
            if s.read_buf(&mut buf).await.map_err(io)? == 0 {
                return Err(ConnectError::Io {
                    addr: addr.to_string(),
                    why: "connection closed during handshake".into(),
                });
            }
        };
        if let Some(t) = frame.error_text() {
            first_error.get_or_insert_with(|| String::from_utf8_lossy(t).into_owned());
        }
    }
    match first_error {
        Some(e) => Err(ConnectError::Rejected(e)),
        None => Ok((s, ())),
    }
}

/// Fails every pending batch: the front one keeps what it received.
fn fail_all(queue: &Mutex<VecDeque<Pending>>, front_data: Bytes, front_received: usize) {
    let drained: Vec<Pending> = match queue.lock() {
        Ok(mut q) => q.drain(..).collect(),
        Err(_) => return,
    };
    let mut first = true;
    for p in drained {
        let (data, received) = if first {
            (front_data.clone(), front_received)
        } else {
            (Bytes::new(), 0)
        };
        first = false;
        let _ = p.tx.send(BatchReply {
            data,
            received,
            lost: true,
        });
    }
}

async fn writer(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    queue: Arc<Mutex<VecDeque<Pending>>>,
    inner: Arc<Inner>,
    mut dead: watch::Receiver<bool>,
) {
    let mut out = BytesMut::new();
    loop {
        let first = tokio::select! {
            b = rx.recv() => b,
            _ = dead.wait_for(|d| *d) => None,
        };
        let Some(first) = first else { break };
        // Let the other sessions that are ready in this scheduler tick queue
        // their commands first: one write then carries many, which saves a
        // syscall per command here and lets Redis read them in one go.
        tokio::task::yield_now().await;
        // Take everything already queued, so a burst from many sessions
        // goes out in one write (and Redis reads it in one go).
        let mut raws = Vec::with_capacity(8);
        {
            let Ok(mut q) = queue.lock() else { break };
            q.push_back(Pending {
                count: first.count,
                tx: first.tx,
            });
            raws.push(first.raw);
            while raws.len() < 512 {
                match rx.try_recv() {
                    Ok(b) => {
                        q.push_back(Pending {
                            count: b.count,
                            tx: b.tx,
                        });
                        raws.push(b.raw);
                    }
                    Err(_) => break,
                }
            }
        }
        let res = if raws.len() == 1 {
            wr.write_all(&raws[0]).await
        } else {
            out.clear();
            for r in &raws {
                out.extend_from_slice(r);
            }
            wr.write_all(&out).await
        };
        if res.is_err() {
            break;
        }
    }
    inner.die();
    // Batches still in the channel were never written: drop them so their
    // callers see "not sent".
    rx.close();
    while rx.try_recv().is_ok() {}
    let _ = wr.shutdown().await;
}

async fn reader(
    mut rd: OwnedReadHalf,
    queue: Arc<Mutex<VecDeque<Pending>>>,
    inner: Arc<Inner>,
    mut dead: watch::Receiver<bool>,
) {
    let limits = Limits::upstream();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // Progress on the front batch: bytes measured and replies complete.
    let mut scanned = 0usize;
    let mut done = 0usize;
    'outer: loop {
        // Hand out every batch whose replies are complete.
        loop {
            let front_count = match queue.lock() {
                Ok(q) => q.front().map(|p| p.count),
                Err(_) => break 'outer,
            };
            let Some(count) = front_count else {
                if !buf.is_empty() && scanned == 0 {
                    // Bytes nobody asked for: push frames we did not
                    // subscribe to, or a desynchronised stream. Drop pushes,
                    // give up on anything else.
                    match frame_len(&buf, &limits) {
                        Ok(Some(n)) if buf[0] == b'>' => {
                            let _ = buf.split_to(n);
                            continue;
                        }
                        Ok(None) if buf[0] == b'>' => {}
                        _ => break 'outer,
                    }
                }
                break;
            };
            while done < count {
                match frame_len(&buf[scanned..], &limits) {
                    Ok(Some(n)) => {
                        if buf[scanned] == b'>' {
                            // Out-of-band push between replies: skip it.
                            let tail = buf.split_off(scanned + n);
                            buf.truncate(scanned);
                            buf.unsplit(tail);
                            continue;
                        }
                        scanned += n;
                        done += 1;
                    }
                    Ok(None) => break,
                    Err(_) => break 'outer,
                }
            }
            if done < count {
                break;
            }
            let data = buf.split_to(scanned).freeze();
            let p = match queue.lock() {
                Ok(mut q) => q.pop_front(),
                Err(_) => break 'outer,
            };
            if let Some(p) = p {
                let _ = p.tx.send(BatchReply {
                    data,
                    received: done,
                    lost: false,
                });
            }
            scanned = 0;
            done = 0;
        }
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = dead.wait_for(|d| *d) => break 'outer,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    inner.die();
    let partial = buf.split_to(scanned).freeze();
    fail_all(&queue, partial, done);
}
