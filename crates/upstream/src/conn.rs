//! One pipelined connection to Redis.
//!
//! Callers hand in batches: the raw bytes of one or more commands and a
//! channel for the replies. A writer task writes batches in arrival order;
//! a reader task measures replies with [`resp::ReplyScanner`] and hands each
//! batch its replies as contiguous `Bytes` (no re-encoding): all at once,
//! or for a client's batch ([`Conn::send_bounded`]) in pieces as they
//! complete, counted against the client's [`OutputBudget`]. Replies are
//! matched to batches purely by position, so a caller that stopped waiting
//! (deadline passed) just drops its receiver: the late replies are dropped
//! as they arrive, never gathered, and the connection stays usable.
//!
//! Every batch gets exactly one fate: a full [`BatchReply`]; a partial one
//! with `lost = true` (the connection died after the batch was handed to
//! the writer: the rest may have executed); or its channel is dropped
//! unanswered, meaning the batch was never written (safe to resend).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::frame::encode_command;
use resp::{parse_frame, Frame, Limits, ReplyScanner};
use thiserror::Error;
use tls::{ReadHalf, Stream, WriteHalf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::endpoint::Endpoint;
use crate::woken::until_set;

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
    /// Nothing listens at the address: Redis is not running there (a
    /// sure sign of an outage, unlike a timeout).
    #[error("cannot connect to redis at {0}: connection refused")]
    Refused(String),
    /// The connection was reset while it opened: Redis went away in the
    /// middle (a process killed resets what it had accepted).
    #[error("cannot connect to redis at {0}: connection reset while connecting")]
    Reset(String),
    /// Connect or handshake took too long.
    #[error("redis at {0} did not answer the handshake in time")]
    Timeout(String),
    /// The TLS handshake failed, or TLS broke during Redis's handshake
    /// (a client certificate refused after the TLS 1.3 handshake).
    #[error("cannot connect to redis at {addr}: {failure}")]
    Tls {
        /// Address tried.
        addr: String,
        /// Why, in words.
        failure: tls::Failure,
    },
    /// Redis answered the handshake with an error (`WRONGPASS`, `NOAUTH`,
    /// `ERR DB index is out of range`, …). The text is Redis's.
    #[error("{0}")]
    Rejected(String),
}

impl ConnectError {
    /// Redis is not there: nothing listens, or it reset the connection as
    /// it opened. Nothing was sent, and an outage is under way.
    pub fn is_gone(&self) -> bool {
        matches!(self, ConnectError::Refused(_) | ConnectError::Reset(_))
    }

    /// An I/O error while connecting to `addr` or during the handshake: a
    /// TLS error inside it is named as such, a refusal as a refusal.
    pub fn from_io(addr: &str, e: std::io::Error) -> ConnectError {
        if tls::Failure::is_tls_error(&e) {
            return ConnectError::Tls {
                addr: addr.to_string(),
                failure: tls::Failure::from_io(&e),
            };
        }
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            return ConnectError::Refused(addr.to_string());
        }
        if e.kind() == std::io::ErrorKind::ConnectionReset {
            return ConnectError::Reset(addr.to_string());
        }
        ConnectError::Io {
            addr: addr.to_string(),
            why: e.to_string(),
        }
    }
}

/// The replies to one batch, or (for a streamed batch) to its next few
/// commands.
#[derive(Debug)]
pub struct BatchReply {
    /// `received` complete replies, back to back, as Redis sent them.
    pub data: Bytes,
    /// How many of the batch's replies `data` holds.
    pub received: usize,
    /// The connection died before every reply came: the rest may or may
    /// not have executed.
    pub lost: bool,
    /// Only for a streamed batch: these are the replies to the batch's next
    /// `received` commands, and more will follow for the rest.
    pub more: bool,
    /// Holds `data`'s bytes against the session's [`OutputBudget`] until
    /// this reply is dropped.
    _charge: Option<Charge>,
}

impl BatchReply {
    pub(crate) fn new(data: Bytes, received: usize, lost: bool) -> Self {
        BatchReply {
            data,
            received,
            lost,
            more: false,
            _charge: None,
        }
    }
}

/// One client's allowance for reply bytes that Redis has sent but the
/// client has not yet been given: replies read from Redis and not yet
/// taken, plus the part of a reply still arriving. Past `max` the client is
/// over its limit: the reader drops its replies as they come instead of
/// holding them, and the session closes the client.
#[derive(Debug)]
pub struct OutputBudget {
    used: AtomicU64,
    max: u64,
    over: AtomicBool,
}

