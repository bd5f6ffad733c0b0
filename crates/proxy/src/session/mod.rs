//! One client connection.
//!
//! A session reads commands, routes each, and keeps an ordered queue of
//! reply slots: replies Redoubt wrote itself, and batches waiting on an
//! upstream connection. Slots are written to the client strictly in order,
//! each no later than its deadline.
//!
//! Ordering rule (DESIGN, Upstream connections): a session's commands
//! travel down one upstream connection, in order, and the session moves to
//! another connection only when none of its commands are in flight there.
//! A command that needs a different connection (after `SELECT`, `AUTH`,
//! `WATCH`, a blocking command, a broken connection) waits — the session
//! stops reading — until the in-flight ones are answered.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::{frame_len, Frame, Limits, Request, RequestDecoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use upstream::pool::Dedicated;
use upstream::{
    BatchReply, Conn, ConnectError, Credentials, OutputBudget, PoolKey, Replies, State,
};

use crate::classify::{classify, is_write, Kind, SessionCmd};
use crate::gate::{self, Refusal};
use crate::reply;
use crate::server::Shared;

/// Databases a client may `SELECT` while Redis cannot confirm (Redis's
/// default `databases`).
const DEFAULT_DATABASES: i64 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    SkipNext,
}

struct Multi {
    cmds: Vec<Request>,
    failed: bool,
}

struct Slot {
    body: Body,
    silent: bool,
    started: Instant,
}

enum Body {
    Ready(Bytes),
    Wait(Wait),
    /// Answered locally; sent once its journal entry is durable.
    Durable(Bytes, crate::outage::Durable),
    Close,
}

struct Wait {
    rx: Replies,
    conn: Conn,
    /// Per command: may it change data?
    writes: Vec<bool>,
    /// Per command raw bytes, to resend reads once on a fresh connection.
    raws: Vec<Bytes>,
    deadline: Option<Instant>,
    /// `MULTI … EXEC` sent as one piece: only EXEC's reply goes back.
    exec_only: bool,
    /// Replies the batch will get (more than `writes.len()` for a
    /// transaction: `+OK` and the `+QUEUED`s).
    expect: usize,
    /// On a dedicated connection: never moved to another one.
    dedicated: Option<Dedicated>,
    retried: bool,
    /// Reads whose replies go into the near-cache: (position, fill). The
    /// command after each is its hidden `PEXPIRETIME`, never shown to the
    /// client.
    fills: Vec<(usize, crate::outage::Fill)>,
    /// Client commands counted into `pending_cmds` when pushed.
    counted: usize,
}

impl Wait {
    /// Sends one command on a connection of its own (pinned or dedicated):
    /// never moved to another connection, so never resent.
    fn single(
        conn: Conn,
        req: Request,
        write: bool,
        deadline: Option<Instant>,
        dedicated: Option<Dedicated>,
        budget: &Arc<OutputBudget>,
    ) -> Wait {
        let rx = conn.send_bounded(req.raw.clone(), 1, budget, false);
        Wait {
            rx,
            conn,
            writes: vec![write],
            raws: vec![req.raw],
            deadline,
            exec_only: false,
            expect: 1,
            dedicated,
            retried: true,
            fills: Vec::new(),
            counted: 1,
        }
    }

    /// True when command `i` of the batch is a hidden `PEXPIRETIME`.
    fn hidden(&self, i: usize) -> bool {
        self.fills.iter().any(|(p, _)| p + 1 == i)
    }

    /// Commands the client sent (hidden ones not counted).
    fn visible(&self) -> usize {
        self.writes.len() - self.fills.len()
    }

    /// Shows the replies in `data` (`received` frames) to the client, minus
    /// the hidden ones, and keeps the filled reads in the near-cache. Then
    /// drops what was answered and every hidden command from the batch, so
    /// what is left can be resent or failed like any batch.
    fn take_fills(
        &mut self,
        data: &[u8],
        received: usize,
        outage: Option<&crate::outage::Outage>,
        emit: &mut impl FnMut(&[u8]),
    ) {
        let limits = resp::Limits::upstream();
        let mut frames = Vec::with_capacity(received);
        let mut pos = 0;
        while frames.len() < received {
            match frame_len(&data[pos..], &limits) {
                Ok(Some(n)) => {
                    frames.push(&data[pos..pos + n]);
                    pos += n;
                }
                _ => break,
            }
        }
        for (i, f) in frames.iter().enumerate() {
            if self.hidden(i) {
                continue;
            }
            emit(f);
            if let (Some((_, fill)), Some(o), Some(exp)) = (
                self.fills.iter().find(|(p, _)| *p == i),
                outage,
                frames.get(i + 1),
            ) {
                o.fill(fill, f, exp);
            }
        }
        let done = frames.len().min(self.writes.len());
        let keep: Vec<usize> = (done..self.writes.len())
            .filter(|i| !self.hidden(*i))
            .collect();
        self.writes = keep.iter().map(|&i| self.writes[i]).collect();
        self.raws = keep
            .iter()
            .filter_map(|&i| self.raws.get(i).cloned())
            .collect();
        self.fills.clear();
    }
}

enum Outcome {
    Reply(BatchReply),
    NotSent,
    Deadline,
    Journaled(Result<(), String>),
}

enum Event {
    Front(Outcome),
    Read(bool),
    Shutdown,
}

/// What dispatching one request asks of the main loop.
enum Flow {
    Go,
    /// Needs another connection while commands are in flight: retry this
    /// request once they are answered.
    Stall(Request),
    /// Switch to a relayed push connection once everything is answered.
    Tunnel(Request),
}

struct Builder {
    conn: Conn,
    raws: Vec<Bytes>,
    writes: Vec<bool>,
    fills: Vec<(usize, crate::outage::Fill)>,
}

pub(crate) struct Session {
    shared: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    name: Option<Bytes>,
    lib_name: Option<Bytes>,
    lib_ver: Option<Bytes>,
    db: u32,
    proto: u8,
    /// The identity upstream connections log in with.
    auth: Option<Credentials>,
    /// Who the session acts as ([`crate::access`]).
    who: crate::access::Identity,
    conn: Option<Conn>,
    pinned: Option<Dedicated>,
    unpin_when_idle: bool,
    blocking: Option<Dedicated>,
    /// The client's session on the local store (durable keyspaces).
    store_session: Option<store::Session>,
    multi: Option<Multi>,
    reply_mode: ReplyMode,
    pending: VecDeque<Slot>,
    pending_cmds: usize,
    /// (connection id, slots in flight on it)
    inflight: Vec<(u64, usize)>,
    batch: Option<Builder>,
    /// Reply bytes read from Redis and not yet given to the client.
    budget: Arc<OutputBudget>,
    created: Instant,
    limits: Limits,
    timeout: Duration,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        id: u64,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Session {
        let limits = shared.limits.decoder();
        let timeout = Duration::from_millis(shared.limits.command_timeout_ms);
        let auth = shared.access.upstream_auth();
        let who = shared.access.anonymous();
        let budget = OutputBudget::new(shared.limits.max_output_buffer_bytes);
        Session {
            shared,
            id,
            peer,
            local,
            name: None,
            lib_name: None,
            lib_ver: None,
            db: 0,
            proto: 2,
            auth,
            who,
            conn: None,
            pinned: None,
            unpin_when_idle: false,
            blocking: None,
            store_session: None,
            multi: None,
            reply_mode: ReplyMode::On,
            pending: VecDeque::new(),
            pending_cmds: 0,
            inflight: Vec::new(),
            batch: None,
            budget,
            created: Instant::now(),
            limits,
            timeout,
        }
    }

