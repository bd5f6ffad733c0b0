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
//!
//! The request path reads from the file names: [`crate::gate`] first, then
//! `route.rs` (where a request goes), `queue.rs` (replies back in order, each
//! slot waiting for its fate) and `conn_cmds.rs` (connection-scoped commands
//! answered here). This file holds the session's state, its main loop and
//! the dispatch that ties them together.

mod conn_cmds;
mod queue;
mod route;
mod subscriber;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::{Limits, Request, RequestDecoder};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use upstream::pool::Dedicated;
use upstream::{Conn, Credentials, OutputBudget, PoolKey};

use crate::classify::{classify, Kind, SessionCmd};
use crate::gate::{self, Refusal};
use crate::reply;
use crate::server::Shared;

use queue::{has_blocking, has_wait_front, wait_front, Body, Builder, Outcome, Slot, Spare};

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
    /// The WATCH is held by the outage's local store (Redis was down).
    local_watch: bool,
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
    /// The last answered batch's vectors, for the next batch.
    spare: Spare,
    /// Commands forwarded this turn, added to the metrics when it ends.
    forwarded: crate::metrics::UpstreamTally,
    /// Fires by the deadline of the oldest command waiting on Redis (see
    /// `wait_front`); made at the first.
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
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
        let forwarded = crate::metrics::UpstreamTally::new(&shared.metrics);
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
            local_watch: false,
            unpin_when_idle: false,
            blocking: None,
            store_session: None,
            multi: None,
            reply_mode: ReplyMode::On,
            pending: VecDeque::new(),
            pending_cmds: 0,
            inflight: Vec::new(),
            batch: None,
            spare: Spare::default(),
            forwarded,
            timer: None,
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
    pub(crate) async fn run(mut self, stream: tls::Stream) {
        self.publish_row();
        let (mut rd, mut wr) = stream.into_split();
        let mut inbuf = BytesMut::new();
        // Resumes a partly received command where it stopped: parsing
        // costs time linear in the bytes received, however they trickle in.
        let mut decoder = RequestDecoder::new(self.limits);
        let mut out = BytesMut::new();
        let mut stalled: Option<Request> = None;
        let mut tunnel: Option<Request> = None;
        let mut eof = false;
        let max_inflight = self.shared.limits.max_inflight_per_client;
        let max_query = self.shared.limits.max_query_buffer_bytes;
        let max_output = self.shared.limits.max_output_buffer_bytes;
        let write_timeout = self.shared.limits.write_timeout();
        let mut closing = false;
        // One wait for shutdown for the whole session: made afresh in every
        // select, it registered and unregistered itself twice per command;
        // polled only once woken (see `Woken`).
        let mut stop = upstream::woken::until_set(self.shared.shutdown.clone());
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
            self.forwarded.flush();
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
                match wr.send_within(&out, write_timeout).await {
                    Ok(()) => {}
                    Err(tls::SendError::Failed(_)) => return,
                    Err(tls::SendError::TimedOut) => {
                        tracing::warn!(
                            client = self.id,
                            bytes = out.len(),
                            "client read none of its replies within limits.client_write_timeout_ms; closing"
                        );
                        return;
                    }
                }
                crate::reply::written(&mut out);
            }
            if self.pending.is_empty() {
                if closing || (eof && inbuf.is_empty() && stalled.is_none()) {
                    let _ = wr.shutdown().await;
                    return;
                }
                if let Some(req) = tunnel.take() {
                    let Ok(stream) = rd.reunite(wr) else { return };
                    if subscriber::is_subscribe(&req.args) {
                        self.subscriber(stream, req, inbuf).await;
                    } else {
                        self.tunnel(stream, req, inbuf).await;
                    }
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
            if can_read {
                crate::reply::idle_read_buffer(&mut inbuf);
            }
            if eof && has_blocking(&self.pending) {
                // Gone while blocked: as Redis frees such a client, drop
                // its blocking command, which closes its connection and so
                // unblocks it in Redis, instead of holding that connection
                // (and a value pushed later) for a reader that is not there.
                return;
            }
            let health = self.shared.health.state();
            let event = tokio::select! {
                biased;
                o = wait_front(&mut self.pending, &self.shared.health, &mut self.timer), if has_wait_front(&self.pending) => Event::Front(o),
                r = rd.read_into(&mut inbuf, crate::reply::READ_CHUNK), if can_read => Event::Read(matches!(r, Ok(n) if n > 0)),
                _ = &mut stop, if !closing => Event::Shutdown,
            };
            match event {
                Event::Front(o) => self.complete_front(o, &mut out, health).await,
                Event::Read(true) => {}
                Event::Read(false) => eof = true,
                Event::Shutdown => closing = true,
            }
        }
    }

    /// Counts a refused command (metric and incident).
    fn reject(&self) {
        self.shared.metrics.rejected.increment(1);
        self.shared
            .counters
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                let req = match kind {
                    Kind::ClientUnblock => self.client_unblock_target(req),
                    _ => req,
                };
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
                        self.unwatch_locally().await;
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
                self.unwatch_locally().await;
                self.push_ready(reply::ok());
                Flow::Go
            }
            Kind::Blocking(block) => self.blocking(req, block).await,
            Kind::Tunnel => {
                // A subscriber is accepted while Redis is down and
                // attached when it is back; MONITOR and tracking are not.
                if !subscriber::is_subscribe(&req.args) {
                    if let Some(r) = self.down_reply() {
                        self.push_ready(r);
                        return Flow::Go;
                    }
                }
                self.flush_batch();
                Flow::Tunnel(req)
            }
            Kind::ClientUnblock => {
                let req = self.client_unblock_target(req);
                self.forward(req, false, gated).await
            }
            Kind::Forward(write) => self.forward(req, write, gated).await,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(mut rows) = self.shared.clients.lock() {
            rows.remove(&self.id);
        }
        if let Ok(mut ids) = self.shared.blocking_ids.lock() {
            ids.remove(&self.id);
        }
    }
}
