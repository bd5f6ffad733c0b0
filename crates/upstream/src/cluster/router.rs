//! A [`Conn`] in front of a whole cluster.
//!
//! The router takes batches as a connection does and plans each command:
//! the node it goes to (its keys' slot's primary; keyless ones by the
//! README's table), split by slot and merged ([`super::merge`]), or
//! answered here. Parts are sent at once, in batch order, one batch per
//! node on the router's own connections, so commands to one node keep
//! their order and nodes work in parallel. A task per batch then gathers
//! the parts' replies, follows redirects, and hands the client's replies
//! back in order.
//!
//! Redirects: `MOVED` patches the map (and learns it again) and sends the
//! command to the named node; `ASK` sends `ASKING` and the command there,
//! the map unchanged; `TRYAGAIN` and `CLUSTERDOWN` are tried again after a
//! short pause until the session stops waiting (its command deadline). A
//! transaction a redirect aborted (`EXECABORT`: nothing ran) is sent again
//! whole once the map is learnt again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use resp::frame::encode_command;
use resp::{frame_len, Frame, Limits, Request, RequestDecoder};
use tokio::sync::{mpsc, oneshot, watch};

use super::merge::{merge, Merge, SCAN_NODE_BITS};
use super::slots::key_slot;
use super::Cluster;
use crate::conn::{Batch, BatchReply, Conn, ConnectError, Handshake, Tx};
use crate::endpoint::Endpoint;

/// Redirects and retries one command may take.
const MAX_ATTEMPTS: u32 = 16;

/// Multi-key commands split by slot when their keys are in several.
const SPLIT: &[&str] = &["mget", "mset", "del", "unlink", "exists", "touch"];

/// Opens a router on `cluster`: the map is learnt first if it is not
/// known, and a connection to the default node is opened with `hs`, so a
/// refused login is told now, as by one Redis.
pub(crate) async fn connect(
    cluster: &Arc<Cluster>,
    hs: &Handshake,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    let unreachable = |why: String| ConnectError::Io {
        addr: format!("cluster {}", cluster.seeds().join(",")),
        why,
    };
    tokio::time::timeout(timeout, cluster.ready_map())
        .await
        .map_err(|_| ConnectError::Timeout(format!("cluster {}", cluster.seeds().join(","))))?
        .map_err(unreachable)?;
    let nodes = Arc::new(Nodes {
        hs: hs.clone(),
        timeout,
        conns: Mutex::new(HashMap::new()),
        failed: Mutex::new(HashMap::new()),
        cluster: cluster.clone(),
    });
    nodes.any(&cluster.default_node()).await?;
    let (conn, rx, dead) = Conn::detached();
    let router = Router {
        cluster: cluster.clone(),
        nodes,
        sticky: None,
        last: None,
        ids: HashMap::new(),
    };
    tokio::spawn(router.run(rx, dead));
    Ok(conn)
}

/// After a node could not be reached, commands for it are answered with
/// that failure for this long instead of each waiting out a connect: a
/// dead primary's slots fail fast while the cluster promotes a replica.
const RECONNECT_AFTER: Duration = Duration::from_millis(250);

/// The router's connections, one per node, opened when first needed.
struct Nodes {
    hs: Handshake,
    timeout: Duration,
    conns: Mutex<HashMap<String, Conn>>,
    /// Nodes whose last connect failed: when, and why.
    failed: Mutex<HashMap<String, (tokio::time::Instant, ConnectError)>>,
    cluster: Arc<Cluster>,
}