impl OutputBudget {
    /// An allowance of `max` bytes.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(OutputBudget {
            used: AtomicU64::new(0),
            max,
            over: AtomicBool::new(false),
        })
    }

    /// True once the client went over its allowance (it stays over).
    pub fn is_over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Bytes held now (taken replies not counted).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Whether `extra` more bytes fit; marks the budget over when not.
    fn admits(&self, extra: u64) -> bool {
        if self.is_over() {
            return false;
        }
        if self.used().saturating_add(extra) > self.max {
            self.over.store(true, Ordering::Release);
            return false;
        }
        true
    }
}

/// Bytes counted against a budget while a reply is held.
#[derive(Debug)]
struct Charge {
    budget: Arc<OutputBudget>,
    bytes: u64,
}

impl Charge {
    fn new(budget: &Arc<OutputBudget>, bytes: u64) -> Self {
        budget.used.fetch_add(bytes, Ordering::AcqRel);
        Charge {
            budget: budget.clone(),
            bytes,
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Where a batch's replies go.
pub(crate) enum Tx {
    /// All at once, when the last arrives.
    Whole(oneshot::Sender<BatchReply>),
    /// Counted against a budget; `stream` hands out replies in pieces as
    /// they complete instead of gathering the whole batch.
    Bounded {
        tx: PieceTx,
        budget: Arc<OutputBudget>,
        stream: bool,
    },
}

/// Where a bounded batch's replies go: one piece, or a stream of them. A
/// batch that does not stream (nearly all: one client read's commands)
/// takes a oneshot, not a channel whose first block is allocated per
/// batch.
pub(crate) enum PieceTx {
    Once(oneshot::Sender<BatchReply>),
    Stream(mpsc::UnboundedSender<BatchReply>),
}

impl PieceTx {
    fn is_closed(&self) -> bool {
        match self {
            PieceTx::Once(tx) => tx.is_closed(),
            PieceTx::Stream(tx) => tx.is_closed(),
        }
    }

    fn send(self, reply: BatchReply) {
        match self {
            PieceTx::Once(tx) => drop(tx.send(reply)),
            PieceTx::Stream(tx) => drop(tx.send(reply)),
        }
    }
}

impl Tx {
    /// Nobody will take the replies (the caller stopped waiting) or the
    /// client is over its budget: drop them as they arrive.
    pub(crate) fn unwanted(&self) -> bool {
        match self {
            Tx::Whole(tx) => tx.is_closed(),
            Tx::Bounded { tx, budget, .. } => tx.is_closed() || budget.is_over(),
        }
    }

    fn streams(&self) -> bool {
        matches!(self, Tx::Bounded { stream: true, .. })
    }

    /// Whether `extra` bytes still being gathered fit the budget.
    fn admits(&self, extra: u64) -> bool {
        match self {
            Tx::Whole(_) => true,
            Tx::Bounded { budget, .. } => budget.admits(extra),
        }
    }

    fn part(&self, data: Bytes, received: usize) {
        if let Tx::Bounded {
            tx: PieceTx::Stream(tx),
            budget,
            ..
        } = self
        {
            let charge = Charge::new(budget, data.len() as u64);
            let _ = tx.send(BatchReply {
                data,
                received,
                lost: false,
                more: true,
                _charge: Some(charge),
            });
        }
    }

    pub(crate) fn last(self, mut reply: BatchReply) {
        match self {
            Tx::Whole(tx) => {
                let _ = tx.send(reply);
            }
            Tx::Bounded { tx, budget, .. } => {
                reply._charge = Some(Charge::new(&budget, reply.data.len() as u64));
                tx.send(reply);
            }
        }
    }
}

/// The receiving end of [`Conn::send_bounded`]: zero or more pieces with
/// `more` set, then one without. Closed with nothing received means the
/// batch was never written.
#[derive(Debug)]
pub struct Replies(PieceRx);

#[derive(Debug)]
enum PieceRx {
    /// Taken once its one piece came (or it closed).
    Once(Option<oneshot::Receiver<BatchReply>>),
    Stream(mpsc::UnboundedReceiver<BatchReply>),
}

impl Replies {
    /// The next piece; `None` when the batch was never written (or every
    /// piece was taken).
    pub async fn recv(&mut self) -> Option<BatchReply> {
        match &mut self.0 {
            PieceRx::Stream(rx) => rx.recv().await,
            PieceRx::Once(slot) => {
                // Awaited by reference: dropped midway, the receiver stays.
                let got = slot.as_mut()?.await.ok();
                *slot = None;
                got
            }
        }
    }

    /// The next piece if one is there: `Ok(None)` when none is yet,
    /// `Err(())` when the batch was never written (or every piece was
    /// taken).
    #[allow(clippy::result_unit_err)]
    pub fn try_recv(&mut self) -> Result<Option<BatchReply>, ()> {
        match &mut self.0 {
            PieceRx::Stream(rx) => match rx.try_recv() {
                Ok(r) => Ok(Some(r)),
                Err(mpsc::error::TryRecvError::Empty) => Ok(None),
                Err(mpsc::error::TryRecvError::Disconnected) => Err(()),
            },
            PieceRx::Once(slot) => {
                let rx = slot.as_mut().ok_or(())?;
                match rx.try_recv() {
                    Ok(r) => {
                        *slot = None;
                        Ok(Some(r))
                    }
                    Err(oneshot::error::TryRecvError::Empty) => Ok(None),
                    Err(oneshot::error::TryRecvError::Closed) => {
                        *slot = None;
                        Err(())
                    }
                }
            }
        }
    }
}

pub(crate) struct Batch {
    pub(crate) raw: Bytes,
    pub(crate) count: usize,
    pub(crate) tx: Tx,
}

struct Pending {
    count: usize,
    tx: Tx,
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
    /// Connects to `to` (plain or TLS), runs the handshake and starts the
    /// reader and writer tasks. The whole thing is bounded by `timeout`.
    pub async fn connect(
        to: &Endpoint,
        hs: &Handshake,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        if let Some(cluster) = to.cluster_of() {
            return crate::cluster::router::connect(cluster, hs, timeout).await;
        }
        Conn::connect_node(to, hs, timeout).await
    }

    /// [`Conn::connect`] to one node, never a cluster's router (which
    /// opens its own connections with this).
    pub(crate) async fn connect_node(
        to: &Endpoint,
        hs: &Handshake,
        timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        let mut moved = to.moved();
        let stream = tokio::time::timeout(timeout, open(to, hs))
            .await
            .map_err(|_| ConnectError::Timeout(to.addr()))??;
        let (rd, wr) = stream.into_split();
        let (Conn { inner }, rx, dead_rx) = Conn::detached();
        let queue = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(writer(
            wr,
            rx,
            queue.clone(),
            inner.clone(),
            dead_rx.clone(),
        ));
        if moved.is_followed() {
            // A connection to a primary Sentinel replaced closes, so its
            // users reconnect to the new one.
            let weak = Arc::downgrade(&inner);
            let mut dead = dead_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = moved.wait() => {
                        if let Some(inner) = weak.upgrade() {
                            inner.die();
                        }
                    }
                    _ = dead.wait_for(|d| *d) => {}
                }
            });
        }
        tokio::spawn(reader(rd, queue, inner.clone(), dead_rx));
        Ok(Conn { inner })
    }

