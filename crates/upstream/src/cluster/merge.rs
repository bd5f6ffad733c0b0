//! One client reply from the replies of the nodes a command was split
//! across or fanned out to. Replies stay raw bytes where they can: only
//! the shape that changes (a count, an array header, a cursor) is parsed.

use bytes::{BufMut, Bytes, BytesMut};
use resp::{frame_len, parse_frame, Frame, Limits};

/// How the replies of a command's parts become the client's reply.
#[derive(Debug, Clone)]
pub(crate) enum Merge {
    /// One part, its reply as it is (a whole transaction's replies too).
    One,
    /// No part: answered here.
    Local(Bytes),
    /// `MGET` split by slot: each part's replies go back to these
    /// positions of `total` keys.
    Mget {
        positions: Vec<Vec<usize>>,
        total: usize,
    },
    /// Integer replies added up (`DEL`, `UNLINK`, `EXISTS`, `TOUCH`,
    /// `DBSIZE`).
    Sum,
    /// The first error, else the first part's reply (`MSET`, `FLUSHALL`,
    /// `SCRIPT LOAD`, …).
    First,
    /// Arrays of 0/1 combined position by position, 1 only where every
    /// part said 1 (`SCRIPT EXISTS`).
    All,
    /// Arrays concatenated (`KEYS`).
    Concat,
    /// One of the replies that is not nil, at random (`RANDOMKEY`).
    AnyOf,
    /// The first node's `INFO`, with the counts that describe the whole
    /// data set added up over all: `blocked_clients` and the keyspace.
    Info,
    /// A `SCAN` page of the primary at `idx` of `nodes`: its cursor becomes
    /// the cluster-wide one.
    Scan { idx: usize, nodes: usize },
}

/// Bits of the cluster-wide `SCAN` cursor that name the primary.
pub(crate) const SCAN_NODE_BITS: u32 = 10;

/// Merges `parts` (one reply each, in the parts' order).
pub(crate) fn merge(how: &Merge, parts: &[Bytes]) -> Bytes {
    if let Merge::Local(b) = how {
        return b.clone();
    }
    // A part that failed fails the whole command, with the node's words.
    if !matches!(how, Merge::One) {
        if let Some(e) = parts.iter().find(|p| is_error(p)) {
            return e.clone();
        }
    }
    let merged = match how {
        Merge::One | Merge::First => parts.first().cloned(),
        Merge::AnyOf => {
            let found: Vec<&Bytes> = parts
                .iter()
                .filter(|p| !matches!(&p[..], b"$-1\r\n" | b"_\r\n"))
                .collect();
            match found.len() {
                0 => parts.first().cloned(),
                n => Some(found[rand::Rng::gen_range(&mut rand::thread_rng(), 0..n)].clone()),
            }
        }
        Merge::Local(_) => None,
        Merge::Sum => parts
            .iter()
            .map(|p| match parse(p) {
                Some(Frame::Integer(i)) => Some(i),
                _ => None,
            })
            .sum::<Option<i64>>()
            .map(|n| Bytes::from(format!(":{n}\r\n"))),
        Merge::Concat => {
            let mut all = Vec::new();
            for p in parts {
                match elements(p) {
                    Some(e) => all.extend(e),
                    None => return unexpected(p),
                }
            }
            Some(array(&all))
        }
        Merge::Mget { positions, total } => {
            let mut out = vec![Bytes::from_static(b"$-1\r\n"); *total];
            for (p, pos) in parts.iter().zip(positions) {
                match elements(p) {
                    Some(e) if e.len() == pos.len() => {
                        for (v, &i) in e.into_iter().zip(pos) {
                            if let Some(slot) = out.get_mut(i) {
                                *slot = v;
                            }
                        }
                    }
                    _ => return unexpected(p),
                }
            }
            Some(array(&out))
        }
        Merge::All => {
            let mut flags: Option<Vec<i64>> = None;
            for p in parts {
                let Some(Frame::Array(items)) = parse(p) else {
                    return unexpected(p);
                };
                let these: Vec<i64> = items
                    .iter()
                    .map(|f| match f {
                        Frame::Integer(i) => *i,
                        _ => 0,
                    })
                    .collect();
                flags = Some(match flags {
                    None => these,
                    Some(f) => f.iter().zip(&these).map(|(a, b)| (*a).min(*b)).collect(),
                });
            }
            flags.map(|f| {
                let items: Vec<Bytes> =
                    f.iter().map(|i| Bytes::from(format!(":{i}\r\n"))).collect();
                array(&items)
            })
        }
        Merge::Scan { idx, nodes } => parts.first().and_then(|p| scan_page(p, *idx, *nodes)),
        Merge::Info => info(parts),
    };
    merged.unwrap_or_else(|| {
        Bytes::from_static(b"-ERR redoubt could not combine the cluster nodes' replies\r\n")
    })
}

