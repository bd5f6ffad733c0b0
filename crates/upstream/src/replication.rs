//! Redoubt as a replica of the upstream Redis: the link that asks for the
//! replication stream (`REPLCONF`, `PSYNC`), receives the RDB of a full
//! resync onto disk and then hands out the stream's commands, in Redis's
//! order, with their replication offsets.
//!
//! The link knows nothing about what is kept: it sends [`LinkEvent`]s on a
//! bounded channel and the receiver (the proxy's replica) loads and
//! applies them. While the receiver is busy the link stops reading, so
//! Redis holds the stream in its replica output buffer, as it would for a
//! slow replica. A broken link reconnects with backoff and asks to continue
//! where it stopped (`PSYNC <replid> <offset+1>`); a refusal to serve a
//! replica at all (ACL without `+psync`, a managed Redis) ends the link
//! with [`LinkEvent::Refused`], said once.

use std::path::PathBuf;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use resp::{parse_frame, Frame, Limits};
use tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::backoff::Backoff;
use crate::conn::{open_stream, ConnectError, Handshake};

/// How often the link reports its offset (`REPLCONF ACK`); Redis drops a
/// replica that stays silent for `repl-timeout` (60 s by default).
const ACK_EVERY: Duration = Duration::from_secs(1);
/// After a diskless full resync Redis starts the stream on the replica's
/// first `REPLCONF ACK` — one that arrives after Redis has put the replica
/// online; an earlier one is ignored. So the link acknowledges this often
/// until the stream has started.
const ACK_UNTIL_ONLINE: Duration = Duration::from_millis(50);
/// With no byte of stream by then, nothing was written since the RDB and
/// the stream is taken as started.
const ONLINE_GRACE: Duration = Duration::from_secs(1);

/// Where and how the link connects.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Where Redis is (plain or TLS).
    pub addr: crate::endpoint::Endpoint,
    /// Authentication and client name sent before `PSYNC`.
    pub handshake: Handshake,
    /// The port announced with `REPLCONF listening-port` (Redoubt's own
    /// listener, shown in Redis's `INFO replication`).
    pub listening_port: u16,
    /// Where a full resync's RDB is written while it arrives.
    pub rdb_path: PathBuf,
    /// Connect and handshake timeout.
    pub connect_timeout: Duration,
    /// Silence from Redis after which the link is taken as broken (Redis
    /// pings its replicas every `repl-ping-replica-period`, 10 s).
    pub read_timeout: Duration,
    /// Largest RDB accepted; past it the sync fails and is retried.
    pub max_rdb_bytes: u64,
}

/// What the link tells its receiver, in order.
#[derive(Debug)]
pub enum LinkEvent {
    /// The handshake succeeded and a resync was asked for.
    Syncing,
    /// A full resync: Redis's whole dataset at `offset` is the RDB at
    /// `path` (complete on disk). Everything held before is replaced by it;
    /// the stream continues from `offset`.
    FullSync {
        /// The RDB file.
        path: PathBuf,
        /// Redis's replication ID.
        replid: String,
        /// The replication offset the RDB stands for.
        offset: u64,
        /// Its size.
        bytes: u64,
    },
    /// A partial resync: the stream continues after `offset`, nothing was
    /// missed.
    Continued {
        /// Redis's replication ID (changed by a failover).
        replid: String,
        /// Where the stream continues.
        offset: u64,
    },
    /// The stream runs: after a full resync, the first bytes Redis sent
    /// after the RDB (what was written meanwhile comes first) or
    /// [`ONLINE_GRACE`] without any. Until then the copy lags Redis by
    /// whatever was written since the RDB was made.
    Online {
        /// Stream offset then.
        offset: u64,
    },
    /// One command of the stream; `offset` is the stream position after it.
    Command {
        /// The command, as Redis propagated it.
        args: Vec<Bytes>,
        /// Stream offset after this command.
        offset: u64,
    },
    /// The link broke or could not be made; it retries by itself.
    /// `unreachable` is true when Redis could not be reached at all
    /// (refused, timed out): what was received before is still the latest.
    Lost {
        /// What happened.
        why: String,
        /// Redis did not answer at TCP level.
        unreachable: bool,
    },
    /// Redis will not serve a replica to these credentials; the link stops.
    Refused(String),
}

/// Why one attempt of the link ended.
enum End {
    Lost(String, bool),
    Refused(String),
    ReceiverGone,
}