impl Nodes {
    async fn get(&self, addr: &str) -> Result<Conn, ConnectError> {
        if let Some(c) = self.lock().get(addr).filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        if let Some((at, e)) = self.failed_lock().get(addr) {
            if at.elapsed() < RECONNECT_AFTER {
                return Err(e.clone());
            }
        }
        match Conn::connect_node(&Endpoint::plain(addr), &self.hs, self.timeout).await {
            Ok(c) => {
                self.failed_lock().remove(addr);
                self.cluster.node_reached(addr);
                self.lock().insert(addr.to_string(), c.clone());
                Ok(c)
            }
            Err(e) => {
                // A node gone may be a failover under way: the map will say.
                self.cluster.node_failed(addr, &e.to_string());
                self.cluster.refresh_soon();
                self.failed_lock()
                    .insert(addr.to_string(), (tokio::time::Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// `preferred`, or else the first other primary that can be reached:
    /// for commands any node answers alike (`PING`, `INFO`, …), so one
    /// shard's failure does not fail them.
    async fn any(&self, preferred: &str) -> Result<(String, Conn), ConnectError> {
        let first = match self.get(preferred).await {
            Ok(c) => return Ok((preferred.to_string(), c)),
            Err(e) => e,
        };
        let map = self.cluster.map();
        for p in map.primaries().iter().filter(|p| *p != preferred) {
            if let Ok(c) = self.get(p).await {
                return Ok((p.clone(), c));
            }
        }
        Err(first)
    }

    fn failed_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (tokio::time::Instant, ConnectError)>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn close_all(&self) {
        for c in self.lock().values() {
            c.close();
        }
    }
}

/// Where a part goes.
#[derive(Debug, Clone)]
enum Target {
    /// The primary serving the slot, per the map when sent.
    Slot(u16),
    /// A given node (fan-out, a transaction's `WATCH`).
    Node(String),
    /// This node, or any other primary if it cannot be reached (keyless
    /// commands).
    Any(String),
}

/// One command (or a whole transaction) sent to one node.
#[derive(Debug, Clone)]
struct Part {
    raw: Bytes,
    /// Replies it gets: 1, or a transaction's all.
    count: usize,
    target: Target,
}

/// One client command (or transaction) and how its parts' replies merge.
struct Job {
    parts: Vec<Part>,
    merge: Merge,
    /// Replies the client gets.
    replies: usize,
}

impl Job {
    /// One command to one node.
    fn single(raw: Bytes, target: Target, merge: Merge) -> Job {
        Job {
            parts: vec![Part {
                raw,
                count: 1,
                target,
            }],
            merge,
            replies: 1,
        }
    }

    /// Answered here.
    fn local(reply: Bytes) -> Job {
        Job {
            parts: Vec::new(),
            merge: Merge::Local(reply),
            replies: 1,
        }
    }
}

/// A part's fate.
enum Fate {
    Replied(Bytes),
    /// The connection died after sending: it may have run.
    Lost,
}

struct Router {
    cluster: Arc<Cluster>,
    nodes: Arc<Nodes>,
    /// The node holding this connection's `WATCH`: the transaction after
    /// it must run there.
    sticky: Option<String>,
    /// Once asked `CLIENT ID` (a session's blocking connection): where
    /// its last command went, so `CLIENT UNBLOCK` finds it.
    last: Option<super::LastNode>,
    /// Client ids of its node connections (by `Conn::id`), once asked.
    ids: HashMap<u64, i64>,
}

/// Parts sent to one node in one batch.
struct Sent {
    addr: String,
    raw: Bytes,
    /// (job, part) of each, in order.
    parts: Vec<(usize, usize)>,
    count: usize,
    rx: Option<oneshot::Receiver<BatchReply>>,
}

impl Router {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Batch>,
        mut dead: watch::Receiver<bool>,
    ) {
        loop {
            let batch = tokio::select! {
                b = rx.recv() => b,
                _ = dead.wait_for(|d| *d) => None,
            };
            let Some(batch) = batch else { break };
            self.take(batch).await;
        }
        rx.close();
        self.nodes.close_all();
    }

    /// Plans and sends one batch, and leaves its replies to a task.
    async fn take(&mut self, batch: Batch) {
        let mut buf = BytesMut::from(&batch.raw[..]);
        let mut decoder = RequestDecoder::new(Limits::upstream());
        let mut cmds = Vec::with_capacity(batch.count);
        while let Ok(Some(r)) = decoder.decode(&mut buf) {
            cmds.push(r);
        }
        let jobs = self.plan(&cmds);
        let mut fates: Vec<Vec<Option<Fate>>> = jobs
            .iter()
            .map(|j| j.parts.iter().map(|_| None).collect())
            .collect();
        let mut sent: Vec<Sent> = Vec::new();
        let map = self.cluster.map();
        for (j, job) in jobs.iter().enumerate() {
            for (p, part) in job.parts.iter().enumerate() {
                let addr = match &part.target {
                    Target::Slot(s) => match map.node(*s) {
                        Some(a) => a.to_string(),
                        None => {
                            fates[j][p] = Some(Fate::Replied(error_reply(&format!(
                                "CLUSTERDOWN Hash slot not served (slot {s}: no primary of the cluster serves it)"
                            ))));
                            continue;
                        }
                    },
                    Target::Node(a) => a.clone(),
                    Target::Any(a) => match self.nodes.any(a).await {
                        Ok((addr, _)) => addr,
                        Err(e) => {
                            fates[j][p] = Some(Fate::Replied(not_run(a, &e.to_string())));
                            continue;
                        }
                    },
                };
                match sent.iter_mut().find(|s| s.addr == addr) {
                    Some(s) => {
                        s.parts.push((j, p));
                        s.count += part.count;
                    }
                    None => sent.push(Sent {
                        addr,
                        raw: Bytes::new(),
                        parts: vec![(j, p)],
                        count: part.count,
                        rx: None,
                    }),
                }
            }
        }
        for s in &mut sent {
            let mut raw = BytesMut::new();
            for &(j, p) in &s.parts {
                raw.extend_from_slice(&jobs[j].parts[p].raw);
            }
            s.raw = raw.freeze();
            match self.nodes.get(&s.addr).await {
                Ok(c) => {
                    if let Some(last) = &self.last {
                        // Its id there, asked once per connection, before
                        // the command that may block.
                        let id = match self.ids.get(&c.id()) {
                            Some(id) => Some(*id),
                            None => match c.call(&["CLIENT", "ID"], self.nodes.timeout).await {
                                Ok(Frame::Integer(id)) => {
                                    self.ids.insert(c.id(), id);
                                    Some(id)
                                }
                                _ => None,
                            },
                        };
                        *last.lock().unwrap_or_else(|e| e.into_inner()) =
                            id.map(|id| (s.addr.clone(), id));
                    }
                    s.rx = Some(c.send(s.raw.clone(), s.count))
                }
                Err(e) => {
                    for &(j, p) in &s.parts {
                        fates[j][p] = Some(Fate::Replied(not_run(&s.addr, &e.to_string())));
                    }
                }
            }
        }
        let finish = Finish {
            cluster: self.cluster.clone(),
            nodes: self.nodes.clone(),
        };
        tokio::spawn(finish.run(jobs, fates, sent, batch.tx));
    }

    /// What each command becomes.
    fn plan(&mut self, cmds: &[Request]) -> Vec<Job> {
        let mut jobs = Vec::with_capacity(cmds.len());
        let mut i = 0;
        while i < cmds.len() {
            let args = &cmds[i].args;
            let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
            if name == "multi" {
                // The session sends a transaction whole: MULTI … EXEC.
                let end = (i + 1..cmds.len())
                    .find(|&k| {
                        let n = &cmds[k].args[0];
                        n.eq_ignore_ascii_case(b"exec") || n.eq_ignore_ascii_case(b"discard")
                    })
                    .unwrap_or(cmds.len() - 1);
                let target = match self.sticky.take() {
                    Some(node) => Target::Node(node),
                    None => cmds[i + 1..end]
                        .iter()
                        .find_map(|c| first_slot(&c.args))
                        .map(Target::Slot)
                        .unwrap_or_else(|| Target::Node(self.cluster.default_node())),
                };
                let mut raw = BytesMut::new();
                for c in &cmds[i..=end] {
                    raw.extend_from_slice(&c.raw);
                }
                let count = end + 1 - i;
                jobs.push(Job {
                    parts: vec![Part {
                        raw: raw.freeze(),
                        count,
                        target,
                    }],
                    merge: Merge::One,
                    replies: count,
                });
                i = end + 1;
                continue;
            }
            jobs.push(self.plan_one(&name, &cmds[i]));
            i += 1;
        }
        jobs
    }

    fn plan_one(&mut self, name: &str, cmd: &Request) -> Job {
        let args = &cmd.args;
        let one = |target: Target| Job::single(cmd.raw.clone(), target, Merge::One);
        // Only a few commands are told apart by their subcommand.
        let sub = match name {
            "cluster" | "client" | "script" | "function" | "config" => args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
                .unwrap_or_default(),
            _ => String::new(),
        };
        let fan_out = |merge: Merge| Job {
            parts: self
                .cluster
                .map()
                .primaries()
                .iter()
                .map(|p| Part {
                    raw: cmd.raw.clone(),
                    count: 1,
                    target: Target::Node(p.clone()),
                })
                .collect(),
            merge,
            replies: 1,
        };
        match (name, sub.as_str()) {
            ("cluster", "keyslot") if args.len() == 3 => {
                return Job::local(Bytes::from(format!(":{}\r\n", key_slot(&args[2]))))
            }
            ("cluster", _) => {
                return Job::local(error_reply(
                    "ERR redoubt shows the cluster as a single Redis: connect in standalone (non-cluster) mode; of CLUSTER's subcommands only KEYSLOT is answered",
                ))
            }
            ("client", "id") if args.len() == 2 => {
                let last = self.last.get_or_insert_with(Default::default).clone();
                let id = self.cluster.register_blocker(&last);
                return Job::local(Bytes::from(format!(":{id}\r\n")));
            }
            ("client", "unblock") if (3..=4).contains(&args.len()) => {
                let id = std::str::from_utf8(&args[2])
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok());
                let mut sub = args.clone();
                let target = match id.and_then(|id| self.cluster.blocker(id)) {
                    Some((node, theirs)) => {
                        sub[2] = Bytes::from(theirs.to_string());
                        Target::Node(node)
                    }
                    // Not a router's id: checked by Redis, where it names
                    // no client of ours (0 names nobody).
                    None => {
                        if id.is_some() {
                            sub[2] = Bytes::from_static(b"0");
                        }
                        Target::Any(self.default_node())
                    }
                };
                return Job::single(encode(&sub), target, Merge::One);
            }
            ("asking" | "readonly" | "readwrite", _) if args.len() == 1 => {
                return Job::local(Bytes::from_static(b"+OK\r\n"))
            }
            ("dbsize", _) if args.len() == 1 => return fan_out(Merge::Sum),
            ("keys", _) if args.len() == 2 => return fan_out(Merge::Concat),
            ("randomkey", _) if args.len() == 1 => return fan_out(Merge::AnyOf),
            ("info", _) => return fan_out(Merge::Info),
            ("flushall" | "flushdb", _) => return fan_out(Merge::First),
            ("script", "load" | "flush") => return fan_out(Merge::First),
            ("script", "exists") => return fan_out(Merge::All),
            ("function", "load" | "delete" | "flush" | "restore") => return fan_out(Merge::First),
            // Settings hold for the one Redis clients see: every primary.
            ("config", "set" | "resetstat") => return fan_out(Merge::First),
            ("scan", _) if args.len() >= 2 => return self.plan_scan(cmd),
            ("watch", _) => {
                if let Some(slot) = first_slot(args) {
                    let map = self.cluster.map();
                    self.sticky = map.node(slot).map(str::to_string);
                    return one(Target::Slot(slot));
                }
            }
            ("unwatch", _) => {
                let target = Target::Node(self.default_node());
                self.sticky = None;
                return one(target);
            }
            _ => {}
        }
        let keys = resp::lookup(args)
            .map(|spec| spec.key_indices(args))
            .unwrap_or_default();
        let Some(&first) = keys.first() else {
            return match self.sticky.is_some() {
                true => one(Target::Node(self.default_node())),
                false => one(Target::Any(self.default_node())),
            };
        };
        let first_slot = key_slot(&args[first]);
        if keys.iter().all(|&k| key_slot(&args[k]) == first_slot) || !SPLIT.contains(&name) {
            // Keys in several slots: Redis answers CROSSSLOT itself.
            return one(Target::Slot(first_slot));
        }
        split(name, args)
    }

    /// Where a keyless command goes: the node of this connection's
    /// `WATCH`, else slot 0's primary.
    fn default_node(&self) -> String {
        self.sticky
            .clone()
            .unwrap_or_else(|| self.cluster.default_node())
    }

    fn plan_scan(&self, cmd: &Request) -> Job {
        let map = self.cluster.map();
        let nodes = map.primaries();
        let Some(cursor) = std::str::from_utf8(&cmd.args[1])
            .ok()
            .and_then(|c| c.parse::<u64>().ok())
        else {
            return Job::local(error_reply("ERR invalid cursor"));
        };
        let idx = (cursor & ((1 << SCAN_NODE_BITS) - 1)) as usize;
        let Some(node) = nodes.get(idx) else {
            return Job::local(error_reply(
                "ERR invalid cursor (it names a cluster node redoubt does not know: the cluster changed during the SCAN; start again from 0)",
            ));
        };
        let mut args = cmd.args.clone();
        args[1] = Bytes::from((cursor >> SCAN_NODE_BITS).to_string());
        Job::single(
            encode(&args),
            Target::Node(node.clone()),
            Merge::Scan {
                idx,
                nodes: nodes.len(),
            },
        )
    }
}

/// A multi-key command split into one command per slot, its keys (and
/// `MSET`'s values) in their order.
fn split(name: &str, args: &[Bytes]) -> Job {
    let stride = if name == "mset" { 2 } else { 1 };
    // (slot, positions of its keys among all keys)
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for (pos, chunk) in args[1..].chunks(stride).enumerate() {
        let slot = key_slot(&chunk[0]);
        match groups.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, g)) => g.push(pos),
            None => groups.push((slot, vec![pos])),
        }
    }
    let total = (args.len() - 1) / stride;
    let parts = groups
        .iter()
        .map(|(slot, positions)| {
            let mut sub = vec![args[0].clone()];
            for &p in positions {
                sub.extend_from_slice(&args[1 + p * stride..1 + (p + 1) * stride]);
            }
            Part {
                raw: encode(&sub),
                count: 1,
                target: Target::Slot(*slot),
            }
        })
        .collect();
    let merge = match name {
        "mget" => Merge::Mget {
            positions: groups.into_iter().map(|(_, p)| p).collect(),
            total,
        },
        "mset" => Merge::First,
        _ => Merge::Sum,
    };
    Job {
        parts,
        merge,
        replies: 1,
    }
}

