//! Routing: where each forwarded request goes — Redis on the session's
//! upstream connection (batched, pinned under `WATCH`, dedicated when
//! blocking, relayed for push), the outage's local answer, or a refusal.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::{Frame, Request};
use tokio::time::Instant;
use upstream::{Conn, ConnectError, State};

use super::queue::{Body, Wait};
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

    /// The connection forwarded commands go to now; `Err(None)` when the
    /// session must wait for its in-flight commands first.
    async fn target(&mut self) -> Result<Conn, Option<ConnectError>> {
        if self.pinned.is_some() && self.unpin_when_idle {
            if !self.nothing_in_flight() {
                return Err(None);
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
            return Err(None);
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
            None => Err(None),
            Some(Ok(c)) => {
                self.conn = Some(c.clone());
                Ok(c)
            }
            Some(Err(e)) => {
                if e.is_gone() {
                    // Nothing listens where Redis was: have the prober
                    // look now rather than at its next turn.
                    self.shared.health.poke();
                }
                Err(Some(e))
            }
        }
    }

    /// After a dedicated connection (blocking command, WATCH) was refused
    /// because nothing listens where Redis was: true once the prober,
    /// asked to look at once, says Down within the command timeout. The
    /// command is then dispatched again and routed as during the outage
    /// (a durable key served locally) instead of refused for having come a
    /// moment before the prober's verdict.
    async fn down_after_refused(&mut self, e: &upstream::pool::DedicatedError) -> bool {
        match e {
            upstream::pool::DedicatedError::Connect(e)
                if e.is_gone() && self.shared.outage.is_some() =>
            {
                self.shared.health.confirm_gone(self.timeout).await
            }
            _ => false,
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
    pub(super) fn answered_locally(&mut self, route: crate::outage::Route) -> bool {
        match route {
            crate::outage::Route::Upstream => false,
            crate::outage::Route::Local(reply, None) => {
                self.push_ready(reply);
                true
            }
            crate::outage::Route::Local(reply, Some(durable)) => {
                self.flush_batch();
                let deadline = tokio::time::Instant::now() + self.timeout;
                self.push(Body::Durable(reply, durable, deadline));
                true
            }
            // Counted by the outage, with its keyspace's policy.
            crate::outage::Route::Refused(r) => {
                self.push_ready(r.reply());
                true
            }
        }
    }

    /// The outage's decision for `req` in `state`: `None` when it goes to
    /// Redis (or there is no outage serving).
    pub(super) async fn outage_route(
        &mut self,
        req: &Request,
        state: State,
        gated: crate::gate::Gated,
    ) -> Option<crate::outage::Route> {
        let o = self.shared.outage.as_ref()?;
        let local = self.store_session.get_or_insert_with(|| o.session());
        local.set_protocol(self.proto);
        let caller = self.shared.access.caller(&self.who);
        match o
            .route(state, local, self.db, &req.args, &caller, gated)
            .await
        {
            crate::outage::Route::Upstream => None,
            r => Some(r),
        }
    }

    /// With `limits.hold_during_outage_ms`, waits that long at most for
    /// Redis to leave Down. Returns the state then.
    async fn hold_for_redis(&mut self) -> State {
        let hold = Duration::from_millis(self.shared.limits.hold_during_outage_ms);
        let health = self.shared.health.clone();
        let mut rx = health.subscribe();
        // The hot-path state is set before the watch is sent: judging by
        // it, a lagging watch value cannot end the wait early.
        let _ = tokio::time::timeout(hold, rx.wait_for(|_| health.state() != State::Down)).await;
        health.state()
    }

    /// The state `args` meets: the prober's, or Down for a key in a
    /// cluster slot whose primary cannot be reached.
    fn state_for(&self, state: State, args: &[Bytes]) -> State {
        match &self.shared.outage {
            Some(o) => o.state_for(state, args),
            None => state,
        }
    }

    /// True when `req` should wait for Redis rather than be refused now.
    fn may_hold(&self) -> bool {
        self.shared.limits.hold_during_outage_ms > 0 && self.multi.is_none()
    }

    /// Sends `req` to Redis, or where the outage routes it. `gated`: its
    /// command's row, as the gate found it.
    pub(super) async fn forward(
        &mut self,
        req: Request,
        write: bool,
        gated: crate::gate::Gated,
    ) -> Flow {
        let spec = gated.spec;
        let state = self.shared.health.state();
        if state == State::Down
            && req.args.len() == 3
            && req.args[0].eq_ignore_ascii_case(b"publish")
        {
            // Redis is not there to relay it: the subscribers connected
            // here get it, and the reply counts them, as Redis's would.
            let caller = self.shared.access.caller(&self.who);
            match caller.judge(&req.args, &gated) {
                Some(denied) => self.push_ready(denied.reply()),
                None => {
                    let n = self.shared.pubsub.publish(&req.args[1], &req.args[2]);
                    self.push_ready(Bytes::from(format!(":{n}\r\n")));
                }
            }
            return Flow::Go;
        }
        let mut state = self.state_for(state, &req.args);
        let mut route = self.outage_route(&req, state, gated).await;
        let refused_down = |r: &Option<crate::outage::Route>, state: State| match r {
            Some(crate::outage::Route::Refused(crate::gate::Refusal::Unavailable(_))) => true,
            None => state == State::Down,
            _ => false,
        };
        if refused_down(&route, state) && self.may_hold() {
            // Earlier replies go out first; then this command waits,
            // bounded, as a client's offline queue would.
            if !self.pending.is_empty() {
                return Flow::Stall(req);
            }
            state = self.hold_for_redis().await;
            state = self.state_for(state, &req.args);
            route = self.outage_route(&req, state, gated).await;
        }
        if route.is_none() && state != State::Down && self.shared.health.state() == State::Down {
            // Redis went Down while this was routed for Redis: routed again
            // as during the outage, not refused for a timing the client
            // could not see.
            route = self.outage_route(&req, State::Down, gated).await;
        }
        if let Some(r) = route {
            self.answered_locally(r);
            return Flow::Go;
        }
        if let Some(r) = self.down_reply() {
            self.push_ready(r);
            return Flow::Go;
        }
        if self.batch_goes_to_target() {
            // The pipeline's next command, to the connection the batch is
            // for: no connection handle taken and given back per command.
            self.add_to_batch(req, write, spec);
            return Flow::Go;
        }
        let conn = match self.target().await {
            Ok(c) => c,
            Err(None) => return Flow::Stall(req),
            Err(Some(e)) if e.is_gone() => {
                // Redis is not running: whatever the outage serves is
                // served now, not only once the prober has said Down.
                if let Some(r) = self.outage_route(&req, State::Down, gated).await {
                    self.answered_locally(r);
                } else {
                    let reply = self.connect_error(e);
                    self.push_ready(reply);
                }
                return Flow::Go;
            }
            Err(Some(e)) => {
                let reply = self.connect_error(e);
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
        if !matches!(&self.batch, Some(b) if b.conn.id() == conn.id()) {
            self.flush_batch();
            self.batch = Some(self.spare.builder(conn));
        }
        self.add_to_batch(req, write, spec);
        Flow::Go
    }

    /// True when the batch being built is for the connection
    /// [`target`](Self::target) would pick now, and no other connection
    /// has this client's commands in flight.
    fn batch_goes_to_target(&self) -> bool {
        let Some(b) = &self.batch else {
            return false;
        };
        let id = b.conn.id();
        let target = match &self.pinned {
            Some(p) if !self.unpin_when_idle => Some(p.conn.id()),
            Some(_) => None,
            None => self.conn.as_ref().filter(|c| c.is_alive()).map(|c| c.id()),
        };
        target == Some(id) && self.inflight.iter().all(|(c, _)| *c == id)
    }

    /// Adds a command for Redis to the batch being built, with the
    /// near-cache's hidden expiry read after it when its reply is kept.
    fn add_to_batch(
        &mut self,
        req: Request,
        write: bool,
        spec: Option<&'static resp::CommandSpec>,
    ) {
        let fill = self.shared.outage.as_ref().and_then(|o| {
            o.scripts().note(&req.args);
            o.near_fill(self.db, &req.args)
        });
        self.count_upstream(&req.args, spec);
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
        let watched_here = self.local_watch;
        // The store's EXEC ends its WATCH, whatever the route.
        self.local_watch = false;
        if let (Some(o), None) = (self.shared.outage.clone(), &self.pinned) {
            // Not under WATCH (Redis holds those keys' versions): a block
            // of durable commands may be served locally during an outage.
            let cmds: Vec<Vec<Bytes>> = multi.cmds.iter().map(|r| r.args.clone()).collect();
            let state = o.state_for_all(self.shared.health.state(), &cmds);
            let local = self.store_session.get_or_insert_with(|| o.session());
            local.set_protocol(self.proto);
            let caller = self.shared.access.caller(&self.who);
            let route = o.route_multi(state, local, self.db, &cmds, &caller).await;
            if self.answered_locally(route) {
                return Flow::Go;
            }
        }
        if watched_here {
            // The keys were watched in the local store, which was handed
            // back to Redis (and emptied) since: as when a watched key
            // changes, the transaction is not run, and the client retries
            // it against Redis.
            self.unwatch_store().await;
            if self.pinned.is_some() {
                self.unpin_when_idle = true;
            }
            self.push_ready(reply::nil(self.proto, true));
            return Flow::Go;
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
            Ok(_) | Err(None) => {
                self.multi = Some(multi);
                return Flow::Stall(req);
            }
            Err(Some(e)) if e.is_gone() => {
                // Redis is not running: the block is routed as during an
                // outage (served whole locally, or refused whole).
                if let (Some(o), true) = (self.shared.outage.clone(), self.pinned.is_none()) {
                    let local = self.store_session.get_or_insert_with(|| o.session());
                    local.set_protocol(self.proto);
                    let cmds: Vec<Vec<Bytes>> = multi.cmds.iter().map(|r| r.args.clone()).collect();
                    let caller = self.shared.access.caller(&self.who);
                    let route = o
                        .route_multi(State::Down, local, self.db, &cmds, &caller)
                        .await;
                    if self.answered_locally(route) {
                        return Flow::Go;
                    }
                }
                let reply = self.connect_error(e);
                self.push_ready(reply);
                return Flow::Go;
            }
            Err(Some(e)) => {
                let reply = self.connect_error(e);
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
        self.count_upstream(&req.args, resp::lookup(&req.args));
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
        if self.local_watch || self.state_for(self.shared.health.state(), &req.args) == State::Down
        {
            if let Some(o) = self.shared.outage.clone() {
                if !self.pending.is_empty() {
                    return Flow::Stall(req);
                }
                let local = self.store_session.get_or_insert_with(|| o.session());
                local.set_protocol(self.proto);
                let caller = self.shared.access.caller(&self.who);
                if let Some(route) = o.watch_locally(local, self.db, &req.args, &caller).await {
                    self.local_watch = matches!(route, crate::outage::Route::Local(..));
                    self.answered_locally(route);
                    return Flow::Go;
                }
            }
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
                    if self.down_after_refused(&e).await {
                        return Flow::Stall(req);
                    }
                    self.reject();
                    self.push_ready(reply::unavailable_connect(&e.to_string()));
                    return Flow::Go;
                }
            }
        }
        let gated = crate::gate::Gated::of(&req.args);
        self.forward(req, false, gated).await
    }

    /// Forgets a WATCH the local store holds (EXEC, DISCARD, UNWATCH).
    pub(super) async fn unwatch_locally(&mut self) {
        if std::mem::take(&mut self.local_watch) {
            self.unwatch_store().await;
        }
    }

    /// Ends the store session's WATCH.
    async fn unwatch_store(&mut self) {
        if let (Some(o), Some(local)) = (self.shared.outage.clone(), self.store_session.as_mut()) {
            let _ = o
                .store()
                .execute(local, vec![Bytes::from_static(b"UNWATCH")])
                .await;
        }
    }

    pub(super) async fn blocking(&mut self, mut req: Request, mut block_ms: Option<u64>) -> Flow {
        if self.state_for(self.shared.health.state(), &req.args) == State::Down {
            match self.block_locally(&req, block_ms).await {
                Local::Answered => return Flow::Go,
                Local::Stall => return Flow::Stall(req),
                Local::Back(waited) => {
                    // Redis is back: it gets what is left of the block time.
                    let left = block_ms.map(|ms| ms.saturating_sub(waited));
                    if left == Some(0) {
                        if let Some(nil) = timeout_nil(&req.args, self.proto) {
                            self.push_ready(nil);
                            return Flow::Go;
                        }
                    }
                    if let Some(r) = left.and_then(|l| with_block_ms(&req.args, l)) {
                        req = r;
                        block_ms = left;
                    }
                }
                Local::NotHere => {}
            }
        }
        if self.shared.health.state() == State::Down {
            if let Some(nil) = timeout_nil(&req.args, self.proto) {
                // Blocked as Redis would block it: until its own timeout
                // (then nil), or until Redis is back (then sent there).
                // Earlier replies go out first.
                if !self.pending.is_empty() {
                    return Flow::Stall(req);
                }
                let health = self.shared.health.clone();
                let mut rx = health.subscribe();
                let mut shutdown = self.shared.shutdown.clone();
                // By the hot-path state, set before the watch is sent.
                let back = rx.wait_for(|_| health.state() != State::Down);
                let limit = block_ms.map_or(Duration::MAX, Duration::from_millis);
                let started = Instant::now();
                let is_back = tokio::select! {
                    r = tokio::time::timeout(limit, back) => r.is_ok(),
                    _ = shutdown.wait_for(|s| *s) => false,
                };
                // Sent to Redis with what is left of its block time, so the
                // client never waits longer than it asked to in all.
                let left =
                    block_ms.map(|ms| ms.saturating_sub(started.elapsed().as_millis() as u64));
                if !is_back || left == Some(0) {
                    self.push_ready(nil);
                    return Flow::Go;
                }
                if let Some(left) = left {
                    if let Some(r) = with_block_ms(&req.args, left) {
                        req = r;
                        block_ms = Some(left);
                    }
                }
            }
        }
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
                Ok(d) => {
                    self.learn_blocking_id(&d.conn).await;
                    d
                }
                Err(e) => {
                    if self.down_after_refused(&e).await {
                        return Flow::Stall(req);
                    }
                    self.reject();
                    self.push_ready(reply::unavailable_connect(&e.to_string()));
                    return Flow::Go;
                }
            },
        };
        let conn = ded.conn.clone();
        self.count_upstream(&req.args, resp::lookup(&req.args));
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

    /// A blocking command on durable keys while Redis is Down, served
    /// from the local copy: tried at once and after every push to the
    /// local store, until it takes something, its block time passes (nil,
    /// as Redis answers), or Redis is back.
    async fn block_locally(&mut self, req: &Request, block_ms: Option<u64>) -> Local {
        let Some(o) = self.shared.outage.clone() else {
            return Local::NotHere;
        };
        let started = Instant::now();
        let limit = block_ms.map_or(Duration::MAX, Duration::from_millis);
        let mut tried = false;
        // In front of a cluster a shard can come back while the upstream
        // as a whole stayed up: that shows here, not in the health state.
        let mut reach = self
            .shared
            .upstream
            .url()
            .cluster
            .as_ref()
            .map(|c| c.reach_changed());
        loop {
            // Earlier replies go out first.
            if !self.pending.is_empty() {
                return Local::Stall;
            }
            if let Some(r) = reach.as_mut() {
                r.mark_unchanged();
            }
            let local = self.store_session.get_or_insert_with(|| o.session());
            local.set_protocol(self.proto);
            let caller = self.shared.access.caller(&self.who);
            let state = o.state_for(self.shared.health.state(), &req.args);
            let mut pushes = match o
                .try_blocking(state, local, self.db, &req.args, &caller)
                .await
            {
                None if !tried => return Local::NotHere,
                None => return Local::Back(started.elapsed().as_millis() as u64),
                Some(crate::outage::Try::Done(route)) => {
                    self.answered_locally(route);
                    return Local::Answered;
                }
                Some(crate::outage::Try::Wait(p)) => p,
            };
            tried = true;
            let health = self.shared.health.clone();
            let mut rx = health.subscribe();
            let mut shutdown = self.shared.shutdown.clone();
            let left = limit.saturating_sub(started.elapsed());
            // Only a cluster shard is down (the upstream answers).
            let shard_only = health.state() != State::Down;
            let timed_out = tokio::select! {
                _ = pushes.changed() => false,
                _ = rx.wait_for(|_| health.state() != State::Down), if !shard_only => false,
                _ = upstream::cluster::reach_news(reach.as_mut()), if shard_only => false,
                _ = tokio::time::sleep(left) => true,
                _ = shutdown.wait_for(|s| *s) => true,
            };
            if timed_out {
                if let Some(nil) = timeout_nil(&req.args, self.proto) {
                    self.push_ready(nil);
                }
                return Local::Answered;
            }
        }
    }

    /// Counts one command sent to Redis, by its first key's policy.
    fn count_upstream(&mut self, args: &[Bytes], spec: Option<&resp::CommandSpec>) {
        let keyspaces = self.shared.outage.as_ref().map(|o| o.keyspaces());
        self.forwarded.count(keyspaces, args, spec);
    }

    pub(super) async fn tunnel(&mut self, mut client: tls::Stream, req: Request, rest: BytesMut) {
        let url = self.shared.upstream.url();
        let mut moved = url.endpoint().moved();
        // In front of a cluster, SSUBSCRIBE goes to its channel's slot's
        // primary (a later one for another node's slot gets Redis's MOVED).
        let shard_node = url
            .cluster
            .as_ref()
            .filter(|_| req.args.len() > 1 && req.args[0].eq_ignore_ascii_case(b"ssubscribe"))
            .and_then(|c| {
                c.map()
                    .node(upstream::cluster::key_slot(&req.args[1]))
                    .map(upstream::Endpoint::plain)
            });
        let endpoint = shard_node.unwrap_or_else(|| url.endpoint());
        let (mut up, _permit) = match self.shared.upstream.tunnel_to(&self.key(), &endpoint).await {
            Ok(t) => t,
            Err(e) => {
                let _ = tls::send(&mut client, &reply::unavailable_connect(&e.to_string())).await;
                return;
            }
        };
        self.count_upstream(&req.args, resp::lookup(&req.args));
        if tls::send(&mut up, &req.raw).await.is_err() || tls::send(&mut up, &rest).await.is_err() {
            let _ = tls::send(
                &mut client,
                &reply::unavailable_connect("the connection closed during setup"),
            )
            .await;
            return;
        }
        let mut health = self.shared.health.subscribe();
        let mut shutdown = self.shared.shutdown.clone();
        // Disconnected when Redis goes down or Sentinel names another
        // primary, so the client reconnects (to the new one).
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut up) => {}
            _ = health.wait_for(|h| h.state == State::Down) => {}
            _ = moved.wait() => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    }
}

/// How [`Session::block_locally`] ended.
enum Local {
    /// The reply is queued.
    Answered,
    /// Earlier replies must go out first: dispatch again later.
    Stall,
    /// Not served locally: go on as before.
    NotHere,
    /// Redis came back after this many ms of waiting here.
    Back(u64),
}

/// `args` with its block time set to `ms` (re-encoded), for the blocking
/// commands that take one; `None` for others.
fn with_block_ms(args: &[Bytes], ms: u64) -> Option<Request> {
    let name = args[0].to_ascii_lowercase();
    let secs = || Bytes::from(format!("{}.{:03}", ms / 1000, ms % 1000));
    let mut args = args.to_vec();
    match &name[..] {
        b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" | b"brpoplpush" | b"blmove" => {
            *args.last_mut()? = secs();
        }
        b"blmpop" | b"bzmpop" => *args.get_mut(1)? = secs(),
        b"xread" | b"xreadgroup" => {
            let i = args.iter().position(|a| a.eq_ignore_ascii_case(b"block"))?;
            *args.get_mut(i + 1)? = Bytes::from(ms.to_string());
        }
        _ => return None,
    }
    let mut raw = BytesMut::new();
    resp::frame::encode_command(&mut raw, &args);
    Some(Request {
        args,
        raw: raw.freeze(),
    })
}

impl Session {
    /// Asks Redis the id of this session's new connection for blocking
    /// commands, for `CLIENT UNBLOCK` from other clients. Without it (a
    /// user not allowed `CLIENT ID`, no answer in time) the session simply
    /// cannot be unblocked that way.
    async fn learn_blocking_id(&mut self, conn: &Conn) {
        let id = match conn.call(&["CLIENT", "ID"], self.timeout).await {
            Ok(Frame::Integer(id)) => Some(id),
            _ => None,
        };
        if let Ok(mut ids) = self.shared.blocking_ids.lock() {
            match id {
                Some(id) => ids.insert(self.id, id),
                None => ids.remove(&self.id),
            };
        }
    }

    /// `CLIENT UNBLOCK <id> …` names one of Redoubt's sessions: sent to
    /// Redis with the id of that session's blocking connection, or with 0
    /// (no client: Redis answers 0) when it has none. Never with the
    /// client's number, which may be an unrelated connection of Redis's.
    /// Redis still checks the arguments and answers.
    pub(super) fn client_unblock_target(&self, req: Request) -> Request {
        let Some(ours) = req
            .args
            .get(2)
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse::<u64>().ok())
        else {
            // Not a client id: Redis's own error.
            return req;
        };
        let theirs = self
            .shared
            .blocking_ids
            .lock()
            .ok()
            .and_then(|ids| ids.get(&ours).copied())
            .unwrap_or(0);
        let mut args = req.args;
        args[2] = Bytes::from(theirs.to_string());
        let mut raw = BytesMut::new();
        resp::frame::encode_command(&mut raw, &args);
        Request {
            args,
            raw: raw.freeze(),
        }
    }
}

/// What a blocking command answers when its timeout passes with nothing
/// to take; `None` for those that do not wait for data (`WAIT`).
fn timeout_nil(args: &[Bytes], proto: u8) -> Option<Bytes> {
    let name = args[0].to_ascii_lowercase();
    let array = match &name[..] {
        b"blpop" | b"brpop" | b"bzpopmin" | b"bzpopmax" | b"blmpop" | b"bzmpop" | b"xread"
        | b"xreadgroup" => true,
        b"brpoplpush" | b"blmove" => false,
        _ => return None,
    };
    Some(reply::nil(proto, array))
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
