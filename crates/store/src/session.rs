//! One client connection's state: selected database, protocol version,
//! MULTI queue, WATCHed keys, subscriptions and the channel of push frames
//! (pub/sub messages) the connection loop drains.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use indexmap::IndexSet;
use resp::Frame;
use tokio::sync::{mpsc, Notify};

use crate::store::Shared;

/// Push frames a subscriber may have queued before it counts as too slow
/// and is disconnected (Redis's `client-output-buffer-limit pubsub`).
pub const PUSH_CAPACITY: usize = 4096;

/// A client connection's state. Made by [`crate::Store::session`]; dropping
/// it unregisters the client (CLIENT LIST, subscriptions, WATCHes).
pub struct Session {
    pub(crate) shared: Option<Arc<Shared>>,
    pub(crate) id: u64,
    pub(crate) db: usize,
    pub(crate) resp: u8,
    /// Queued commands while in MULTI.
    pub(crate) multi: Option<Vec<Vec<Bytes>>>,
    /// A command was rejected while queuing: EXEC must abort.
    pub(crate) multi_error: bool,
    /// (db, key, expired-at-watch-time) for each WATCHed key.
    pub(crate) watched: Vec<(usize, Bytes)>,
    pub(crate) channels: IndexSet<Bytes>,
    pub(crate) patterns: IndexSet<Bytes>,
    /// SSUBSCRIBE's shard channels (a namespace of their own).
    pub(crate) shard_channels: IndexSet<Bytes>,
    pub(crate) pushes: mpsc::Receiver<Frame>,
    pub(crate) killed: Arc<AtomicBool>,
    pub(crate) unblock: Arc<Notify>,
    /// Asked about every key a script of this session touches.
    pub(crate) key_hook: Option<crate::scripting::KeyHook>,
    /// Asked about every command a script of this session runs, while a
    /// key hook is set.
    pub(crate) command_hook: Option<crate::scripting::CommandHook>,
    /// A script's own client: its commands are a script's (SORT of a set
    /// by a constant sorts, for a script's result to be deterministic).
    pub(crate) script: bool,
    /// The blocking command being retried was counted in the command
    /// stats when it first blocked: it is one call, however many tries.
    pub(crate) block_counted: bool,
    /// CLIENT REPLY OFF: no replies until ON.
    pub(crate) reply_off: bool,
    /// CLIENT REPLY SKIP: the next command gets no reply.
    pub(crate) skip_next: bool,
    /// The last command's reply is not to be sent (see [`Session::silenced`]).
    pub(crate) silenced: bool,
    /// Replies may come as [`Frame::Encoded`] (see [`Session::set_wire_replies`]).
    pub(crate) wire_replies: bool,
}

impl Session {
    /// This client's id (`CLIENT ID`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The selected database.
    pub fn db(&self) -> usize {
        self.db
    }

    /// Protocol version chosen with HELLO: 2 or 3.
    pub fn protocol(&self) -> u8 {
        self.resp
    }

    /// True while this session WATCHes keys.
    pub fn watching(&self) -> bool {
        !self.watched.is_empty()
    }

    /// Sets the protocol version, for a session whose HELLO was answered
    /// elsewhere (a proxy serving some commands from this store).
    pub fn set_protocol(&mut self, resp: u8) {
        self.resp = if resp == 3 { 3 } else { 2 };
    }

    /// Lets replies to this session come already encoded
    /// ([`Frame::Encoded`]): for a caller that only writes replies out,
    /// never takes one apart. A transaction's replies are encoded
    /// with it, a script's client never gets them.
    pub fn set_wire_replies(&mut self, on: bool) {
        self.wire_replies = on;
    }

    /// True while a MULTI is open.
    pub fn in_multi(&self) -> bool {
        self.multi.is_some()
    }

    /// True when the reply of the command just executed must not be sent
    /// (`CLIENT REPLY OFF` or `SKIP`); its effects are journaled all the same.
    pub fn silenced(&self) -> bool {
        self.silenced
    }

    /// Number of channel and pattern subscriptions.
    pub fn subscriptions(&self) -> usize {
        self.channels.len() + self.patterns.len() + self.shard_channels.len()
    }

    /// Pub/sub messages for this client, to be written to its socket
    /// between replies. The connection loop selects on this alongside reads.
    pub fn pushes(&mut self) -> &mut mpsc::Receiver<Frame> {
        &mut self.pushes
    }

    /// True after `CLIENT KILL` named this client, or when it fell too far
    /// behind on pushes: the connection loop should close the connection.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Sets (or clears) the hook asked about each key a script run by this
    /// session is about to touch: see [`crate::KeyAccess`]. Used by the
    /// proxy to run scripts on a partial local copy.
    pub fn set_key_hook(&mut self, hook: Option<crate::scripting::KeyHook>) {
        self.key_hook = hook;
    }

    /// Sets (or clears) the hook asked, while a key hook is set, about each
    /// command a script of this session runs: the proxy checks the client's
    /// permissions there, as Redis checks each `redis.call` against the
    /// user's ACL. A refusal fails that command, as in Redis.
    pub fn set_command_hook(&mut self, hook: Option<crate::scripting::CommandHook>) {
        self.command_hook = hook;
    }

    /// Records the peer address shown by `CLIENT LIST` (`addr=`).
    pub fn set_addr(&mut self, addr: &str) {
        if let Some(s) = &self.shared {
            s.defer(|d| d.addrs.push((self.id, addr.to_string())));
            // Applied now unless a script holds the lock.
            if let Ok(mut inner) = s.inner.try_lock() {
                s.settle(&mut inner);
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(s) = self.shared.take() else {
            return;
        };
        match s.inner.try_lock() {
            Ok(mut inner) => {
                s.settle(&mut inner);
                inner.unregister(self);
            }
            Err(_) => {
                // A script holds the lock: what unregistering needs is
                // handed over, applied at the next lock.
                let (_tx, rx) = mpsc::channel(1);
                let gone = Session {
                    shared: None,
                    id: self.id,
                    db: self.db,
                    resp: self.resp,
                    multi: None,
                    multi_error: false,
                    watched: std::mem::take(&mut self.watched),
                    channels: std::mem::take(&mut self.channels),
                    patterns: std::mem::take(&mut self.patterns),
                    shard_channels: std::mem::take(&mut self.shard_channels),
                    pushes: rx,
                    killed: self.killed.clone(),
                    unblock: self.unblock.clone(),
                    key_hook: None,
                    command_hook: None,
                    script: false,
                    block_counted: false,
                    reply_off: false,
                    skip_next: false,
                    silenced: false,
                    wire_replies: false,
                };
                s.defer(|d| d.departures.push(gone));
            }
        };
    }
}