/// `INFO` text of a bulk or verbatim reply (`txt:` left out), and whether
/// it was verbatim.
fn info_text(p: &[u8]) -> Option<(bool, String)> {
    match parse(p)? {
        Frame::Bulk(b) => Some((false, String::from_utf8_lossy(&b).into_owned())),
        Frame::Verbatim(b) => Some((true, String::from_utf8_lossy(b.get(4..)?).into_owned())),
        _ => None,
    }
}

fn info(parts: &[Bytes]) -> Option<Bytes> {
    let (verbatim, first) = info_text(parts.first()?)?;
    let mut blocked = 0i64;
    // db name → (keys, expires)
    let mut dbs: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
    for p in parts {
        let (_, text) = info_text(p)?;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("blocked_clients:") {
                blocked += v.trim().parse::<i64>().unwrap_or(0);
            } else if let Some((db, rest)) = line.split_once(":keys=") {
                let keys = rest.split(',').next().and_then(|k| k.parse::<i64>().ok());
                let expires = rest
                    .split(',')
                    .find_map(|f| f.strip_prefix("expires="))
                    .and_then(|e| e.parse::<i64>().ok());
                let e = dbs.entry(db.to_string()).or_default();
                e.0 += keys.unwrap_or(0);
                e.1 += expires.unwrap_or(0);
            }
        }
    }
    let mut out = String::with_capacity(first.len());
    for line in first.split("\r\n") {
        if line.starts_with("blocked_clients:") {
            out.push_str(&format!("blocked_clients:{blocked}\r\n"));
        } else if line.contains(":keys=") {
            // The whole keyspace is written under its header below.
        } else {
            out.push_str(line);
            out.push_str("\r\n");
            if line == "# Keyspace" {
                for (db, (keys, expires)) in &dbs {
                    out.push_str(&format!("{db}:keys={keys},expires={expires},avg_ttl=0\r\n"));
                }
            }
        }
    }
    // `split` gave the text's last (empty) piece a line end of its own.
    out.truncate(out.len().saturating_sub(2));
    let (tag, body) = if verbatim {
        (b'=', format!("txt:{out}"))
    } else {
        (b'$', out)
    };
    let mut b = BytesMut::new();
    b.put_u8(tag);
    b.put_slice(format!("{}\r\n", body.len()).as_bytes());
    b.put_slice(body.as_bytes());
    b.put_slice(b"\r\n");
    Some(b.freeze())
}

fn scan_page(p: &Bytes, idx: usize, nodes: usize) -> Option<Bytes> {
    let e = elements(p)?;
    let [cursor, keys] = e.as_slice() else {
        return None;
    };
    let Some(Frame::Bulk(c)) = parse(cursor) else {
        return None;
    };
    let c: u64 = std::str::from_utf8(&c).ok()?.parse().ok()?;
    let next = if c == 0 {
        if idx + 1 < nodes {
            (idx + 1) as u64
        } else {
            0
        }
    } else if c >> (64 - SCAN_NODE_BITS) != 0 {
        return Some(Bytes::from_static(
            b"-ERR a cluster node's SCAN cursor is too large to carry through redoubt\r\n",
        ));
    } else {
        (c << SCAN_NODE_BITS) | idx as u64
    };
    let next = next.to_string();
    let mut out = BytesMut::new();
    out.put_slice(b"*2\r\n");
    out.put_slice(format!("${}\r\n{next}\r\n", next.len()).as_bytes());
    out.put_slice(keys);
    Some(out.freeze())
}

