//! The data path: accept clients, read their commands, route each one, and
//! answer in order, always within a deadline.
//!
//! One request's way: socket → [`resp::parse_request`] → [`gate`] (arity,
//! keys; permissions for what Redoubt answers itself) → [`classify`] →
//! route (connection-scoped commands answered here; the rest batched onto
//! the session's upstream connection) → replies back in order, each bounded
//! by `command_timeout_ms`.
//!
//! # Layout
//! - [`config`]: [`LimitsConfig`], the `[limits]` section.
//! - [`gate`]: the one check every request passes first, and
//!   [`gate::Refusal`], every refusal rendered in one place.
//! - [`classify`]: what kind of command this is ([`classify::Kind`]).
//! - [`reply`]: the replies Redoubt itself writes (`-UNAVAILABLE`,
//!   `-UNCERTAIN`, `HELLO`, `CLIENT INFO`).
//! - [`session`]: one client connection: its state, main loop and dispatch
//!   (`session/mod.rs`), then routing (`route.rs`), the ordered reply queue
//!   (`queue.rs`) and the connection-scoped commands (`conn_cmds.rs`).
//! - [`server`]: [`Proxy`], the listener, client limits and shutdown.
//! - [`standalone`]: no upstream: the local store serves everything and
//!   every write is journaled before its reply.
//! - [`incident`]: the incident log (`incidents.jsonl`, `GET /incidents`).
//! - [`metrics`]: metric names and pre-registered handles.
//! - [`outage`]: durable keyspaces served locally while Redis is not Up,
//!   journaled, and replayed when it is back.
//! - `pubsub`: the local subscribers, for `PUBLISH` while Redis is down.
//! - [`policy`]: keyspace policies and what commands may do during an
//!   outage (a table).
//! - [`replay`]: puts the journal back into Redis, exactly once, in order.
//! - [`replica`]: the durable keyspaces kept as a Redis replica keeps
//!   them (`PSYNC`, the RDB, the stream): values and absence for an outage.
//! - [`near_cache`]: byte-bounded LRU of values seen while Up, kept
//!   fresh by Redis's client-side caching invalidations.
//! - [`scripts`]: the scripts clients sent, by SHA1, for `EVALSHA`
//!   during an outage and for a Redis that returns without them.
//! - [`writer`]: the outage-writer lease: at most one Redoubt in front of
//!   a Redis takes durable writes during an outage.
//! - [`access`]: `[auth]`: logins (Redis's users remembered as salted
//!   hashes, or Redoubt's own) and the permission check on local data.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access;
pub mod classify;
pub mod config;
pub mod gate;
pub mod incident;
pub mod metrics;
pub mod near_cache;
pub mod outage;
pub mod policy;
pub(crate) mod prehashed;
pub(crate) mod pubsub;
pub mod replay;
pub mod replica;
pub mod reply;
pub mod scripts;
pub mod server;
pub mod session;
pub mod shard_replicas;
pub mod standalone;
pub mod writer;

pub use config::LimitsConfig;
pub use server::{Proxy, ProxyHandle, ProxySettings, TlsListen};