    fn key(&self) -> PoolKey {
        PoolKey {
            auth: self.auth.clone(),
            db: self.db,
            proto: self.proto,
        }
    }

    /// Serves the client until it leaves, misbehaves, or shutdown drains it.
    pub(crate) async fn run(mut self, stream: TcpStream) {
        self.publish_row();
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        // Resumes a partly received command where it stopped: parsing
        // costs time linear in the bytes received, however they trickle in.
        let mut decoder = RequestDecoder::new(self.limits);
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut stalled: Option<Request> = None;
        let mut tunnel: Option<Request> = None;
        let mut eof = false;
        let mut shutdown = self.shared.shutdown.clone();
        let max_inflight = self.shared.limits.max_inflight_per_client;
        let max_query = self.shared.limits.max_query_buffer_bytes;
        let max_output = self.shared.limits.max_output_buffer_bytes;
        let write_timeout = self.shared.limits.write_timeout();
        let mut closing = false;
        loop {
            // Dispatch what has arrived, unless waiting for a switch.
            if let Some(req) = stalled.take() {
                match self.dispatch(req).await {
                    Flow::Go => {}
                    Flow::Stall(r) => stalled = Some(r),
                    Flow::Tunnel(r) => tunnel = Some(r),
                }
            }
            while stalled.is_none()
                && tunnel.is_none()
                && !closing
                && self.pending_cmds < max_inflight
            {
                match decoder.decode(&mut inbuf) {
                    Ok(Some(req)) => match self.dispatch(req).await {
                        Flow::Go => {}
                        Flow::Stall(r) => stalled = Some(r),
                        Flow::Tunnel(r) => tunnel = Some(r),
                    },
                    Ok(None) => {
                        if eof {
                            // The client is gone: what is complete was
                            // answered; a partial command never will be.
                            inbuf.clear();
                        }
                        break;
                    }
                    Err(e) => {
                        self.flush_batch();
                        self.push_ready(reply::error(format!("ERR {e}; connection closed")));
                        self.push(Body::Close);
                        closing = true;
                    }
                }
            }
            self.flush_batch();
            if self.collect_ready(&mut out).await {
                closing = true;
            }
            if out.len() as u64 > max_output || self.budget.is_over() {
                tracing::warn!(
                    client = self.id,
                    bytes = out.len() as u64 + self.budget.used(),
                    "output buffer over limits.max_output_buffer_bytes; closing"
                );
                return;
            }
            if !out.is_empty() {
                // Nothing is read from a client while its replies wait to
                // be written, and one that stops reading is let go.
                match tokio::time::timeout(write_timeout, wr.write_all(&out)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::warn!(
                            client = self.id,
                            bytes = out.len(),
                            "client read none of its replies within limits.client_write_timeout_ms; closing"
                        );
                        return;
                    }
                }
                out.clear();
            }
            if self.pending.is_empty() {
                if closing || (eof && inbuf.is_empty() && stalled.is_none()) {
                    let _ = wr.shutdown().await;
                    return;
                }
                if let Some(req) = tunnel.take() {
                    let Ok(stream) = rd.reunite(wr) else { return };
                    self.tunnel(stream, req, inbuf).await;
                    return;
                }
            }
            if self.pending.is_empty() && stalled.is_some() {
                continue;
            }
            let can_read = !eof
                && !closing
                && stalled.is_none()
                && tunnel.is_none()
                && self.pending_cmds < max_inflight;
            if inbuf.len() as u64 > max_query {
                self.push_ready(reply::error(
                    "ERR Protocol error: query buffer over limits.max_query_buffer_bytes; connection closed",
                ));
                self.push(Body::Close);
                closing = true;
                continue;
            }
            let health = self.shared.health.state();
            let event = tokio::select! {
                biased;
                o = wait_front(&mut self.pending, &self.shared.health), if has_wait_front(&self.pending) => Event::Front(o),
                r = rd.read_buf(&mut inbuf), if can_read => Event::Read(matches!(r, Ok(n) if n > 0)),
                _ = async { let _ = shutdown.wait_for(|s| *s).await; }, if !closing => Event::Shutdown,
            };
            match event {
                Event::Front(o) => self.complete_front(o, &mut out, health).await,
                Event::Read(true) => {}
                Event::Read(false) => eof = true,
                Event::Shutdown => closing = true,
            }
        }
    }

    fn push(&mut self, body: Body) {
        let silent = match (&body, self.reply_mode) {
            (Body::Close, _) => false,
            (_, ReplyMode::On) => false,
            (_, ReplyMode::Off) => true,
            (_, ReplyMode::SkipNext) => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        let mut body = body;
        let n = match &mut body {
            Body::Wait(w) => {
                let id = w.conn.id();
                match self.inflight.iter_mut().find(|(c, _)| *c == id) {
                    Some((_, k)) => *k += 1,
                    None => self.inflight.push((id, 1)),
                }
                w.counted = w.visible();
                w.counted
            }
            _ => 1,
        };
        self.pending_cmds += n;
        self.pending.push_back(Slot {
            body,
            silent,
            started: Instant::now(),
        });
    }

    fn push_ready(&mut self, b: Bytes) {
        self.flush_batch();
        self.push(Body::Ready(b));
    }

    fn push_silent_ok(&mut self) {
        // CLIENT REPLY OFF/SKIP: the command itself gets no reply.
        self.flush_batch();
        let saved = self.reply_mode;
        self.reply_mode = ReplyMode::Off;
        self.push(Body::Ready(reply::ok()));
        self.reply_mode = saved;
    }

    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.pending.pop_front()?;
        let n = match &slot.body {
            Body::Wait(w) => {
                let id = w.conn.id();
                if let Some(pos) = self.inflight.iter().position(|(c, _)| *c == id) {
                    self.inflight[pos].1 -= 1;
                    if self.inflight[pos].1 == 0 {
                        self.inflight.swap_remove(pos);
                    }
                }
                w.counted
            }
            _ => 1,
        };
        self.pending_cmds -= n;
        let secs = slot.started.elapsed().as_secs_f64();
        for _ in 0..n {
            self.shared.metrics.duration.record(secs);
        }
        Some(slot)
    }

    /// True when commands may go to `conn` without overtaking in-flight
    /// commands on another connection.
    fn may_use(&self, conn: &Conn) -> bool {
        self.inflight.iter().all(|(c, _)| *c == conn.id())
            && self.batch.as_ref().is_none_or(|b| b.conn.id() == conn.id())
    }

    fn nothing_in_flight(&self) -> bool {
        self.inflight.is_empty() && self.batch.is_none()
    }

    fn flush_batch(&mut self) {
        let Some(b) = self.batch.take() else { return };
        let raw = if b.raws.len() == 1 {
            b.raws[0].clone()
        } else {
            let mut buf = BytesMut::with_capacity(b.raws.iter().map(|r| r.len()).sum());
            for r in &b.raws {
                buf.extend_from_slice(r);
            }
            buf.freeze()
        };
        let expect = b.raws.len();
        // Replies stream to the client as they complete, unless some fill
        // the near-cache (those are taken apart whole).
        let rx = b
            .conn
            .send_bounded(raw, expect, &self.budget, b.fills.is_empty());
        self.shared.metrics.upstream.increment(expect as u64);
        let deadline = Some(Instant::now() + self.timeout);
        self.push(Body::Wait(Wait {
            rx,
            conn: b.conn,
            writes: b.writes,
            raws: b.raws,
            deadline,
            exec_only: false,
            expect,
            dedicated: None,
            retried: false,
            fills: b.fills,
            counted: 0,
        }));
    }

    /// Counts a refused command (metric and incident).
    fn reject(&self) {
        self.shared.metrics.rejected.increment(1);
        self.shared
            .counters
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn down_reply(&mut self) -> Option<Bytes> {
        if self.shared.health.state() == State::Down {
            self.reject();
            Some(reply::unavailable_down(
                &self.shared.health.current().reason,
            ))
        } else {
            None
        }
    }

    /// The connection forwarded commands go to now, or why there is none.
    async fn target(&mut self) -> Result<Conn, Result<(), Bytes>> {
        if self.pinned.is_some() && self.unpin_when_idle {
            if !self.nothing_in_flight() {
                return Err(Ok(()));
            }
            self.pinned = None;
            self.unpin_when_idle = false;
        }
        if let Some(p) = &self.pinned {
            return Ok(p.conn.clone());
        }
        if let Some(c) = self.conn.as_ref().filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        if !self.nothing_in_flight() {
            return Err(Ok(()));
        }
        let pool = self.shared.upstream.pool(&self.key());
        // Connecting may wait out a reconnect backoff. If Redis is declared
        // Down meanwhile, stop waiting: the request is dispatched again and
        // routed by policy (a durable write is journaled, others refused at
        // once) instead of being refused only when the connect gives up.
        let mut health = self.shared.health.subscribe();
        let got = tokio::select! {
            r = pool.get(Instant::now() + self.timeout) => Some(r),
            _ = health.wait_for(|h| h.state == State::Down) => None,
        };
        match got {
            None => Err(Ok(())),
            Some(Ok(c)) => {
                self.conn = Some(c.clone());
                Ok(c)
            }
            Some(Err(e)) => Err(Err(self.connect_error(e))),
        }
    }

    fn connect_error(&self, e: ConnectError) -> Bytes {
        self.reject();
        match e {
            ConnectError::Rejected(text) => reply::error(text),
            other => reply::unavailable_connect(&other.to_string()),
        }
    }

    /// Refuses a request: inside `MULTI` the transaction is then
    /// discarded at `EXEC`, as Redis flags it.
    fn refuse(&mut self, r: Refusal) {
        if let Some(m) = self.multi.as_mut() {
            m.failed = true;
        }
        self.reject();
        self.push_ready(r.reply());
    }

    async fn dispatch(&mut self, req: Request) -> Flow {
        // The gate: shape first (arity, keys), as Redis checks before auth.
        let gated = match gate::admit(&req.args) {
            Ok(g) => g,
            Err(r) => {
                self.refuse(r);
                return Flow::Go;
            }
        };
        if let Some(r) = self.shared.access.gate(&self.who, &req.args) {
            self.refuse(r);
            return Flow::Go;
        }
        let kind = classify(&req.args, gated.spec);
        if let Kind::Session(_) = kind {
            // Answered here, never by Redis: the session's permissions are
            // checked as Redis would check them.
            if let Some(r) = self
                .shared
                .access
                .caller(&self.who)
                .judge(&req.args, &gated)
            {
                self.refuse(r);
                return Flow::Go;
            }
        }
        if self.multi.is_some() && gated.spec.is_some_and(|s| s.has(resp::command::F_NO_MULTI)) {
            self.refuse(Refusal::NotInMulti);
            return Flow::Go;
        }
        if self.multi.is_some()
            && !matches!(kind, Kind::Exec | Kind::Discard | Kind::Multi | Kind::Watch)
        {
            if let Kind::Session(SessionCmd::Quit | SessionCmd::Reset) = kind {
            } else {
                self.queue_in_multi(req, kind);
                return Flow::Go;
            }
        }
        match kind {
            Kind::Session(cmd) => self.session_cmd(cmd, req).await,
            Kind::Multi => {
                if self.multi.is_some() {
                    self.push_ready(reply::error("ERR MULTI calls can not be nested"));
                } else {
                    self.multi = Some(Multi {
                        cmds: Vec::new(),
                        failed: false,
                    });
                    self.shared.metrics.local.increment(1);
                    self.push_ready(reply::ok());
                }
                Flow::Go
            }
            Kind::Discard => {
                match self.multi.take() {
                    None => self.push_ready(reply::error("ERR DISCARD without MULTI")),
                    Some(_) => {
                        // DISCARD also forgets WATCHed keys: drop the pinned
                        // connection, which holds them.
                        if self.pinned.is_some() {
                            self.unpin_when_idle = true;
                        }
                        self.push_ready(reply::ok());
                    }
                }
                Flow::Go
            }
            Kind::Exec => self.exec(req).await,
            Kind::Watch => self.watch(req).await,
            Kind::Unwatch => {
                if self.pinned.is_some() {
                    self.unpin_when_idle = true;
                }
                self.push_ready(reply::ok());
                Flow::Go
            }
            Kind::Blocking(block) => self.blocking(req, block).await,
            Kind::Tunnel => {
                if let Some(r) = self.down_reply() {
                    self.push_ready(r);
                    return Flow::Go;
                }
                self.flush_batch();
                Flow::Tunnel(req)
            }
            Kind::Forward(write) => self.forward(req, write).await,
        }
    }

    /// Queues the reply of a command the outage answered here (a local
    /// write's reply waits for its journal record); false when it goes to
    /// Redis.
    fn answered_locally(&mut self, route: crate::outage::Route) -> bool {
        match route {
            crate::outage::Route::Upstream => false,
            crate::outage::Route::Local(reply, None) => {
                self.push_ready(reply);
                true
            }
            crate::outage::Route::Local(reply, Some(durable)) => {
                self.flush_batch();
                self.push(Body::Durable(reply, durable));
                true
            }
        }
    }

    async fn forward(&mut self, req: Request, write: bool) -> Flow {
        if let Some(o) = self.shared.outage.clone() {
            let state = self.shared.health.state();
            let local = self.store_session.get_or_insert_with(|| o.session());
            local.set_protocol(self.proto);
            let caller = self.shared.access.caller(&self.who);
            let route = o.route(state, local, self.db, &req.args, &caller).await;
            if self.answered_locally(route) {
                return Flow::Go;
            }
        }
        if let Some(r) = self.down_reply() {
            self.push_ready(r);
            return Flow::Go;
        }
        let conn = match self.target().await {
            Ok(c) => c,
            Err(Ok(())) => return Flow::Stall(req),
            Err(Err(reply)) => {
                self.push_ready(reply);
                return Flow::Go;
            }
        };
        if !self.may_use(&conn) {
            self.flush_batch();
            if !self.may_use(&conn) {
                return Flow::Stall(req);
            }
        }
        let fill = self
            .shared
            .outage
            .as_ref()
            .and_then(|o| o.near_fill(self.db, &req.args));
        if !matches!(&self.batch, Some(b) if b.conn.id() == conn.id()) {
            self.flush_batch();
            self.batch = Some(Builder {
                conn,
                raws: Vec::new(),
                writes: Vec::new(),
                fills: Vec::new(),
            });
        }
        if let Some(b) = &mut self.batch {
            if let Some(fill) = fill {
                // The value's expiry, read right behind it on the same
                // connection; its reply is hidden from the client.
                b.fills.push((b.raws.len(), fill));
                b.raws.push(req.raw);
                b.writes.push(write);
                b.raws.push(pexpiretime(&req.args[1]));
                b.writes.push(false);
            } else {
                b.raws.push(req.raw);
                b.writes.push(write);
            }
        }
        Flow::Go
    }

    fn queue_in_multi(&mut self, req: Request, kind: Kind) {
        let Some(multi) = self.multi.as_mut() else {
            return;
        };
        let name = String::from_utf8_lossy(&req.args[0]).to_lowercase();
        let err = match kind {
            Kind::Session(_) | Kind::Tunnel => Some(format!(
                "ERR '{name}' inside MULTI is not supported through redoubt; the transaction will be discarded"
            )),
            _ => None,
        };
        match err {
            Some(e) => {
                multi.failed = true;
                self.push_ready(reply::error(e));
            }
            None => {
                multi.cmds.push(req);
                self.push_ready(Bytes::from_static(b"+QUEUED\r\n"));
            }
        }
    }

    async fn exec(&mut self, req: Request) -> Flow {
        let Some(multi) = self.multi.take() else {
            self.push_ready(reply::error("ERR EXEC without MULTI"));
            return Flow::Go;
        };
        if multi.failed {
            if self.pinned.is_some() {
                self.unpin_when_idle = true;
            }
            self.push_ready(reply::error(
                "EXECABORT Transaction discarded because of previous errors.",
            ));
            return Flow::Go;
        }
        if let (Some(o), None) = (self.shared.outage.clone(), &self.pinned) {
            // Not under WATCH (Redis holds those keys' versions): a block
            // of durable commands may be served locally during an outage.
            let state = self.shared.health.state();
            let local = self.store_session.get_or_insert_with(|| o.session());
            local.set_protocol(self.proto);
            let cmds: Vec<Vec<Bytes>> = multi.cmds.iter().map(|r| r.args.clone()).collect();
            let caller = self.shared.access.caller(&self.who);
            let route = o.route_multi(state, local, self.db, &cmds, &caller).await;
            if self.answered_locally(route) {
                return Flow::Go;
            }
        }
        if let Some(r) = self.down_reply() {
            self.push_ready(r);
            return Flow::Go;
        }
        let conn = match self.target().await {
            Ok(c)
                if self.may_use(&c) || {
                    self.flush_batch();
                    self.may_use(&c)
                } =>
            {
                c
            }
            Ok(_) | Err(Ok(())) => {
                self.multi = Some(multi);
                return Flow::Stall(req);
            }
            Err(Err(reply)) => {
                self.push_ready(reply);
                return Flow::Go;
            }
        };
        self.flush_batch();
        let mut raw = BytesMut::new();
        raw.extend_from_slice(b"*1\r\n$5\r\nMULTI\r\n");
        let mut write = false;
        for c in &multi.cmds {
            raw.extend_from_slice(&c.raw);
            write |= is_write(&c.args);
        }
        raw.extend_from_slice(&req.raw);
        let count = multi.cmds.len() + 2;
        let rx = conn.send_bounded(raw.freeze(), count, &self.budget, false);
        self.shared.metrics.upstream.increment(1);
        if self.pinned.is_some() {
            // EXEC ends the WATCH; the pinned connection is released once
            // its replies are in.
            self.unpin_when_idle = true;
        }
        let dedicated = None;
        self.push(Body::Wait(Wait {
            rx,
            conn,
            writes: vec![write],
            raws: vec![],
            deadline: Some(Instant::now() + self.timeout),
            exec_only: true,
            expect: count,
            dedicated,
            retried: true,
            fills: Vec::new(),
            counted: 0,
        }));
        Flow::Go
    }

    async fn watch(&mut self, req: Request) -> Flow {
        if self.multi.is_some() {
            self.push_ready(reply::error("ERR WATCH inside MULTI is not allowed"));
            return Flow::Go;
        }
        if let Some(r) = self.down_reply() {
            self.push_ready(r);
            return Flow::Go;
        }
        if self.pinned.is_some() && self.unpin_when_idle {
            // A new WATCH after EXEC: keep the same pinned connection.
            self.unpin_when_idle = false;
        }
        if self.pinned.is_none() {
            self.flush_batch();
            if !self.nothing_in_flight() {
                return Flow::Stall(req);
            }
            match self.shared.upstream.dedicated(&self.key()).await {
                Ok(d) => self.pinned = Some(d),
                Err(e) => {
                    self.reject();
                    self.push_ready(reply::unavailable_connect(&e.to_string()));
                    return Flow::Go;
                }
            }
        }
        self.forward(req, false).await
    }

    async fn blocking(&mut self, req: Request, block_ms: Option<u64>) -> Flow {
        if let Some(r) = self.down_reply() {
            self.push_ready(r);
            return Flow::Go;
        }
        self.flush_batch();
        // A block time too large for the clock blocks for ever, as Redis
        // would (it refuses what it cannot represent itself).
        let deadline = block_ms
            .and_then(|b| Instant::now().checked_add(self.timeout + Duration::from_millis(b)));
        let write = is_write(&req.args);
        if let Some(p) = &self.pinned {
            if !self.unpin_when_idle {
                let conn = p.conn.clone();
                if !self.may_use(&conn) {
                    return Flow::Stall(req);
                }
                let budget = self.budget.clone();
                self.push(Body::Wait(Wait::single(
                    conn, req, write, deadline, None, &budget,
                )));
                return Flow::Go;
            }
        }
        if !self.nothing_in_flight() {
            return Flow::Stall(req);
        }
        let ded = match self.blocking.take().filter(|d| d.conn.is_alive()) {
            Some(d) => d,
            None => match self.shared.upstream.dedicated(&self.key()).await {
                Ok(d) => d,
                Err(e) => {
                    self.reject();
                    self.push_ready(reply::unavailable_connect(&e.to_string()));
                    return Flow::Go;
                }
            },
        };
        let conn = ded.conn.clone();
        self.shared.metrics.upstream.increment(1);
        let budget = self.budget.clone();
        self.push(Body::Wait(Wait::single(
            conn,
            req,
            write,
            deadline,
            Some(ded),
            &budget,
        )));
        Flow::Go
    }

    /// Moves every finished slot at the front of the queue into `out`.
    /// Returns true when a slot asks to close the connection.
    async fn collect_ready(&mut self, out: &mut BytesMut) -> bool {
        loop {
            if out.len() >= reply::FLUSH_AT {
                // Write these first: the rest stays with Redis's replies,
                // counted against the client's budget.
                return false;
            }
            let health = self.shared.health.state();
            let outcome = match self.pending.front_mut() {
                None => return false,
                Some(Slot {
                    body: Body::Close, ..
                }) => {
                    self.pop_front();
                    return true;
                }
                Some(Slot {
                    body: Body::Ready(_),
                    ..
                }) => {
                    if let Some(Slot {
                        body: Body::Ready(b),
                        silent,
                        ..
                    }) = self.pop_front()
                    {
                        if !silent {
                            out.extend_from_slice(&b);
                        }
                    }
                    continue;
                }
                Some(Slot {
                    body: Body::Durable(..),
                    ..
                }) => return false,
                Some(Slot {
                    body: Body::Wait(w),
                    ..
                }) => match w.rx.try_recv() {
                    Ok(Some(r)) => Outcome::Reply(r),
                    Err(()) => Outcome::NotSent,
                    Ok(None) => {
                        if w.deadline.is_some_and(|d| Instant::now() >= d) {
                            Outcome::Deadline
                        } else {
                            return false;
                        }
                    }
                },
            };
            self.complete_front(outcome, out, health).await;
        }
    }

    async fn complete_front(&mut self, outcome: Outcome, out: &mut BytesMut, health: State) {
        if let Outcome::Journaled(result) = outcome {
            // A local write: its reply goes out only now that it is
            // durable, or an honest error if the journal failed it.
            if let Some(Slot {
                body: Body::Durable(reply, _),
                silent,
                ..
            }) = self.pop_front()
            {
                if !silent {
                    match result {
                        Ok(()) => out.extend_from_slice(&reply),
                        Err(e) => out.extend_from_slice(&reply::error(format!(
                            "UNCERTAIN the journal failed ({e}): the write was applied locally but may not survive a crash"
                        ))),
                    }
                }
            }
            return;
        }
        let Some(Slot {
            body: Body::Wait(w),
            silent,
            ..
        }) = self.pending.front_mut()
        else {
            return;
        };
        let silent = *silent;
        let mut emit = |b: &[u8]| {
            if !silent {
                out.extend_from_slice(b)
            }
        };
        let timeout_ms = self.timeout.as_millis() as u64;
        if self.budget.is_over() {
            // The client is over its output limit and is being closed; its
            // replies were dropped as they came.
            self.pop_front();
            return;
        }
        match outcome {
            Outcome::Journaled(_) => {}
            Outcome::Reply(r) if r.more => {
                // The first replies of a streamed batch: they go out now,
                // and the slot stands for the commands still unanswered.
                emit(&r.data);
                let n = r.received.min(w.writes.len());
                w.writes.drain(..n);
                w.raws.drain(..n.min(w.raws.len()));
                w.expect -= r.received.min(w.expect);
                // Redis is answering: the rest get a full timeout of their
                // own rather than what the first pieces left of it.
                if w.deadline.is_some() {
                    w.deadline = Some(Instant::now() + self.timeout);
                }
            }
            Outcome::Reply(r) => {
                let complete = r.received == w.expect && !r.lost;
                if w.exec_only {
                    match (complete, last_frame(&r.data)) {
                        (true, Some(last)) => emit(last),
                        _ => emit(&reply::uncertain_lost()),
                    }
                } else {
                    let rest = if w.fills.is_empty() {
                        emit(&r.data);
                        r.received.min(w.writes.len())
                    } else {
                        let outage = self.shared.outage.as_deref();
                        w.take_fills(&r.data, r.received, outage, &mut emit);
                        0
                    };
                    if !complete {
                        let all_reads = w.writes[rest..].iter().all(|x| !x);
                        let in_time = w.deadline.is_none_or(|d| Instant::now() < d);
                        if all_reads
                            && !w.retried
                            && in_time
                            && health != State::Down
                            && w.dedicated.is_none()
                        {
                            w.writes.drain(..rest);
                            w.raws.drain(..rest);
                            w.retried = true;
                            if self.resend_front(rest).await {
                                return;
                            }
                        }
                        let Some(Slot {
                            body: Body::Wait(w),
                            ..
                        }) = self.pending.front()
                        else {
                            return;
                        };
                        let start = if w.writes.len() < rest { 0 } else { rest };
                        let writes: Vec<bool> = w.writes[start.min(w.writes.len())..].to_vec();
                        let mut o = BytesMut::new();
                        for write in writes {
                            o.extend_from_slice(&if write {
                                reply::uncertain_lost()
                            } else {
                                reply::unavailable_lost()
                            });
                        }
                        if !silent {
                            out.extend_from_slice(&o);
                        }
                    }
                }
                if let Some(slot) = self.pop_front() {
                    if let Body::Wait(w) = slot.body {
                        // A blocking connection that answered is clean:
                        // keep it for the session's next blocking command.
                        if complete && w.dedicated.is_some() && self.blocking.is_none() {
                            self.blocking = w.dedicated;
                        }
                    }
                }
            }
            Outcome::NotSent => {
                let in_time = w.deadline.is_none_or(|d| Instant::now() < d);
                if !w.retried && in_time && health != State::Down && w.dedicated.is_none() {
                    w.retried = true;
                    if self.resend_front(0).await {
                        return;
                    }
                }
                let n = match self.pending.front() {
                    Some(Slot {
                        body: Body::Wait(w),
                        ..
                    }) => w.visible(),
                    _ => 1,
                };
                let r =
                    reply::unavailable_connect("the connection closed before the command was sent");
                for _ in 0..n {
                    if !silent {
                        out.extend_from_slice(&r);
                    }
                }
                self.pop_front();
            }
            Outcome::Deadline => {
                let down_block = w.deadline.is_none();
                let mut o = BytesMut::new();
                for (i, &write) in w.writes.iter().enumerate() {
                    if w.hidden(i) {
                        continue;
                    }
                    o.extend_from_slice(&if down_block {
                        reply::uncertain_down()
                    } else if write {
                        reply::uncertain_deadline(timeout_ms)
                    } else {
                        reply::unavailable_deadline(timeout_ms)
                    });
                }
                if !silent {
                    out.extend_from_slice(&o);
                }
                if w.exec_only {
                    // EXEC's reply is still to come on this connection; the
                    // WATCH state is unknown, so give the pinned one up.
                    if self.pinned.is_some() {
                        self.unpin_when_idle = true;
                    }
                }
                self.pop_front();
            }
        }
    }

    /// Resends the front slot's commands on a fresh shared connection.
    /// Returns false when none could be had.
    async fn resend_front(&mut self, _skipped: usize) -> bool {
        self.conn = None;
        let pool = self.shared.upstream.pool(&self.key());
        let deadline = match self.pending.front() {
            Some(Slot {
                body: Body::Wait(w),
                ..
            }) => w.deadline.unwrap_or_else(|| Instant::now() + self.timeout),
            _ => return false,
        };
        let Ok(conn) = pool.get(deadline).await else {
            return false;
        };
        let old_id = match self.pending.front() {
            Some(Slot {
                body: Body::Wait(w),
                ..
            }) => w.conn.id(),
            _ => return false,
        };
        let Some(Slot {
            body: Body::Wait(w),
            ..
        }) = self.pending.front_mut()
        else {
            return false;
        };
        let mut raw = BytesMut::new();
        for r in &w.raws {
            raw.extend_from_slice(r);
        }
        w.expect = w.raws.len();
        w.rx = conn.send_bounded(raw.freeze(), w.expect, &self.budget, w.fills.is_empty());
        w.conn = conn.clone();
        // Move the in-flight count from the dead connection to the new one.
        if let Some(pos) = self.inflight.iter().position(|(c, _)| *c == old_id) {
            self.inflight[pos].1 -= 1;
            if self.inflight[pos].1 == 0 {
                self.inflight.swap_remove(pos);
            }
        }
        match self.inflight.iter_mut().find(|(c, _)| *c == conn.id()) {
            Some((_, k)) => *k += 1,
            None => self.inflight.push((conn.id(), 1)),
        }
        self.conn = Some(conn);
        true
    }

    async fn tunnel(&mut self, mut client: TcpStream, req: Request, rest: BytesMut) {
        let (mut up, _permit) = match self.shared.upstream.tunnel(&self.key()).await {
            Ok(t) => t,
            Err(e) => {
                let _ = client
                    .write_all(&reply::unavailable_connect(&e.to_string()))
                    .await;
                return;
            }
        };
        self.shared.metrics.upstream.increment(1);
        if up.write_all(&req.raw).await.is_err() || up.write_all(&rest).await.is_err() {
            let _ = client
                .write_all(&reply::unavailable_connect(
                    "the connection closed during setup",
                ))
                .await;
            return;
        }
        let mut health = self.shared.health.subscribe();
        let mut shutdown = self.shared.shutdown.clone();
        // Subscribers are disconnected when Redis goes down, so their
        // client libraries reconnect and resubscribe (DESIGN).
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
            _ = health.wait_for(|h| h.state == State::Down) => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }

    async fn session_cmd(&mut self, cmd: SessionCmd, req: Request) -> Flow {
        self.shared.metrics.local.increment(1);
        let args = &req.args;
        let arity = |n: usize, exact: bool| {
            if exact {
                args.len() == n
            } else {
                args.len() >= n
            }
        };
        let wrong_args = |name: &str| {
            reply::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            ))
        };
        let r = match cmd {
            SessionCmd::Quit => {
                self.push_ready(reply::ok());
                self.push(Body::Close);
                return Flow::Go;
            }
            SessionCmd::Reset => {
                self.flush_batch();
                if !self.nothing_in_flight() {
                    return Flow::Stall(req);
                }
                self.multi = None;
                self.pinned = None;
                self.unpin_when_idle = false;
                self.db = 0;
                self.proto = 2;
                self.auth = self.shared.access.upstream_auth();
                self.who = self.shared.access.anonymous();
                self.name = None;
                self.conn = None;
                self.reply_mode = ReplyMode::On;
                Bytes::from_static(b"+RESET\r\n")
            }
            SessionCmd::Auth => {
                if !arity(2, false) || args.len() > 3 {
                    wrong_args("auth")
                } else {
                    let (user, pass) = if args.len() == 3 {
                        (Some(&args[1]), &args[2])
                    } else {
                        (None, &args[1])
                    };
                    let creds = Credentials {
                        user: user.map(|u| String::from_utf8_lossy(u).into_owned()),
                        password: String::from_utf8_lossy(pass).into_owned(),
                    };
                    match self.authenticate(creds, self.proto).await {
                        Ok(()) => reply::ok(),
                        Err(r) => r,
                    }
                }
            }
            SessionCmd::Hello => self.hello(args).await,
            SessionCmd::Select => {
                if !arity(2, true) {
                    wrong_args("select")
                } else {
                    match std::str::from_utf8(&args[1])
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        None => reply::error("ERR value is not an integer or out of range"),
                        // Beyond what Redis could have configured: refused
                        // here; the rest is Redis's to judge.
                        Some(n) if !(0..=i64::from(u32::MAX)).contains(&n) => {
                            reply::error("ERR DB index is out of range")
                        }
                        Some(n)
                            if self.shared.health.state() == State::Down
                                && n >= DEFAULT_DATABASES =>
                        {
                            reply::error("ERR DB index is out of range")
                        }
                        Some(n) => {
                            let n = n as u32;
                            let verified =
                                if self.shared.health.state() == State::Down || n == self.db {
                                    Ok(())
                                } else {
                                    self.verify(self.auth.clone(), n, self.proto).await
                                };
                            match verified {
                                Ok(()) if self.pinned.is_some() && !self.unpin_when_idle => {
                                    // Under WATCH the session's commands run on
                                    // the pinned connection: it must follow the
                                    // session to the new db, or a write meant
                                    // for db 1 would touch a watched key of db 5.
                                    self.db = n;
                                    self.conn = None;
                                    self.publish_row();
                                    return self.forward(req, false).await;
                                }
                                Ok(()) => {
                                    if n != self.db {
                                        self.db = n;
                                        self.conn = None;
                                    }
                                    reply::ok()
                                }
                                Err(r) => r,
                            }
                        }
                    }
                }
            }
            SessionCmd::ClientId => reply::encode(&Frame::Integer(self.id as i64)),
            SessionCmd::ClientSetName => {
                if !arity(3, true) {
                    wrong_args("client|setname")
                } else if args[2].iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    reply::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    )
                } else {
                    self.name = (!args[2].is_empty()).then(|| args[2].clone());
                    reply::ok()
                }
            }
            SessionCmd::ClientGetName => match &self.name {
                Some(n) => reply::encode(&Frame::Bulk(n.clone())),
                None => reply::encode(&if self.proto == 3 {
                    Frame::Null
                } else {
                    Frame::NullBulk
                }),
            },
            SessionCmd::ClientSetInfo => {
                if !arity(4, true) {
                    wrong_args("client|setinfo")
                } else if args[2].eq_ignore_ascii_case(b"lib-name") {
                    self.lib_name = Some(args[3].clone());
                    reply::ok()
                } else if args[2].eq_ignore_ascii_case(b"lib-ver") {
                    self.lib_ver = Some(args[3].clone());
                    reply::ok()
                } else {
                    reply::error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[2])
                    ))
                }
            }
            SessionCmd::ClientInfo => {
                let line = self.client_info_line();
                reply::encode(&if self.proto == 3 {
                    Frame::Verbatim(Bytes::from(format!("txt:{line}")))
                } else {
                    Frame::Bulk(Bytes::from(line))
                })
            }
            SessionCmd::ClientReply => {
                let mode = args.get(2).map(|a| a.to_ascii_lowercase());
                match (args.len(), mode.as_deref()) {
                    (3, Some(b"on")) => {
                        self.reply_mode = ReplyMode::On;
                        reply::ok()
                    }
                    (3, Some(b"off")) => {
                        self.reply_mode = ReplyMode::Off;
                        self.push_silent_ok();
                        return Flow::Go;
                    }
                    (3, Some(b"skip")) => {
                        self.push_silent_ok();
                        self.reply_mode = ReplyMode::SkipNext;
                        return Flow::Go;
                    }
                    _ => reply::error("ERR syntax error"),
                }
            }
            SessionCmd::ClientSwitch => reply::ok(),
            SessionCmd::Unsubscribe => {
                let kind = Frame::Bulk(Bytes::from(
                    String::from_utf8_lossy(&args[0]).to_lowercase(),
                ));
                let none = if self.proto == 3 {
                    Frame::Null
                } else {
                    Frame::NullBulk
                };
                let targets: Vec<Frame> = if args.len() > 1 {
                    args[1..].iter().cloned().map(Frame::Bulk).collect()
                } else {
                    vec![none]
                };
                let mut out = BytesMut::new();
                for t in targets {
                    let items = vec![kind.clone(), t, Frame::Integer(0)];
                    out.extend_from_slice(&reply::encode(&if self.proto == 3 {
                        Frame::Push(items)
                    } else {
                        Frame::Array(items)
                    }));
                }
                out.freeze()
            }
            SessionCmd::ClientList => self.client_list(args),
        };
        if matches!(
            cmd,
            SessionCmd::Auth
                | SessionCmd::Hello
                | SessionCmd::Select
                | SessionCmd::ClientSetName
                | SessionCmd::ClientSetInfo
                | SessionCmd::Reset
        ) {
            self.publish_row();
        }
        self.push_ready(r);
        Flow::Go
    }

    /// Checks that Redis accepts this identity and db by getting a pooled
    /// connection with them (its handshake runs `AUTH`/`SELECT`).
    async fn verify(&mut self, auth: Option<Credentials>, db: u32, proto: u8) -> Result<(), Bytes> {
        if self.shared.health.state() == State::Down {
            self.reject();
            return Err(reply::unavailable_down(
                &self.shared.health.current().reason,
            ));
        }
        let key = PoolKey { auth, db, proto };
        let pool = self.shared.upstream.pool(&key);
        match pool.get(Instant::now() + self.timeout).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, ConnectError::Rejected(_)) {
                    self.shared.upstream.forget(&key);
                }
                Err(self.connect_error(e))
            }
        }
    }

    /// Logs the session in as `creds` (`AUTH`, `HELLO … AUTH`). In local
    /// mode Redoubt's users decide. In pass-through Redis decides while it
    /// answers (and Redoubt remembers what it accepted); when it does not,
    /// the credentials it accepted recently do.
    async fn authenticate(&mut self, creds: Credentials, proto: u8) -> Result<(), Bytes> {
        let access = self.shared.access.clone();
        if access.is_local() {
            self.who = access.check_local(&creds).inspect_err(|_| self.reject())?;
            return Ok(());
        }
        let judged = if self.shared.health.state() == State::Down {
            Err(crate::access::Access::not_seen())
        } else {
            let key = PoolKey {
                auth: Some(creds.clone()),
                db: self.db,
                proto,
            };
            let deadline = Instant::now() + self.timeout;
            // Redis judges every login while it answers: a pooled
            // connection that logged in earlier proves nothing once the
            // password changed or the user was disabled.
            let judged = match self.shared.upstream.pool(&key).get(deadline).await {
                Ok(conn) => auth_on(&conn, &creds, deadline).await,
                Err(e) => Err(e),
            };
            match judged {
                Ok(()) => Ok(()),
                Err(ConnectError::Rejected(text)) => {
                    self.shared.upstream.forget(&key);
                    access.refused(&creds, &text);
                    self.reject();
                    return Err(reply::error(text));
                }
                Err(e) => Err(reply::unavailable_connect(&e.to_string())),
            }
        };
        self.who = match judged {
            Ok(()) => access.accepted(&creds).await,
            Err(why) => access.recall(&creds, why).inspect_err(|_| self.reject())?,
        };
        self.auth = Some(creds);
        self.conn = None;
        Ok(())
    }

    async fn hello(&mut self, args: &[Bytes]) -> Bytes {
        let mut proto = self.proto;
        let mut auth = None;
        let mut name = None;
        if let Some(v) = args.get(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                None => {
                    return reply::error("ERR Protocol version is not an integer or out of range")
                }
                Some(2) => proto = 2,
                Some(3) => proto = 3,
                Some(_) => return reply::error("NOPROTO unsupported protocol version"),
            }
            let mut i = 2;
            while i < args.len() {
                let opt = args[i].to_ascii_lowercase();
                if opt == b"auth" && i + 2 < args.len() {
                    auth = Some(Credentials {
                        user: Some(String::from_utf8_lossy(&args[i + 1]).into_owned()),
                        password: String::from_utf8_lossy(&args[i + 2]).into_owned(),
                    });
                    i += 3;
                } else if opt == b"setname" && i + 1 < args.len() {
                    name = Some(args[i + 1].clone());
                    i += 2;
                } else {
                    return reply::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ));
                }
            }
        }
        if let Some(n) = &name {
            if n.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                return reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
        }
        if let Some(creds) = auth {
            if let Err(r) = self.authenticate(creds, proto).await {
                return r;
            }
        }
        if let Some(r) = self.shared.access.hello_refusal(&self.who) {
            return r;
        }
        if proto != self.proto {
            self.proto = proto;
            self.conn = None;
        }
        if let Some(n) = name {
            self.name = (!n.is_empty()).then_some(n);
        }
        let facts = self.shared.health.current().facts;
        let version = facts
            .redis_version
            .unwrap_or_else(|| resp::command::REDIS_VERSION.to_string());
        let role = match facts.role.as_deref() {
            Some("slave") => "replica",
            _ => "master",
        };
        let pairs = vec![
            (Frame::bulk("server"), Frame::bulk("redis")),
            (Frame::bulk("version"), Frame::bulk(version)),
            (Frame::bulk("proto"), Frame::Integer(proto as i64)),
            (Frame::bulk("id"), Frame::Integer(self.id as i64)),
            (Frame::bulk("mode"), Frame::bulk("standalone")),
            (Frame::bulk("role"), Frame::bulk(role)),
            (Frame::bulk("modules"), Frame::Array(vec![])),
        ];
        reply::encode(&if proto == 3 {
            Frame::Map(pairs)
        } else {
            Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        })
    }

    fn client_info_line(&self) -> String {
        self.client_line("client|info", &self.created.elapsed().as_secs().to_string())
    }

    /// Publishes this session's `CLIENT LIST` row (after a change of name,
    /// db, user or protocol).
    fn publish_row(&self) {
        let line = self.client_line("NULL", "{age}");
        if let Ok(mut rows) = self.shared.clients.lock() {
            rows.insert(
                self.id,
                crate::server::ClientRow {
                    created: self.created.into_std(),
                    line,
                },
            );
        }
    }

    fn client_list(&self, args: &[Bytes]) -> Bytes {
        // `CLIENT LIST [TYPE t] [ID id …]`: every session is a normal client.
        let mut ids: Option<Vec<u64>> = None;
        let mut type_ok = true;
        let mut i = 2;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"type") && i + 1 < args.len() {
                type_ok = args[i + 1].eq_ignore_ascii_case(b"normal");
                i += 2;
            } else if args[i].eq_ignore_ascii_case(b"id") {
                let parsed: Option<Vec<u64>> = args[i + 1..]
                    .iter()
                    .map(|a| std::str::from_utf8(a).ok()?.parse().ok())
                    .collect();
                match parsed {
                    Some(v) if !v.is_empty() => ids = Some(v),
                    _ => return reply::error("ERR Invalid client ID"),
                }
                break;
            } else {
                return reply::error("ERR syntax error");
            }
        }
        let mut out = String::new();
        if type_ok {
            if let Ok(rows) = self.shared.clients.lock() {
                for (id, row) in rows.iter() {
                    if ids.as_ref().is_some_and(|v| !v.contains(id)) {
                        continue;
                    }
                    let age = row.created.elapsed().as_secs().to_string();
                    out.push_str(&row.line.replace("{age}", &age));
                }
            }
        }
        reply::encode(&if self.proto == 3 {
            Frame::Verbatim(Bytes::from(format!("txt:{out}")))
        } else {
            Frame::Bulk(Bytes::from(out))
        })
    }

    fn client_line(&self, cmd: &str, age: &str) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let user = self.who.name();
        let multi = self
            .multi
            .as_ref()
            .map(|m| m.cmds.len() as i64)
            .unwrap_or(-1);
        let lib_name = self
            .lib_name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let lib_ver = self
            .lib_ver
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local,
            name,
            age,
            self.db,
            multi,
            cmd,
            user,
            self.proto,
            lib_name,
            lib_ver
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut rows) = self.shared.clients.lock() {
            rows.remove(&self.id);
        }
    }
}