/// The link's memory across reconnects.
struct Position {
    replid: Option<String>,
    offset: u64,
}

/// Starts the link; it runs until the receiver is dropped or Redis refuses.
pub fn spawn_link(cfg: LinkConfig, tx: mpsc::Sender<LinkEvent>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pos = Position {
            replid: None,
            offset: 0,
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let end = attempt(&cfg, &tx, &mut pos, &mut backoff).await;
            let event = match end {
                End::ReceiverGone => return,
                End::Refused(why) => {
                    let _ = tx.send(LinkEvent::Refused(why)).await;
                    return;
                }
                End::Lost(why, unreachable) => LinkEvent::Lost { why, unreachable },
            };
            if tx.send(event).await.is_err() {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    })
}

/// Redis's answers to a login it refuses (`AUTH`, `HELLO … AUTH`).
fn is_login_refusal(text: &str) -> bool {
    text.starts_with("WRONGPASS") || text.starts_with("NOAUTH")
}

fn lost(e: impl std::fmt::Display) -> End {
    End::Lost(e.to_string(), false)
}

/// One connection: handshake, resync, stream until it breaks.
async fn attempt(
    cfg: &LinkConfig,
    tx: &mpsc::Sender<LinkEvent>,
    pos: &mut Position,
    backoff: &mut Backoff,
) -> End {
    let mut moved = cfg.addr.moved();
    let mut s = match open_stream(&cfg.addr, &cfg.handshake, cfg.connect_timeout).await {
        Ok(s) => s,
        // A login refused is tried again: a restarted Redis may load its
        // users after it listens, and a password may be mid-rotation. Only
        // a refusal of replication itself stops the link.
        Err(ConnectError::Rejected(e)) if is_login_refusal(&e) => return End::Lost(e, false),
        Err(ConnectError::Rejected(e)) => return End::Refused(e),
        Err(e) => return End::Lost(e.to_string(), true),
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let port = cfg.listening_port.to_string();
    let steps: [&[&str]; 2] = [
        &["REPLCONF", "listening-port", &port],
        &["REPLCONF", "capa", "eof", "capa", "psync2"],
    ];
    for step in steps {
        match call(&mut s, &mut buf, step, cfg.connect_timeout).await {
            Ok(line) if line.starts_with('-') => return refused_or_lost(&line),
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    let (id, from) = match &pos.replid {
        Some(id) => (id.clone(), (pos.offset + 1).to_string()),
        None => ("?".to_string(), "-1".to_string()),
    };
    // A full resync is answered only once Redis starts its RDB: with the
    // default `repl-diskless-sync-delay 5`, 5 s on (newlines meanwhile).
    let reply = match call(&mut s, &mut buf, &["PSYNC", &id, &from], cfg.read_timeout).await {
        Ok(l) => l,
        Err(e) => return e,
    };
    if tx.send(LinkEvent::Syncing).await.is_err() {
        return End::ReceiverGone;
    }
    let mut words = reply.split_whitespace();
    match words.next() {
        Some("+FULLRESYNC") => {
            let (Some(replid), Some(Ok(offset))) = (words.next(), words.next().map(str::parse))
            else {
                return lost(format!("unexpected PSYNC reply '{reply}'"));
            };
            let bytes = match receive_rdb(cfg, &mut s, &mut buf).await {
                Ok(n) => n,
                Err(e) => return e,
            };
            pos.replid = Some(replid.to_string());
            pos.offset = offset;
            let ev = LinkEvent::FullSync {
                path: cfg.rdb_path.clone(),
                replid: replid.to_string(),
                offset,
                bytes,
            };
            if tx.send(ev).await.is_err() {
                return End::ReceiverGone;
            }
        }
        Some("+CONTINUE") => {
            if let Some(new_id) = words.next() {
                pos.replid = Some(new_id.to_string());
            }
            let ev = LinkEvent::Continued {
                replid: pos.replid.clone().unwrap_or_default(),
                offset: pos.offset,
            };
            if tx.send(ev).await.is_err() {
                return End::ReceiverGone;
            }
        }
        _ if reply.starts_with('-') => return refused_or_lost(&reply),
        _ => return lost(format!("unexpected PSYNC reply '{reply}'")),
    }
    backoff.reset();
    let full = reply.starts_with("+FULLRESYNC");
    stream(cfg, &mut s, &mut buf, tx, pos, full, &mut moved).await
}

/// An error reply during the handshake: a permission problem is final,
/// anything else (`LOADING`, `NOMASTERLINK`, …) is retried.
fn refused_or_lost(line: &str) -> End {
    let text = line.trim_start_matches('-').to_string();
    if text.starts_with("NOPERM") || text.starts_with("NOAUTH") || text.starts_with("WRONGPASS") {
        End::Refused(text)
    } else if text.contains("unknown command") {
        End::Refused(format!("{text} (this Redis does not offer replication)"))
    } else {
        End::Lost(text, false)
    }
}

/// Sends one command and reads its one-line reply.
async fn call(
    s: &mut Stream,
    buf: &mut BytesMut,
    args: &[&str],
    timeout: Duration,
) -> Result<String, End> {
    let mut out = BytesMut::new();
    resp::frame::encode_command(&mut out, args);
    s.write_all(&out).await.map_err(lost)?;
    s.flush().await.map_err(lost)?;
    tokio::time::timeout(timeout, read_line(s, buf))
        .await
        .map_err(|_| lost(format!("redis did not answer {} in time", args[0])))?
}

/// Reads one `\r\n`-terminated line, skipping the bare newlines Redis sends
/// as keep-alives while it prepares an RDB.
async fn read_line(s: &mut Stream, buf: &mut BytesMut) -> Result<String, End> {
    loop {
        while buf.first() == Some(&b'\n') {
            buf.advance(1);
        }
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(i + 2);
            return Ok(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        if buf.len() > 64 * 1024 {
            return Err(lost("an over-long line from redis during the handshake"));
        }
        if s.read_buf(buf).await.map_err(lost)? == 0 {
            return Err(lost("redis closed the replication link"));
        }
    }
}

/// Receives a full resync's RDB (`$<len>` or diskless `$EOF:<mark>`) into
/// `cfg.rdb_path`, synced to disk. Returns its size.
async fn receive_rdb(cfg: &LinkConfig, s: &mut Stream, buf: &mut BytesMut) -> Result<u64, End> {
    // Redis may take a while to produce the RDB; it sends a newline every
    // second meanwhile, so silence still means a dead link.
    let header = tokio::time::timeout(cfg.read_timeout, read_line(s, buf))
        .await
        .map_err(|_| lost("redis sent no RDB in time"))??;
    let Some(spec) = header.strip_prefix('$') else {
        return Err(lost(format!("expected the RDB's length, got '{header}'")));
    };
    let tmp = cfg.rdb_path.with_extension("partial");
    if let Some(dir) = tmp.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(lost)?;
    }
    let mut file = tokio::fs::File::create(&tmp).await.map_err(lost)?;
    let mut total: u64 = 0;
    if let Some(mark) = spec.strip_prefix("EOF:") {
        // Diskless: the data ends with the 40-byte mark, and Redis sends
        // nothing after it until our first ACK.
        let mark = mark.as_bytes().to_vec();
        let mut tail: Vec<u8> = Vec::with_capacity(mark.len());
        loop {
            if buf.is_empty() {
                let n = tokio::time::timeout(cfg.read_timeout, s.read_buf(buf))
                    .await
                    .map_err(|_| lost("the RDB transfer stalled"))?
                    .map_err(lost)?;
                if n == 0 {
                    return Err(lost("redis closed the link during the RDB transfer"));
                }
            }
            // Hold back the last mark-length bytes: they may be the mark.
            tail.extend_from_slice(buf);
            buf.clear();
            if tail.len() >= mark.len() && tail[tail.len() - mark.len()..] == mark[..] {
                let keep = tail.len() - mark.len();
                file.write_all(&tail[..keep]).await.map_err(lost)?;
                total += keep as u64;
                break;
            }
            if tail.len() > mark.len() {
                let flush = tail.len() - mark.len();
                file.write_all(&tail[..flush]).await.map_err(lost)?;
                total += flush as u64;
                tail.drain(..flush);
            }
            if total > cfg.max_rdb_bytes {
                return Err(rdb_too_large(cfg));
            }
        }
    } else {
        let len: u64 = spec
            .parse()
            .map_err(|_| lost(format!("expected the RDB's length, got '{header}'")))?;
        if len > cfg.max_rdb_bytes {
            return Err(rdb_too_large(cfg));
        }
        while total < len {
            if buf.is_empty() {
                let n = tokio::time::timeout(cfg.read_timeout, s.read_buf(buf))
                    .await
                    .map_err(|_| lost("the RDB transfer stalled"))?
                    .map_err(lost)?;
                if n == 0 {
                    return Err(lost("redis closed the link during the RDB transfer"));
                }
            }
            let take = (len - total).min(buf.len() as u64) as usize;
            let chunk = buf.split_to(take);
            file.write_all(&chunk).await.map_err(lost)?;
            total += take as u64;
        }
    }
    file.sync_all().await.map_err(lost)?;
    drop(file);
    tokio::fs::rename(&tmp, &cfg.rdb_path).await.map_err(lost)?;
    Ok(total)
}

fn rdb_too_large(cfg: &LinkConfig) -> End {
    lost(format!(
        "the RDB is larger than replica.max_rdb_bytes ({} bytes): not loaded; raise it",
        cfg.max_rdb_bytes
    ))
}

/// The replication stream: commands out, `REPLCONF ACK` back every second
/// and when Redis asks (`REPLCONF GETACK`).
async fn stream(
    cfg: &LinkConfig,
    s: &mut Stream,
    buf: &mut BytesMut,
    tx: &mpsc::Sender<LinkEvent>,
    pos: &mut Position,
    full: bool,
    moved: &mut crate::endpoint::Moved,
) -> End {
    let limits = Limits::upstream();
    let started = tokio::time::Instant::now();
    let mut online = !full;
    if online
        && tx
            .send(LinkEvent::Online { offset: pos.offset })
            .await
            .is_err()
    {
        return End::ReceiverGone;
    }
    let mut tick = tokio::time::interval(if online { ACK_EVERY } else { ACK_UNTIL_ONLINE });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = tokio::time::Instant::now();
    // Stream bytes have come since the RDB.
    let mut streamed = !buf.is_empty();
    loop {
        // Every whole command in the buffer first.
        loop {
            let (frame, n) = match parse_frame(buf, &limits) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => return lost(format!("unreadable replication stream: {e}")),
            };
            buf.advance(n);
            let before = pos.offset;
            pos.offset += n as u64;
            let Some(args) = command_args(frame) else {
                continue;
            };
            if is_getack(&args) {
                if let Err(e) = ack(s, before).await {
                    return e;
                }
                continue;
            }
            let ev = LinkEvent::Command {
                args,
                offset: pos.offset,
            };
            if tx.send(ev).await.is_err() {
                return End::ReceiverGone;
            }
        }
        if !online && (streamed || started.elapsed() >= ONLINE_GRACE) {
            // What Redis wrote since the RDB comes first, in one burst: once
            // what has arrived of it is handed out, the copy is current.
            online = true;
            tick = tokio::time::interval(ACK_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            if tx
                .send(LinkEvent::Online { offset: pos.offset })
                .await
                .is_err()
            {
                return End::ReceiverGone;
            }
        }
        tokio::select! {
            _ = moved.wait() => {
                return lost(format!("the primary moved to {} (sentinel failover); attaching there", cfg.addr.addr()));
            }
            r = s.read_buf(buf) => match r {
                Ok(0) => return lost("redis closed the replication link"),
                Ok(_) => {
                    last_heard = tokio::time::Instant::now();
                    streamed = true;
                }
                Err(e) => return lost(e),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() > cfg.read_timeout {
                    return lost(format!(
                        "no data or ping from redis for {} ms",
                        cfg.read_timeout.as_millis()
                    ));
                }
                if let Err(e) = ack(s, pos.offset).await {
                    return e;
                }
            }
        }
    }
}

async fn ack(s: &mut Stream, offset: u64) -> Result<(), End> {
    let mut out = BytesMut::new();
    resp::frame::encode_command(&mut out, &["REPLCONF", "ACK", &offset.to_string()]);
    s.write_all(&out).await.map_err(lost)?;
    s.flush().await.map_err(lost)
}

fn is_getack(args: &[Bytes]) -> bool {
    args.len() >= 2
        && args[0].eq_ignore_ascii_case(b"replconf")
        && args[1].eq_ignore_ascii_case(b"getack")
}

/// A stream frame as command arguments; anything else (Redis only sends
/// arrays of bulk strings) is skipped.
fn command_args(frame: Frame) -> Option<Vec<Bytes>> {
    let Frame::Array(items) = frame else {
        return None;
    };
    items
        .into_iter()
        .map(|f| match f {
            Frame::Bulk(b) => Some(b),
            _ => None,
        })
        .collect()
}
