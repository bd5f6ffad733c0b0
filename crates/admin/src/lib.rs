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
//! - [`history`]: the last minutes of traffic for the status page, sampled
//!   from `/metrics` once a second into a ring buffer (`/history`).
//! - [`authorized`]: the `Authorization: Bearer` or `Basic` check.
//! - `page.html` (private): the status page at `/`, one file with its CSS
//!   and script inline, no build step; it reads `/status`, `/incidents`
//!   and `/history` every 2 s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod history;
mod idle;
pub mod server;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use upstream::{HealthHandle, State};

pub use history::History;
pub use server::AdminLimits;

/// The status page: static, so it is served as is and fetches the JSON
/// itself (no templating that could mis-escape a reason text).
const PAGE: &str = include_str!("page.html");

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
    let history = Arc::new(History::new());
    let render = state.metrics.clone();
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/incidents", get(incidents))
        .route("/history", get(history_json))
        .route("/", get(page))
        .route("/admin/replay", post(replay))
        .layer(axum::Extension(history.clone()))
        .with_state(state);
    let listener = TcpListener::bind(listen).await?;
    let local_addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    tokio::spawn(sample(render, history, stop_rx.clone()));
    let join = tokio::spawn(server::run(listener, app, limits, stop_rx));
    Ok(AdminHandle {
        local_addr,
        stop,
        join,
    })
}

/// Takes a sample of `/metrics` into `history` every
/// [`history::INTERVAL`] until the server stops. Its own task: the data
/// path never waits for it, and a slow render only delays a point.
async fn sample(render: RenderFn, history: Arc<History>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(history::INTERVAL);
    // After a stall, one point spanning the gap, not a burst of catch-up
    // points a few microseconds apart.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let text = render();
        history.record(
            &text,
            std::time::Instant::now(),
            std::time::SystemTime::now(),
        );
    }
}

/// Whether `headers` carry the admin token, when one is set:
/// `Authorization: Bearer <token>`, or `Basic` with the token as the
/// password and any user name (what a browser sends after its login
/// prompt, so a person can open the status page); the scheme in any case
/// (RFC 7235 makes it case-insensitive, and some clients send `bearer`).
pub fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some((scheme, given)) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
    else {
        return false;
    };
    let given = given.trim_start();
    if scheme.eq_ignore_ascii_case("bearer") {
        return same_secret(given, token);
    }
    if scheme.eq_ignore_ascii_case("basic") {
        return basic_password(given).is_some_and(|password| same_secret(&password, token));
    }
    false
}

/// The password of a `Basic` credential (`base64(user:password)`, RFC
/// 7617); the user name is ignored, there is only one token. `None` when
/// it is not base64 of UTF-8 with a colon.
fn basic_password(credentials: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.split_once(':')
        .map(|(_, password)| password.to_string())
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
        "admin token missing or wrong: request refused; send 'Authorization: Bearer <admin.token>' \
         (or Basic auth with admin.token as the password)\n",
    )
        .into_response()
}

/// The page's refusal asks for Basic credentials, so a browser shows its
/// login prompt (any user name, `admin.token` as the password) and then
/// sends them with the page's own requests to `/status` and the rest. The
/// JSON endpoints do not ask: a script polling them should fail, not have
/// a prompt pop up.
fn unauthorized_page() -> Response {
    let mut r = unauthorized();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"redoubt\", charset=\"UTF-8\""),
    );
    r
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

async fn history_json(
    AxState(s): AxState<AdminState>,
    axum::Extension(history): axum::Extension<Arc<History>>,
    headers: HeaderMap,
) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized();
    }
    Json(history.to_json()).into_response()
}

async fn page(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    if !authorized(s.token.as_deref(), &headers) {
        return unauthorized_page();
    }
    Html(PAGE).into_response()
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
    fn basic_auth_takes_the_token_as_password_with_any_user_name() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let token = Some("s3cret");
        for ok in [
            format!("Basic {}", b64("admin:s3cret")),
            format!("basic {}", b64("anyone:s3cret")),
            format!("BASIC {}", b64(":s3cret")),
        ] {
            assert!(authorized(token, &with_auth(&ok)), "{ok}");
        }
        for bad in [
            format!("Basic {}", b64("admin:wrong")),
            format!("Basic {}", b64("s3cret")),
            format!("Basic {}", b64("admin:s3cret2")),
            format!("Basic {}", b64("s3cret:")),
            "Basic !!!not-base64".to_string(),
            format!("Digest {}", b64("admin:s3cret")),
        ] {
            assert!(!authorized(token, &with_auth(&bad)), "{bad}");
        }
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
