//! The connection-scoped commands Redoubt answers itself, never forwarded:
//! `AUTH`, `HELLO`, `SELECT`, `RESET`, `QUIT`, `CLIENT …` and the
//! `CLIENT LIST` rows every session publishes.

use bytes::{Bytes, BytesMut};
use resp::{Frame, Request};
use tokio::time::Instant;
use upstream::{Conn, ConnectError, Credentials, PoolKey, State};

use super::queue::Body;
use super::{Flow, ReplyMode, Session};
use crate::classify::SessionCmd;
use crate::reply;

/// Databases a client may `SELECT` while Redis cannot confirm (Redis's
/// default `databases`).
const DEFAULT_DATABASES: i64 = 16;

impl Session {
    pub(super) async fn session_cmd(&mut self, cmd: SessionCmd, req: Request) -> Flow {
        self.shared.metrics.local.increment(1);
        let args = &req.args;
        let arity = |n: usize, exact: bool| {
            if exact {
                args.len() == n
            } else {
                args.len() >= n
            }
        };
        let wrong_args = |name: &str| {
            reply::error(format!(
                "ERR wrong number of arguments for '{name}' command"
            ))
        };
        let r = match cmd {
            SessionCmd::Quit => {
                self.push_ready(reply::ok());
                self.push(Body::Close);
                return Flow::Go;
            }
            SessionCmd::Reset => {
                self.flush_batch();
                if !self.nothing_in_flight() {
                    return Flow::Stall(req);
                }
                self.multi = None;
                self.pinned = None;
                self.unpin_when_idle = false;
                self.db = 0;
                self.proto = 2;
                self.auth = self.shared.access.upstream_auth();
                self.who = self.shared.access.anonymous();
                self.name = None;
                self.conn = None;
                self.reply_mode = ReplyMode::On;
                Bytes::from_static(b"+RESET\r\n")
            }
            SessionCmd::Auth => {
                if !arity(2, false) || args.len() > 3 {
                    wrong_args("auth")
                } else {
                    let (user, pass) = if args.len() == 3 {
                        (Some(&args[1]), &args[2])
                    } else {
                        (None, &args[1])
                    };
                    let creds = Credentials {
                        user: user.map(|u| String::from_utf8_lossy(u).into_owned()),
                        password: String::from_utf8_lossy(pass).into_owned(),
                    };
                    match self.authenticate(creds, self.proto).await {
                        Ok(()) => reply::ok(),
                        Err(r) => r,
                    }
                }
            }
            SessionCmd::Hello => self.hello(args).await,
            SessionCmd::Select => {
                if !arity(2, true) {
                    wrong_args("select")
                } else {
                    match std::str::from_utf8(&args[1])
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                    {
                        None => reply::error("ERR value is not an integer or out of range"),
                        // Beyond what Redis could have configured: refused
                        // here; the rest is Redis's to judge.
                        Some(n) if !(0..=i64::from(u32::MAX)).contains(&n) => {
                            reply::error("ERR DB index is out of range")
                        }
                        Some(n)
                            if self.shared.health.state() == State::Down
                                && n >= DEFAULT_DATABASES =>
                        {
                            reply::error("ERR DB index is out of range")
                        }
                        Some(n) => {
                            let n = n as u32;
                            let verified =
                                if self.shared.health.state() == State::Down || n == self.db {
                                    Ok(())
                                } else {
                                    self.verify(self.auth.clone(), n, self.proto).await
                                };
                            match verified {
                                Ok(()) if self.pinned.is_some() && !self.unpin_when_idle => {
                                    // Under WATCH the session's commands run on
                                    // the pinned connection: it must follow the
                                    // session to the new db, or a write meant
                                    // for db 1 would touch a watched key of db 5.
                                    self.db = n;
                                    self.conn = None;
                                    self.publish_row();
                                    let gated = crate::gate::Gated::of(&req.args);
                                    return self.forward(req, false, gated).await;
                                }
                                Ok(()) => {
                                    if n != self.db {
                                        self.db = n;
                                        self.conn = None;
                                    }
                                    reply::ok()
                                }
                                Err(r) => r,
                            }
                        }
                    }
                }
            }
            SessionCmd::ClientId => reply::encode(&Frame::Integer(self.id as i64)),
            SessionCmd::ClientSetName => {
                if !arity(3, true) {
                    wrong_args("client|setname")
                } else if args[2].iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                    reply::error(
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    )
                } else {
                    self.name = (!args[2].is_empty()).then(|| args[2].clone());
                    reply::ok()
                }
            }
            SessionCmd::ClientGetName => match &self.name {
                Some(n) => reply::encode(&Frame::Bulk(n.clone())),
                None => reply::encode(&if self.proto == 3 {
                    Frame::Null
                } else {
                    Frame::NullBulk
                }),
            },
            SessionCmd::ClientSetInfo => {
                if !arity(4, true) {
                    wrong_args("client|setinfo")
                } else if args[2].eq_ignore_ascii_case(b"lib-name") {
                    self.lib_name = Some(args[3].clone());
                    reply::ok()
                } else if args[2].eq_ignore_ascii_case(b"lib-ver") {
                    self.lib_ver = Some(args[3].clone());
                    reply::ok()
                } else {
                    reply::error(format!(
                        "ERR Unrecognized option '{}'",
                        String::from_utf8_lossy(&args[2])
                    ))
                }
            }
            SessionCmd::ClientInfo => {
                let line = self.client_info_line();
                reply::encode(&if self.proto == 3 {
                    Frame::Verbatim(Bytes::from(format!("txt:{line}")))
                } else {
                    Frame::Bulk(Bytes::from(line))
                })
            }
            SessionCmd::ClientReply => {
                let mode = args.get(2).map(|a| a.to_ascii_lowercase());
                match (args.len(), mode.as_deref()) {
                    (3, Some(b"on")) => {
                        self.reply_mode = ReplyMode::On;
                        reply::ok()
                    }
                    (3, Some(b"off")) => {
                        self.reply_mode = ReplyMode::Off;
                        self.push_silent_ok();
                        return Flow::Go;
                    }
                    (3, Some(b"skip")) => {
                        self.push_silent_ok();
                        self.reply_mode = ReplyMode::SkipNext;
                        return Flow::Go;
                    }
                    _ => reply::error("ERR syntax error"),
                }
            }
            SessionCmd::ClientSwitch => reply::ok(),
            SessionCmd::Unsubscribe => {
                let kind = Frame::Bulk(Bytes::from(
                    String::from_utf8_lossy(&args[0]).to_lowercase(),
                ));
                let none = if self.proto == 3 {
                    Frame::Null
                } else {
                    Frame::NullBulk
                };
                let targets: Vec<Frame> = if args.len() > 1 {
                    args[1..].iter().cloned().map(Frame::Bulk).collect()
                } else {
                    vec![none]
                };
                let mut out = BytesMut::new();
                for t in targets {
                    let items = vec![kind.clone(), t, Frame::Integer(0)];
                    out.extend_from_slice(&reply::encode(&if self.proto == 3 {
                        Frame::Push(items)
                    } else {
                        Frame::Array(items)
                    }));
                }
                out.freeze()
            }
            SessionCmd::ClientList => self.client_list(args),
        };
        if matches!(
            cmd,
            SessionCmd::Auth
                | SessionCmd::Hello
                | SessionCmd::Select
                | SessionCmd::ClientSetName
                | SessionCmd::ClientSetInfo
                | SessionCmd::Reset
        ) {
            self.publish_row();
        }
        self.push_ready(r);
        Flow::Go
    }

    /// Checks that Redis accepts this identity and db by getting a pooled
    /// connection with them (its handshake runs `AUTH`/`SELECT`).
    async fn verify(&mut self, auth: Option<Credentials>, db: u32, proto: u8) -> Result<(), Bytes> {
        if self.shared.health.state() == State::Down {
            self.reject();
            return Err(reply::unavailable_down(
                &self.shared.health.current().reason,
            ));
        }
        let key = PoolKey { auth, db, proto };
        let pool = self.shared.upstream.pool(&key);
        match pool.get(Instant::now() + self.timeout).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if matches!(e, ConnectError::Rejected(_)) {
                    self.shared.upstream.forget(&key);
                }
                Err(self.connect_error(e))
            }
        }
    }

    /// Logs the session in as `creds` (`AUTH`, `HELLO … AUTH`). In local
    /// mode Redoubt's users decide. In pass-through Redis decides while it
    /// answers (and Redoubt remembers what it accepted); when it does not,
    /// the credentials it accepted recently do.
    async fn authenticate(&mut self, creds: Credentials, proto: u8) -> Result<(), Bytes> {
        let access = self.shared.access.clone();
        if access.is_local() {
            self.who = access.check_local(&creds).inspect_err(|_| self.reject())?;
            return Ok(());
        }
        let judged = if self.shared.health.state() == State::Down {
            Err(crate::access::Access::not_seen())
        } else {
            let key = PoolKey {
                auth: Some(creds.clone()),
                db: self.db,
                proto,
            };
            let deadline = Instant::now() + self.timeout;
            // Redis judges every login while it answers: a pooled
            // connection that logged in earlier proves nothing once the
            // password changed or the user was disabled.
            let judged = match self.shared.upstream.pool(&key).get(deadline).await {
                Ok(conn) => auth_on(&conn, &creds, deadline).await,
                Err(e) => Err(e),
            };
            match judged {
                Ok(()) => Ok(()),
                Err(ConnectError::Rejected(text)) => {
                    self.shared.upstream.forget(&key);
                    access.refused(&creds, &text);
                    self.reject();
                    return Err(reply::error(text));
                }
                Err(e) => Err(reply::unavailable_connect(&e.to_string())),
            }
        };
        self.who = match judged {
            Ok(()) => access.accepted(&creds).await,
            Err(why) => access.recall(&creds, why).inspect_err(|_| self.reject())?,
        };
        self.auth = Some(creds);
        self.conn = None;
        Ok(())
    }

    async fn hello(&mut self, args: &[Bytes]) -> Bytes {
        let mut proto = self.proto;
        let mut auth = None;
        let mut name = None;
        if let Some(v) = args.get(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                None => {
                    return reply::error("ERR Protocol version is not an integer or out of range")
                }
                Some(2) => proto = 2,
                Some(3) => proto = 3,
                Some(_) => return reply::error("NOPROTO unsupported protocol version"),
            }
            let mut i = 2;
            while i < args.len() {
                let opt = args[i].to_ascii_lowercase();
                if opt == b"auth" && i + 2 < args.len() {
                    auth = Some(Credentials {
                        user: Some(String::from_utf8_lossy(&args[i + 1]).into_owned()),
                        password: String::from_utf8_lossy(&args[i + 2]).into_owned(),
                    });
                    i += 3;
                } else if opt == b"setname" && i + 1 < args.len() {
                    name = Some(args[i + 1].clone());
                    i += 2;
                } else {
                    return reply::error(format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(&args[i])
                    ));
                }
            }
        }
        if let Some(n) = &name {
            if n.iter().any(|&c| !(b'!'..=b'~').contains(&c)) {
                return reply::error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            }
        }
        if let Some(creds) = auth {
            if let Err(r) = self.authenticate(creds, proto).await {
                return r;
            }
        }
        if let Some(r) = self.shared.access.hello_refusal(&self.who) {
            return r;
        }
        if proto != self.proto {
            self.proto = proto;
            self.conn = None;
        }
        if let Some(n) = name {
            self.name = (!n.is_empty()).then_some(n);
        }
        let facts = self.shared.health.current().facts;
        let version = facts
            .redis_version
            .unwrap_or_else(|| resp::command::REDIS_VERSION.to_string());
        let role = match facts.role.as_deref() {
            Some("slave") => "replica",
            _ => "master",
        };
        let pairs = vec![
            (Frame::bulk("server"), Frame::bulk("redis")),
            (Frame::bulk("version"), Frame::bulk(version)),
            (Frame::bulk("proto"), Frame::Integer(proto as i64)),
            (Frame::bulk("id"), Frame::Integer(self.id as i64)),
            (Frame::bulk("mode"), Frame::bulk("standalone")),
            (Frame::bulk("role"), Frame::bulk(role)),
            (Frame::bulk("modules"), Frame::Array(vec![])),
        ];
        reply::encode(&if proto == 3 {
            Frame::Map(pairs)
        } else {
            Frame::Array(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect())
        })
    }

    fn client_info_line(&self) -> String {
        self.client_line("client|info", &self.created.elapsed().as_secs().to_string())
    }

    /// Publishes this session's `CLIENT LIST` row (after a change of name,
    /// db, user or protocol).
    pub(super) fn publish_row(&self) {
        let line = self.client_line("NULL", "{age}");
        if let Ok(mut rows) = self.shared.clients.lock() {
            rows.insert(
                self.id,
                crate::server::ClientRow {
                    created: self.created.into_std(),
                    line,
                },
            );
        }
    }

    fn client_list(&self, args: &[Bytes]) -> Bytes {
        // `CLIENT LIST [TYPE t] [ID id …]`: every session is a normal client.
        let mut ids: Option<Vec<u64>> = None;
        let mut type_ok = true;
        let mut i = 2;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"type") && i + 1 < args.len() {
                type_ok = args[i + 1].eq_ignore_ascii_case(b"normal");
                i += 2;
            } else if args[i].eq_ignore_ascii_case(b"id") {
                let parsed: Option<Vec<u64>> = args[i + 1..]
                    .iter()
                    .map(|a| std::str::from_utf8(a).ok()?.parse().ok())
                    .collect();
                match parsed {
                    Some(v) if !v.is_empty() => ids = Some(v),
                    _ => return reply::error("ERR Invalid client ID"),
                }
                break;
            } else {
                return reply::error("ERR syntax error");
            }
        }
        let mut out = String::new();
        if type_ok {
            if let Ok(rows) = self.shared.clients.lock() {
                for (id, row) in rows.iter() {
                    if ids.as_ref().is_some_and(|v| !v.contains(id)) {
                        continue;
                    }
                    let age = row.created.elapsed().as_secs().to_string();
                    out.push_str(&row.line.replace("{age}", &age));
                }
            }
        }
        reply::encode(&if self.proto == 3 {
            Frame::Verbatim(Bytes::from(format!("txt:{out}")))
        } else {
            Frame::Bulk(Bytes::from(out))
        })
    }

    fn client_line(&self, cmd: &str, age: &str) -> String {
        let name = self
            .name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let user = self.who.name();
        let multi = self
            .multi
            .as_ref()
            .map(|m| m.cmds.len() as i64)
            .unwrap_or(-1);
        let lib_name = self
            .lib_name
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let lib_ver = self
            .lib_ver
            .as_ref()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags=N db={} sub=0 psub=0 ssub=0 multi={} qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.local,
            name,
            age,
            self.db,
            multi,
            cmd,
            user,
            self.proto,
            lib_name,
            lib_ver
        )
    }
}

/// Sends `AUTH` for `creds` on `conn` and reads Redis's verdict: an
/// error reply is a refusal (`Rejected`), no reply in time is a timeout.
async fn auth_on(conn: &Conn, creds: &Credentials, deadline: Instant) -> Result<(), ConnectError> {
    let mut args: Vec<&[u8]> = vec![b"AUTH"];
    if let Some(u) = &creds.user {
        args.push(u.as_bytes());
    }
    args.push(creds.password.as_bytes());
    let budget = deadline.saturating_duration_since(Instant::now());
    match conn.call(&args, budget).await {
        Ok(f) => match f.error_text() {
            Some(t) => Err(ConnectError::Rejected(
                String::from_utf8_lossy(t).into_owned(),
            )),
            None => Ok(()),
        },
        Err(e) => Err(ConnectError::Io {
            addr: "the pooled connection".into(),
            why: format!("AUTH got {e}"),
        }),
    }
}