fn has_wait_front(pending: &VecDeque<Slot>) -> bool {
    matches!(
        pending.front(),
        Some(Slot {
            body: Body::Wait(_) | Body::Durable(..),
            ..
        })
    )
}

/// Waits for the front slot's fate: its replies, "never sent", or its
/// deadline. A blocking command with no deadline is given up (as
/// `UNCERTAIN`) when Redis goes down.
async fn wait_front(pending: &mut VecDeque<Slot>, health: &upstream::HealthHandle) -> Outcome {
    if let Some(Slot {
        body: Body::Durable(_, fut),
        ..
    }) = pending.front_mut()
    {
        return Outcome::Journaled(fut.await.map(|_| ()).map_err(|e| e.to_string()));
    }
    let Some(Slot {
        body: Body::Wait(w),
        ..
    }) = pending.front_mut()
    else {
        return std::future::pending().await;
    };
    match w.deadline {
        Some(d) => match tokio::time::timeout_at(d, w.rx.recv()).await {
            Ok(Some(r)) => Outcome::Reply(r),
            Ok(None) => Outcome::NotSent,
            Err(_) => Outcome::Deadline,
        },
        None => {
            let mut h = health.subscribe();
            tokio::select! {
                r = w.rx.recv() => match r {
                    Some(r) => Outcome::Reply(r),
                    None => Outcome::NotSent,
                },
                _ = h.wait_for(|h| h.state == State::Down) => Outcome::Deadline,
            }
        }
    }
}

