//! Routing: where each forwarded request goes — Redis on the session's
//! upstream connection (batched, pinned under `WATCH`, dedicated when
//! blocking, relayed for push), the outage's local answer, or a refusal.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::Request;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use upstream::{Conn, ConnectError, State};

use super::queue::{Body, Builder, Wait};
use super::{Flow, Session};
use crate::classify::{is_write, Kind};
use crate::reply;

impl Session {
    /// True when commands may go to `conn` without overtaking in-flight
    /// commands on another connection.
    fn may_use(&self, conn: &Conn) -> bool {
        self.inflight.iter().all(|(c, _)| *c == conn.id())
            && self.batch.as_ref().is_none_or(|b| b.conn.id() == conn.id())
    }

    pub(super) fn nothing_in_flight(&self) -> bool {
        self.inflight.is_empty() && self.batch.is_none()
    }

    pub(super) fn down_reply(&mut self) -> Option<Bytes> {
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

    pub(super) fn connect_error(&self, e: ConnectError) -> Bytes {
        self.reject();
        match e {
            ConnectError::Rejected(text) => reply::error(text),
            other => reply::unavailable_connect(&other.to_string()),
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
            // Counted by the outage, with its keyspace's policy.
            crate::outage::Route::Refused(r) => {
                self.push_ready(r.reply());
                true
            }
        }
    }

    pub(super) async fn forward(&mut self, req: Request, write: bool) -> Flow {
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

    pub(super) fn queue_in_multi(&mut self, req: Request, kind: Kind) {
        let Some(multi) = self.multi.as_mut() else {
            return;
        };
        let name = String::from_utf8_lossy(&req.args[0]).to_lowercase();
        let err = match kind {
            Kind::Session(_) | Kind::Tunnel => Some(format!(
                "ERR '{name}' inside MULTI is not supported through redoubt; the transaction will be discarded"
            )),
            // Redis refuses what it is sent while busy, flagging the
            // transaction: EXEC then answers EXECABORT, as Redis would.
            _ => self.shared.health.busy(),
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

    pub(super) async fn exec(&mut self, req: Request) -> Flow {
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

    pub(super) async fn watch(&mut self, req: Request) -> Flow {
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

    pub(super) async fn blocking(&mut self, req: Request, block_ms: Option<u64>) -> Flow {
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

    pub(super) async fn tunnel(&mut self, mut client: TcpStream, req: Request, rest: BytesMut) {
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