fn first_slot(args: &[Bytes]) -> Option<u16> {
    let spec = resp::lookup(args)?;
    spec.key_indices(args).first().map(|&k| key_slot(&args[k]))
}

fn encode(args: &[Bytes]) -> Bytes {
    let mut raw = BytesMut::new();
    encode_command(&mut raw, args);
    raw.freeze()
}

fn error_reply(text: &str) -> Bytes {
    Bytes::from(format!("-{text}\r\n"))
}

fn not_run(addr: &str, why: &str) -> Bytes {
    error_reply(&format!(
        "ERR redoubt could not reach cluster node {addr} ({why}); the command was not run"
    ))
}

/// What a reply asks of the router.
enum Redirect {
    Moved(u16, String),
    Ask(String),
    Retry,
}

fn redirect(reply: &[u8]) -> Option<Redirect> {
    if reply.first() != Some(&b'-') {
        return None;
    }
    let line = reply.strip_suffix(b"\r\n").unwrap_or(reply);
    let text = std::str::from_utf8(&line[1..]).ok()?;
    let mut words = text.split(' ');
    match words.next()? {
        "MOVED" => {
            let slot = words.next()?.parse().ok()?;
            Some(Redirect::Moved(slot, words.next()?.to_string()))
        }
        "ASK" => {
            words.next()?;
            Some(Redirect::Ask(words.next()?.to_string()))
        }
        "TRYAGAIN" | "CLUSTERDOWN" => Some(Redirect::Retry),
        _ => None,
    }
}

