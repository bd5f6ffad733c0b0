//! Blocking pops on durable keys while Redis is Down: a queue's workers
//! go on taking jobs from the local copy. Each try runs the command once,
//! without blocking (as inside `MULTI`), on the replica's exact copy under
//! the order lock; what it takes is journaled like any local write. When
//! there is nothing to take, the session waits for a push to the local
//! store (or its timeout, or Redis's return) and tries again.

use bytes::Bytes;
use resp::Frame;
use upstream::State;

use super::{Outage, Route};
use crate::policy::Policy;

/// One try of a blocking command during an outage.
pub enum Try {
    /// Answered (served or refused).
    Done(Route),
    /// Nothing to take yet: wait for a push with this, then try again.
    Wait(store::Pushes),
}

impl Outage {
    /// One non-blocking try of the blocking command `args` on durable keys
    /// while Redis is Down; `None` when the outage does not serve it here
    /// (keys not all durable, no exact copy): the caller goes on as before.
    pub async fn try_blocking(
        &self,
        state: State,
        session: &mut store::Session,
        db: u32,
        args: &[Bytes],
        caller: &crate::access::Caller<'_>,
    ) -> Option<Try> {
        // Read before anything is decided, checked under the order lock:
        // `state` may be from before a hand-back that emptied the store.
        let era = self.era();
        if state != State::Down {
            return None;
        }
        let keys = Self::keys(args);
        if keys.is_empty()
            || !keys
                .iter()
                .all(|k| self.keyspaces.policy(k) == Policy::Durable)
        {
            return None;
        }
        // Decided on an exact copy only.
        self.complete_copy(&keys)?;
        let name = resp::lookup(args).map(|s| s.name)?;
        if !store::implements(name) {
            return None;
        }
        if let Some(denied) = caller.check(args) {
            self.counters
                .rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Some(Try::Done(Route::Refused(denied)));
        }
        if let Some(refused) = self.durable_write_refused() {
            return Some(Try::Done(refused));
        }
        let _order = self.order.lock().await;
        if self.forgotten(era) {
            // Redis has it all again: the command goes there.
            return None;
        }
        // Made before the try: a push right after it is not missed.
        let pushes = self.store.watch_pushes();
        self.select(session, db).await;
        let seeded = self.materialize(db, &keys);
        if !self.all_whole(db, &keys, &seeded) {
            return Some(Try::Done(self.refuse("value unknown locally")));
        }
        // Inside MULTI a blocking command takes what is there or answers
        // nil at once, as in Redis.
        let out = match self.run_transaction(session, &[args.to_vec()]).await {
            Ok(out) => out,
            Err(refused) => return Some(Try::Done(Route::Local(refused, None))),
        };
        let reply = match out.reply {
            Frame::Array(mut v) if v.len() == 1 => v.remove(0),
            other => other,
        };
        if out.effects.is_empty() {
            if reply.is_error() {
                return Some(Try::Done(Route::Local(reply.to_bytes(), None)));
            }
            // Nothing to take.
            return Some(Try::Wait(pushes));
        }
        self.counters
            .served_locally
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let durable = self.journal_effects(db, &out.effects);
        Some(Try::Done(Route::Local(reply.to_bytes(), Some(durable))))
    }
}