    /// A connection handle whose batches the caller takes from the
    /// returned channel: a socket's writer task, or a cluster router. It
    /// is dead once the receiver of the `bool` says so.
    pub(crate) fn detached() -> (Conn, mpsc::UnboundedReceiver<Batch>, watch::Receiver<bool>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (dead_tx, dead_rx) = watch::channel(false);
        let inner = Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            tx,
            alive: AtomicBool::new(true),
            dead_tx,
        });
        (Conn { inner }, rx, dead_rx)
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
        self.queue(Batch {
            raw,
            count,
            tx: Tx::Whole(tx),
        });
        rx
    }

    /// Like [`Conn::send`], for a client's commands: the replies count
    /// against the client's `budget` until they are dropped, and a batch
    /// whose replies would take the client over it is dropped as it
    /// arrives. With `stream`, replies are handed out in pieces as they
    /// complete (about every [`STREAM_PIECE`] bytes), so a long pipeline of
    /// large replies is never gathered whole.
    pub fn send_bounded(
        &self,
        raw: Bytes,
        count: usize,
        budget: &Arc<OutputBudget>,
        stream: bool,
    ) -> Replies {
        // One reply is never handed out in pieces (a piece ends at a
        // reply's end, before the last).
        let stream = stream && count > 1;
        let (tx, rx) = if stream {
            let (tx, rx) = mpsc::unbounded_channel();
            (PieceTx::Stream(tx), PieceRx::Stream(rx))
        } else {
            let (tx, rx) = oneshot::channel();
            (PieceTx::Once(tx), PieceRx::Once(Some(rx)))
        };
        self.queue(Batch {
            raw,
            count,
            tx: Tx::Bounded {
                tx,
                budget: budget.clone(),
                stream,
            },
        });
        Replies(rx)
    }

    fn queue(&self, batch: Batch) {
        if self.is_alive() {
            // A send error means the writer is gone: dropping the sender
            // tells the caller "not sent", which is the truth.
            let _ = self.inner.tx.send(batch);
        }
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

/// Opens a connection (plain or TLS) and runs the handshake, returning
/// the raw stream: for tunnels (subscribers, `MONITOR`) that relay bytes
/// as they come instead of matching replies to requests. Writers must
/// flush (see [`tls::Stream`]).
pub async fn open_stream(
    to: &Endpoint,
    hs: &Handshake,
    timeout: Duration,
) -> Result<Stream, ConnectError> {
    tokio::time::timeout(timeout, open(to, hs))
        .await
        .map_err(|_| ConnectError::Timeout(to.addr()))?
}

async fn open(to: &Endpoint, hs: &Handshake) -> Result<Stream, ConnectError> {
    let addr = to.addr();
    // A TLS port drops a plain client without a word (a reset or an EOF):
    // say what may be wrong.
    let hint = if to.is_tls() {
        ""
    } else {
        " (if that port requires TLS, use rediss://)"
    };
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof if !to.is_tls() => {
            ConnectError::Io {
                addr: addr.to_string(),
                why: format!("{e} during handshake{hint}"),
            }
        }
        _ => ConnectError::from_io(&addr, e),
    };
    let mut s = to.connect().await?;
    let cmds = hs.commands();
    if cmds.is_empty() {
        return Ok(s);
    }
    let mut out = BytesMut::new();
    for c in &cmds {
        encode_command(&mut out, c);
    }
    s.write_all(&out).await.map_err(io)?;
    s.flush().await.map_err(io)?;
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
                    why: format!("connection closed during handshake{hint}"),
                });
            }
        };
        if let Some(t) = frame.error_text() {
            first_error.get_or_insert_with(|| String::from_utf8_lossy(t).into_owned());
        }
    }
    match first_error {
        Some(e) => Err(ConnectError::Rejected(e)),
        None => Ok(s),
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
        p.tx.last(BatchReply::new(data, received, true));
    }
}