/// Splits `data` into `n` replies (fewer when it holds fewer).
fn replies(data: &Bytes, n: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(n);
    let mut pos = 0;
    while out.len() < n && pos < data.len() {
        match frame_len(&data[pos..], &Limits::upstream()) {
            Ok(Some(len)) => {
                out.push(data.slice(pos..pos + len));
                pos += len;
            }
            _ => break,
        }
    }
    out
}

/// Gathers one batch's replies.
struct Finish {
    cluster: Arc<Cluster>,
    nodes: Arc<Nodes>,
}

impl Finish {
    async fn run(self, jobs: Vec<Job>, mut fates: Vec<Vec<Option<Fate>>>, sent: Vec<Sent>, tx: Tx) {
        for s in sent {
            let Some(rx) = s.rx else { continue };
            let got = match rx.await {
                Ok(r) => Some(r),
                // Never written: safe to send again, once, on a new
                // connection.
                Err(_) => match self.nodes.get(&s.addr).await {
                    Ok(c) => c.send(s.raw.clone(), s.count).await.ok(),
                    Err(_) => None,
                },
            };
            let Some(reply) = got else {
                for &(j, p) in &s.parts {
                    fates[j][p] = Some(Fate::Replied(not_run(
                        &s.addr,
                        "the connection closed before the command was sent",
                    )));
                }
                continue;
            };
            let mut all = replies(&reply.data, reply.received).into_iter();
            for &(j, p) in &s.parts {
                let n = jobs[j].parts[p].count;
                let mine: Vec<Bytes> = all.by_ref().take(n).collect();
                fates[j][p] = Some(if mine.len() < n {
                    Fate::Lost
                } else if n == 1 {
                    Fate::Replied(mine.into_iter().next().unwrap_or_default())
                } else {
                    let mut b = BytesMut::new();
                    mine.iter().for_each(|r| b.extend_from_slice(r));
                    Fate::Replied(b.freeze())
                });
            }
        }
        let mut out = BytesMut::new();
        let mut received = 0;
        let mut lost = false;
        'jobs: for (j, job) in jobs.iter().enumerate() {
            let mut parts = Vec::with_capacity(job.parts.len());
            for (p, part) in job.parts.iter().enumerate() {
                let fate = fates[j][p].take().unwrap_or(Fate::Lost);
                let fate = match fate {
                    Fate::Replied(r) => self.follow(part, r, &tx).await,
                    Fate::Lost => Fate::Lost,
                };
                match fate {
                    Fate::Replied(r) => parts.push(r),
                    Fate::Lost => {
                        lost = true;
                        break 'jobs;
                    }
                }
            }
            out.extend_from_slice(&merge(&job.merge, &parts));
            received += job.replies;
        }
        tx.last(BatchReply::new(out.freeze(), received, lost));
    }

    /// Follows the redirects in `reply` until a node answers for real.
    async fn follow(&self, part: &Part, mut reply: Bytes, tx: &Tx) -> Fate {
        let mut pause = Duration::from_millis(10);
        for _ in 0..MAX_ATTEMPTS {
            let verdict = if part.count == 1 {
                redirect(&reply)
            } else {
                aborted_by_redirect(&reply, part.count)
            };
            let Some(verdict) = verdict else {
                return Fate::Replied(reply);
            };
            if tx.unwanted() {
                return Fate::Replied(reply);
            }
            let (addr, raw, count) = match verdict {
                Redirect::Moved(slot, addr) => {
                    self.cluster.moved(slot, &addr);
                    (addr, part.raw.clone(), part.count)
                }
                Redirect::Ask(addr) => {
                    let mut raw = BytesMut::from(&b"*1\r\n$6\r\nASKING\r\n"[..]);
                    raw.extend_from_slice(&part.raw);
                    (addr, raw.freeze(), part.count + 1)
                }
                Redirect::Retry => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                    if part.count > 1 {
                        // A transaction's slot moved: learn where to.
                        self.cluster.refreshed(Duration::from_millis(500)).await;
                    }
                    let addr = match &part.target {
                        Target::Slot(s) => self.cluster.map().node(*s).map(str::to_string),
                        Target::Node(a) | Target::Any(a) => Some(a.clone()),
                    };
                    let Some(addr) = addr else {
                        return Fate::Replied(reply);
                    };
                    (addr, part.raw.clone(), part.count)
                }
            };
            let conn = match self.nodes.get(&addr).await {
                Ok(c) => c,
                Err(e) => return Fate::Replied(not_run(&addr, &e.to_string())),
            };
            let Ok(got) = conn.send(raw, count).await else {
                return Fate::Replied(not_run(
                    &addr,
                    "the connection closed before the command was sent",
                ));
            };
            let mut rs = replies(&got.data, got.received);
            if rs.len() < count {
                return Fate::Lost;
            }
            if count > part.count {
                // ASKING's own reply.
                rs.remove(0);
            }
            reply = if rs.len() == 1 {
                rs.remove(0)
            } else {
                let mut b = BytesMut::new();
                rs.iter().for_each(|r| b.extend_from_slice(r));
                b.freeze()
            };
        }
        Fate::Replied(reply)
    }
}

/// A transaction's replies: `Retry` when `EXEC` answered `EXECABORT` and a
/// queued command was redirected (nothing ran; it can go again whole).
fn aborted_by_redirect(data: &Bytes, count: usize) -> Option<Redirect> {
    let rs = replies(data, count);
    let exec = rs.last()?;
    if !exec.starts_with(b"-EXECABORT") {
        return None;
    }
    rs[..rs.len() - 1]
        .iter()
        .any(|r| redirect(r).is_some())
        .then_some(Redirect::Retry)
}
