//! Everything that talks to the upstream Redis: where it is, whether it is
//! healthy, and the connections commands travel on.
//!
//! Only the health prober decides whether Redis is Down; a broken data
//! connection is just reconnected (with jittered exponential backoff, so a
//! fleet of proxies never stampedes a recovering Redis).
//!
//! # Layout
//! - [`url`]: [`UpstreamUrl`], parsing `redis[s]://[user:pass@]host:port[/db]`.
//! - [`endpoint`]: [`Endpoint`], where connections go, plain or TLS; every
//!   connection to Redis is opened by [`Endpoint::connect`] (the `tls`
//!   crate's `connect` underneath).
//! - [`conn`]: [`Conn`], one pipelined connection: batches of raw commands
//!   in, raw replies out, in order, with per-batch fates (answered, lost
//!   after sending, never sent).
//! - [`pool`]: [`Upstream`], pools of shared connections per user, db and
//!   protocol, and the capped supply of dedicated connections.
//! - [`health`]: [`HealthConfig`], [`Health`], the prober and its
//!   hysteresis.
//! - [`replication`]: the replication link (`REPLCONF`, `PSYNC`): a full
//!   resync's RDB onto disk, then the stream's commands with offsets.
//! - [`replica_face`]: what a Sentinel finds at the port the replication
//!   link announces: a replica that is never promoted.
//! - [`sentinel`]: [`Sentinel`](sentinel::Sentinel), the primary of a
//!   `redis+sentinel://` upstream, followed through failovers.
//! - [`cluster`]: [`Cluster`](cluster::Cluster), a `redis+cluster://`
//!   upstream's slot map, and the router a connection to it is.
//! - [`backoff`]: jittered exponential backoff.
//! - [`woken`]: [`Woken`](woken::Woken), a future polled again only once
//!   it asked to be (rare events waited for beside the work).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod backoff;
pub mod cluster;
pub mod conn;
pub mod endpoint;
pub mod health;
pub mod pool;
pub mod replica_face;
pub mod replication;
pub mod sentinel;
pub mod url;
pub mod woken;

pub use conn::{BatchReply, Conn, ConnectError, Credentials, Handshake, OutputBudget, Replies};
pub use endpoint::Endpoint;
pub use health::{Health, HealthConfig, HealthHandle, ServerFacts, State};
pub use pool::{PoolKey, Upstream, UpstreamConfig};
pub use url::{UpstreamUrl, UrlError};