async fn writer(
    mut wr: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    queue: Arc<Mutex<VecDeque<Pending>>>,
    inner: Arc<Inner>,
    dead: watch::Receiver<bool>,
) {
    let mut out = BytesMut::new();
    // One wait for the connection's death for the task's life: made
    // afresh for every batch, it registered and unregistered itself each
    // time (locked instructions per command when unpipelined); polled only
    // once woken (see `Woken`).
    let mut died = until_set(dead);
    // The batches of one write; kept across writes rather than allocated
    // for each (one per command when clients do not pipeline).
    let mut raws: Vec<Bytes> = Vec::with_capacity(8);
    loop {
        let first = tokio::select! {
            b = rx.recv() => b,
            _ = &mut died => None,
        };
        let Some(first) = first else { break };
        // Let the other sessions that are ready in this scheduler tick queue
        // their commands first: one write then carries many, which saves a
        // syscall per command here and lets Redis read them in one go.
        tokio::task::yield_now().await;
        // Take everything already queued, so a burst from many sessions
        // goes out in one write (and Redis reads it in one go).
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
        // Written: the requests' bytes (slices of their clients' read
        // buffers) are not held until the next write.
        raws.clear();
        // TLS may hold back what the socket would not take; plain TCP's
        // flush does nothing.
        if res.is_err() || wr.flush().await.is_err() {
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

/// Gives the front batch (`p`, just popped) its `done` replies, the
/// measured `buf[..boundary]`, and starts measuring the next batch.
fn hand_out(
    p: Option<Pending>,
    buf: &mut BytesMut,
    scanned: &mut usize,
    boundary: &mut usize,
    done: &mut usize,
) {
    let data = buf.split_to(*boundary).freeze();
    *scanned -= *boundary;
    *boundary = 0;
    if let Some(p) = p {
        p.tx.last(BatchReply::new(data, *done, false));
    }
    *done = 0;
}

/// Replies of a streamed batch are handed out once this many bytes of
/// complete ones are gathered.
pub const STREAM_PIECE: usize = 256 * 1024;

async fn reader(
    mut rd: ReadHalf,
    queue: Arc<Mutex<VecDeque<Pending>>>,
    inner: Arc<Inner>,
    dead: watch::Receiver<bool>,
) {
    let limits = Limits::upstream();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // `buf[..scanned]` is measured: `buf[..boundary]` holds `done` complete
    // replies for the front batch, and the rest is the start of the frame
    // being received. The scanner keeps its place in that frame, so bytes
    // are measured once however slowly a large reply arrives, and may be
    // dropped as soon as they are measured.
    let mut scanner = ReplyScanner::new();
    let mut scanned = 0usize;
    let mut boundary = 0usize;
    let mut done = 0usize;
    // As in `writer`: one wait for the connection's death.
    let mut died = until_set(dead);
    'outer: loop {
        loop {
            let front = match queue.lock() {
                Ok(q) => q
                    .front()
                    .map(|p| (p.count, p.tx.unwanted(), p.tx.streams())),
                Err(_) => break 'outer,
            };
            let Some((count, unwanted, streams)) = front else {
                // Bytes nobody asked for: push frames we did not subscribe
                // to, or a desynchronised stream. Drop pushes as they come,
                // give up on anything else.
                if scanned == buf.len() {
                    break;
                }
                if scanner.at_boundary() && buf[scanned] != b'>' {
                    break 'outer;
                }
                let Ok(r) = scanner.scan(&buf[scanned..], &limits) else {
                    break 'outer;
                };
                scanned += r.consumed;
                let _ = buf.split_to(scanned);
                scanned = 0;
                if r.frame_done.is_none() && r.consumed == 0 {
                    break;
                }
                continue;
            };
            if unwanted && scanned > 0 {
                // Nobody takes these replies: drop what is measured, keep
                // counting.
                let _ = buf.split_to(scanned);
                scanned = 0;
                boundary = 0;
            }
            if done == count {
                let p = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => break 'outer,
                };
                hand_out(p, &mut buf, &mut scanned, &mut boundary, &mut done);
                continue;
            }
            if scanned == buf.len() {
                break;
            }
            // Measure as far as the buffer and this batch go (a streamed
            // batch: up to a piece) before taking the queue lock again: a
            // long pipeline of small replies takes it once, not per reply.
            let mut need_more = false;
            while done < count && scanned < buf.len() {
                let Ok(r) = scanner.scan(&buf[scanned..], &limits) else {
                    break 'outer;
                };
                let frame_start = boundary;
                scanned += r.consumed;
                match r.frame_done {
                    Some(true) => {
                        // An out-of-band push between replies: cut it out.
                        let tail = buf.split_off(scanned);
                        buf.truncate(frame_start);
                        buf.unsplit(tail);
                        scanned = frame_start;
                    }
                    Some(false) => {
                        done += 1;
                        boundary = scanned;
                        if streams && boundary >= STREAM_PIECE {
                            break;
                        }
                    }
                    // The rest of the frame (or of a header line) is still
                    // to come.
                    None => {
                        need_more = true;
                        break;
                    }
                }
            }
            let mut q = match queue.lock() {
                Ok(q) => q,
                Err(_) => break 'outer,
            };
            let mut complete = None;
            if let Some(p) = q.front_mut() {
                // Over the client's budget, `admits` marks it so: its
                // session closes it, and the next pass drops what is
                // measured instead of handing it out.
                let admitted = p.tx.admits(scanned as u64);
                if admitted && streams && done > 0 && done < count && boundary >= STREAM_PIECE {
                    p.tx.part(buf.split_to(boundary).freeze(), done);
                    p.count -= done;
                    scanned -= boundary;
                    boundary = 0;
                    done = 0;
                } else if admitted && done == count && !p.tx.unwanted() {
                    // Whole and wanted: handed out under this lock rather
                    // than the next pass's two (per batch, which
                    // unpipelined is per command).
                    complete = q.pop_front();
                }
            }
            drop(q);
            if complete.is_some() {
                hand_out(complete, &mut buf, &mut scanned, &mut boundary, &mut done);
                continue;
            }
            if need_more {
                break;
            }
        }
        let read = tokio::select! {
            r = rd.read_buf(&mut buf) => r,
            _ = &mut died => break 'outer,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    inner.die();
    let partial = buf.split_to(boundary).freeze();
    fail_all(&queue, partial, done);
}