/// The last of the complete frames in `data` (EXEC's reply after MULTI's
/// `+OK` and the `+QUEUED`s).
fn last_frame(data: &[u8]) -> Option<&[u8]> {
    let limits = Limits::upstream();
    let mut pos = 0;
    let mut last = None;
    while pos < data.len() {
        let n = frame_len(&data[pos..], &limits).ok()??;
        last = Some(&data[pos..pos + n]);
        pos += n;
    }
    last
}

/// Sends `AUTH` for `creds` on `conn` and reads Redis's verdict: an
/// error reply is a refusal (`Rejected`), no reply in time is a timeout.
async fn auth_on(conn: &Conn, creds: &Credentials, deadline: Instant) -> Result<(), ConnectError> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(u) = &creds.user {
        args.push(u.as_bytes());
    }
    args.push(creds.password.as_bytes());
    let budget = deadline.saturating_duration_since(Instant::now());
    match conn.call(&args, budget).await {
        Ok(f) => match f.error_text() {
            Some(t) => Err(ConnectError::Rejected(
                String::from_utf8_lossy(t).into_owned(),
            )),
            None => Ok(()),
        },
        Err(e) => Err(ConnectError::Io {
            addr: "the pooled connection".into(),
            why: format!("AUTH got {e}"),
        }),
    }
}

/// `PEXPIRETIME key`, sent behind a read the near-cache keeps.
fn pexpiretime(key: &Bytes) -> Bytes {
    let mut b = BytesMut::with_capacity(key.len() + 40);
    b.extend_from_slice(b"*2\r\n$11\r\nPEXPIRETIME\r\n$");
    b.extend_from_slice(key.len().to_string().as_bytes());
    b.extend_from_slice(b"\r\n");
    b.extend_from_slice(key);
    b.extend_from_slice(b"\r\n");
    b.freeze()
}
