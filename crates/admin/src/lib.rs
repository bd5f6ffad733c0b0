//! The admin HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `/incidents` and a status page at `/`.
//!
//! It only reads: state comes from the health watch and from closures the
//! binary supplies, so no data-path logic lives here.
//!
//! # Layout
//! - [`AdminState`]: what the endpoints read.
//! - [`readiness`]: DESIGN's `/readyz` table as a function.
//! - [`serve`]: binds the HTTP server and starts it.
//! - [`server`]: the accept loop and its bounds ([`AdminLimits`]):
//!   connections, header and idle timeouts.
//! - `idle` (private): the idle timeout on a connection's reads and writes.
//! - [`authorized`]: the `Authorization: Bearer` check.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod idle;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use upstream::{HealthHandle, State};

pub use server::AdminLimits;

/// Renders the Prometheus text.
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;
/// Builds the `/status` JSON.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// Upstream health.
    pub health: HealthHandle,
    /// True when `[[keyspace]]` entries with `cache`/`durable` exist, which
    /// keeps `/readyz` at 200 (degraded) during an outage.
    pub local_keyspaces: bool,
    /// Prometheus text for `/metrics`.
    pub metrics: RenderFn,
    /// JSON for `/status`.
    pub status: StatusFn,
    /// JSON for `/incidents`.
    pub incidents: StatusFn,
    /// Bearer token required on everything but `/healthz` and `/readyz`.
    pub token: Option<String>,
    /// `POST /admin/replay`: asks for a replay attempt now and returns the
    /// journal's state; `None` when there is no journal to replay.
    pub replay: Option<StatusFn>,
    /// Why writes are being refused right now (journal full or failed),
    /// if they are: `/readyz` then says degraded, with the reason.
    pub writes_refused: Option<RefusingFn>,
}

/// Why writes are refused now, or `None`.
pub type RefusingFn = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// The `/readyz` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Should a load balancer send traffic here?
    pub ready: bool,
    /// `up`, `down`, `writes_down`, `recovering`, `standalone`.
    pub state: &'static str,
    /// Serving, but not everything (local keyspaces only).
    pub degraded: bool,
    /// Why not fully ready.
    pub reason: String,
}

/// DESIGN's `/readyz` table.
pub fn readiness(
    state: State,
    local_keyspaces: bool,
    reason: &str,
    writes_refused: Option<&str>,
) -> (StatusCode, Readiness) {
    let (ready, degraded) = match state {
        State::Up | State::Standalone => (true, false),
        State::Down | State::WritesDown | State::Recovering => (local_keyspaces, true),
    };
    // Reads are still served, so not unready; but a balancer and a
    // person must see that writes are not.
    let degraded = degraded || writes_refused.is_some();
    let reason = match writes_refused {
        Some(why) => format!("writes refused: {why}"),
        None if ready && !degraded => String::new(),
        None => reason.to_string(),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Readiness {
            ready,
            state: state.as_str(),
            degraded,
            reason,
        },
    )
}

/// A running admin server.
pub struct AdminHandle {
    /// Where it listens.
    pub local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    join: tokio::task::JoinHandle<()>,
}

impl AdminHandle {
    /// Stops the server.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.join.await;
    }
}

/// Binds `listen` and serves the endpoints, within `limits`, until
/// stopped.
pub async fn serve(
    listen: &str,
    limits: AdminLimits,
    state: AdminState,
) -> std::io::Result<AdminHandle> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/incidents", get(incidents))
        .route("/", get(page))
        .route("/admin/replay", post(replay))
        .with_state(state);
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let join = tokio::spawn(server::run(listener, app, limits, stop_rx));
    Ok(AdminHandle {
        local_addr,
        stop,
        join,
    })
}

/// Whether `headers` carry the admin token, when one is set:
/// `Authorization: Bearer <token>`, the scheme in any case (RFC 7235 makes
/// it case-insensitive, and some clients send `bearer`).
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .is_some_and(|(scheme, given)| {
            scheme.eq_ignore_ascii_case("bearer") && same_secret(given.trim_start(), token)
        })
}

/// Compares two secrets in time that does not depend on where they
/// differ: `==` stops at the first differing byte, which lets an attacker
/// on the network find the token byte by byte. Hashing first also hides
/// the token's length.
fn same_secret(given: &str, token: &str) -> bool {
    let (a, b) = (Sha256::digest(given), Sha256::digest(token));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "admin token missing or wrong: request refused; send 'Authorization: Bearer <admin.token>'\n",
    )
        .into_response()
}

async fn readyz(AxState(s): AxState<AdminState>) -> Response {
    let h = s.health.current();
    let refusing = s.writes_refused.as_ref().and_then(|f| f());
    let (code, body) = readiness(h.state, s.local_keyspaces, &h.reason, refusing.as_deref());
    (code, Json(body)).into_response()
}

async fn metrics(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        (s.metrics)(),
    )
        .into_response()
}

async fn status(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    Json((s.status)()).into_response()
}

async fn incidents(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    Json((s.incidents)()).into_response()
}

async fn replay(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    match &s.replay {
        Some(f) => (StatusCode::ACCEPTED, Json(f())).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no journal to replay: no durable or cache keyspace is configured, or redoubt runs standalone\n",
        )
            .into_response(),
    }
}

async fn page(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    let status = (s.status)();
    let pretty = serde_json::to_string_pretty(&status).unwrap_or_default();
    let h = s.health.current();
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Redoubt</title>\
         <meta http-equiv=refresh content=2></head><body style=\"font-family:sans-serif\">\
         <h1>Redoubt: {}</h1><p>{}</p><pre>{}</pre></body></html>",
        h.state.as_str(),
        escape(&h.reason),
        escape(&pretty)
    ))
    .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_the_token_must_match_exactly() {
        let token = Some("s3cret");
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer   s3cret",
        ] {
            assert!(authorized(token, &with_auth(ok)), "{ok}");
        }
        for bad in [
            "Bearer wrong",
            "Bearer s3cre",
            "Bearer s3cret2",
            "Bearer S3CRET",
            "Bearer ",
            "Bearers3cret",
            "Basic s3cret",
            "s3cret",
        ] {
            assert!(!authorized(token, &with_auth(bad)), "{bad}");
        }
        assert!(!authorized(token, &HeaderMap::new()));
        assert!(authorized(None, &HeaderMap::new()), "no token, no check");
    }

    #[test]
    fn readyz_follows_design_table() {
        for (state, local, code, ready, degraded) in [
            (State::Up, false, 200, true, false),
            (State::Standalone, false, 200, true, false),
            (State::Up, true, 200, true, false),
            (State::Down, true, 200, true, true),
            (State::WritesDown, true, 200, true, true),
            (State::Recovering, true, 200, true, true),
            (State::Down, false, 503, false, true),
            (State::WritesDown, false, 503, false, true),
            (State::Recovering, false, 503, false, true),
        ] {
            let (c, r) = readiness(state, local, "why", None);
            assert_eq!(
                (c.as_u16(), r.ready, r.degraded),
                (code, ready, degraded),
                "{state:?} local={local}"
            );
            assert_eq!(r.state, state.as_str());
            // Refused writes always show, whatever the state.
            let (_, r) = readiness(state, local, "why", Some("journal full"));
            assert!(r.degraded && r.reason == "writes refused: journal full");
        }
    }
}