fn is_error(p: &[u8]) -> bool {
    matches!(p.first(), Some(b'-') | Some(b'!'))
}

fn parse(p: &[u8]) -> Option<Frame> {
    parse_frame(p, &Limits::upstream())
        .ok()
        .flatten()
        .map(|(f, _)| f)
}

fn unexpected(p: &Bytes) -> Bytes {
    let shown: String = String::from_utf8_lossy(&p[..p.len().min(60)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Bytes::from(format!(
        "-ERR redoubt got an unexpected reply from a cluster node ('{}'); the command ran on some nodes, check its effect\r\n",
        shown.trim()
    ))
}

/// The raw elements of an array (or RESP3 set) reply.
pub(crate) fn elements(p: &Bytes) -> Option<Vec<Bytes>> {
    if !matches!(p.first(), Some(b'*') | Some(b'~')) {
        return None;
    }
    let end = p.windows(2).position(|w| w == b"\r\n")?;
    let n: i64 = std::str::from_utf8(&p[1..end]).ok()?.parse().ok()?;
    let mut pos = end + 2;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n.max(0) {
        let len = frame_len(&p[pos..], &Limits::upstream()).ok()??;
        out.push(p.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

fn array(items: &[Bytes]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(format!("*{}\r\n", items.len()).as_bytes());
    for i in items {
        out.put_slice(i);
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    #[test]
    fn mget_parts_go_back_to_their_keys_positions() {
        let merged = merge(
            &Merge::Mget {
                positions: vec![vec![0, 2], vec![1]],
                total: 3,
            },
            &[b("*2\r\n$1\r\na\r\n$-1\r\n"), b("*1\r\n$1\r\nb\r\n")],
        );
        assert_eq!(merged, b("*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n"));
    }

    #[test]
    fn info_adds_up_blocked_clients_and_the_keyspace() {
        let bulk = |t: &str| b(&format!("${}\r\n{t}\r\n", t.len()));
        let a = "# Clients\r\nconnected_clients:3\r\nblocked_clients:1\r\n\r\n# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=10\r\n";
        let c = "# Clients\r\nconnected_clients:9\r\nblocked_clients:2\r\n\r\n# Keyspace\r\ndb0:keys=7,expires=0,avg_ttl=0\r\n";
        let merged = merge(&Merge::Info, &[bulk(a), bulk(c)]);
        let want = "# Clients\r\nconnected_clients:3\r\nblocked_clients:3\r\n\r\n# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\n";
        assert_eq!(merged, bulk(want));
    }

    #[test]
    fn counts_add_up_and_an_error_wins() {
        assert_eq!(merge(&Merge::Sum, &[b(":2\r\n"), b(":3\r\n")]), b(":5\r\n"));
        assert_eq!(
            merge(&Merge::Sum, &[b(":2\r\n"), b("-OOM no\r\n")]),
            b("-OOM no\r\n")
        );
    }

    #[test]
    fn script_exists_is_true_only_where_every_node_has_the_script() {
        assert_eq!(
            merge(
                &Merge::All,
                &[b("*2\r\n:1\r\n:1\r\n"), b("*2\r\n:0\r\n:1\r\n")]
            ),
            b("*2\r\n:0\r\n:1\r\n")
        );
    }

    #[test]
    fn scan_cursors_name_the_node_and_move_on_when_it_is_done() {
        let page = |c: &str| b(&format!("*2\r\n${}\r\n{c}\r\n*1\r\n$1\r\nk\r\n", c.len()));
        let cursor = |out: Bytes| match parse(&out) {
            Some(Frame::Array(a)) => {
                String::from_utf8_lossy(a[0].as_bytes().unwrap_or_default()).into_owned()
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            cursor(merge(&Merge::Scan { idx: 1, nodes: 3 }, &[page("17")])),
            ((17u64 << 10) | 1).to_string()
        );
        assert_eq!(
            cursor(merge(&Merge::Scan { idx: 1, nodes: 3 }, &[page("0")])),
            "2"
        );
        assert_eq!(
            cursor(merge(&Merge::Scan { idx: 2, nodes: 3 }, &[page("0")])),
            "0"
        );
    }
}
