//! Redis Cluster's key → slot function and the slot map: which primary
//! serves each of the 16384 slots.

use resp::Frame;

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ b) as usize]
    })
}

/// The slot of `key`: only the part inside the first `{…}` is hashed when
/// it is not empty (a hash tag), so related keys can share a slot.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed) & (SLOTS as u16 - 1)
}

/// No primary serves the slot.
const NONE: u16 = u16::MAX;

/// Who serves which slots, as one node told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Per slot, an index into `primaries` (or `NONE`).
    owner: Vec<u16>,
    /// Primaries' `host:port`, ordered by the first slot each serves.
    primaries: Vec<String>,
    /// Each primary's replicas, same order.
    replicas: Vec<Vec<String>>,
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap {
            owner: vec![NONE; SLOTS],
            primaries: Vec::new(),
            replicas: Vec::new(),
        }
    }
}

impl SlotMap {
    /// The primary serving `slot`, if any.
    pub fn node(&self, slot: u16) -> Option<&str> {
        match self.owner.get(slot as usize) {
            Some(&i) if i != NONE => self.primaries.get(i as usize).map(String::as_str),
            _ => None,
        }
    }

    /// Every primary, ordered by the first slot it serves.
    pub fn primaries(&self) -> &[String] {
        &self.primaries
    }

    /// The replicas of the primary at `addr`.
    pub fn replicas_of(&self, addr: &str) -> &[String] {
        self.primaries
            .iter()
            .position(|p| p == addr)
            .and_then(|i| self.replicas.get(i))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The slot ranges `addr` serves, as `(first, last)` pairs.
    pub fn ranges_of(&self, addr: &str) -> Vec<(u16, u16)> {
        let Some(want) = self.primaries.iter().position(|p| p == addr) else {
            return Vec::new();
        };
        let mut out: Vec<(u16, u16)> = Vec::new();
        for (slot, &o) in self.owner.iter().enumerate() {
            if o as usize != want {
                continue;
            }
            let slot = slot as u16;
            match out.last_mut() {
                Some((_, last)) if *last + 1 == slot => *last = slot,
                _ => out.push((slot, slot)),
            }
        }
        out
    }

    /// Slots no primary serves.
    pub fn unserved(&self) -> usize {
        self.owner.iter().filter(|&&o| o == NONE).count()
    }

    /// This map with `slot` served by `addr` (a `MOVED` redirect).
    pub fn with_moved(&self, slot: u16, addr: &str) -> SlotMap {
        let mut m = self.clone();
        let i = match m.primaries.iter().position(|p| p == addr) {
            Some(i) => i,
            None => {
                m.primaries.push(addr.to_string());
                m.replicas.push(Vec::new());
                m.primaries.len() - 1
            }
        };
        if let Some(o) = m.owner.get_mut(slot as usize) {
            *o = i as u16;
        }
        m
    }

    fn add(&mut self, first: i64, last: i64, primary: String, replicas: Vec<String>) {
        let i = match self.primaries.iter().position(|p| *p == primary) {
            Some(i) => i,
            None => {
                self.primaries.push(primary);
                self.replicas.push(replicas);
                self.primaries.len() - 1
            }
        };
        let first = first.clamp(0, SLOTS as i64 - 1) as usize;
        let last = last.clamp(0, SLOTS as i64 - 1) as usize;
        for o in &mut self.owner[first..=last] {
            *o = i as u16;
        }
    }

    /// Primaries in the order of the first slot each serves, so every
    /// Redoubt numbers them alike (the `SCAN` cursor names one).
    fn sort(&mut self) {
        let mut first = vec![usize::MAX; self.primaries.len()];
        for (slot, &o) in self.owner.iter().enumerate() {
            if o != NONE && first[o as usize] == usize::MAX {
                first[o as usize] = slot;
            }
        }
        let mut order: Vec<usize> = (0..self.primaries.len()).collect();
        order.sort_by_key(|&i| (first[i], self.primaries[i].clone()));
        let mut new_index = vec![0u16; order.len()];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u16;
        }
        for o in &mut self.owner {
            if *o != NONE {
                *o = new_index[*o as usize];
            }
        }
        self.primaries = order.iter().map(|&i| self.primaries[i].clone()).collect();
        self.replicas = order.iter().map(|&i| self.replicas[i].clone()).collect();
    }

    /// Parses a `CLUSTER SLOTS` reply; `asked` is the node that answered
    /// (an empty host means that node's).
    pub fn from_slots(reply: &Frame, asked: &str) -> Result<SlotMap, String> {
        let Frame::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS answered {reply:?}"));
        };
        let mut m = SlotMap::default();
        for r in ranges {
            let Frame::Array(parts) = r else {
                return Err("a CLUSTER SLOTS entry is not an array".into());
            };
            let (Some(Frame::Integer(first)), Some(Frame::Integer(last))) =
                (parts.first(), parts.get(1))
            else {
                return Err("a CLUSTER SLOTS entry has no slot range".into());
            };
            let mut nodes = parts[2..].iter().filter_map(|n| node_of_slots(n, asked));
            let Some(primary) = nodes.next() else {
                continue;
            };
            m.add(*first, *last, primary, nodes.collect());
        }
        m.sort();
        Ok(m)
    }

    /// Parses a `CLUSTER SHARDS` reply (RESP2 flat maps or RESP3 maps).
    pub fn from_shards(reply: &Frame, asked: &str) -> Result<SlotMap, String> {
        let Frame::Array(shards) = reply else {
            return Err(format!("CLUSTER SHARDS answered {reply:?}"));
        };
        let mut m = SlotMap::default();
        for shard in shards {
            let fields = pairs(shard).ok_or("a CLUSTER SHARDS entry is not a map")?;
            let mut slots = Vec::new();
            let mut primary = None;
            let mut replicas = Vec::new();
            for (k, v) in fields {
                match k.as_bytes() {
                    Some(b"slots") => {
                        if let Frame::Array(s) = v {
                            slots = s
                                .iter()
                                .filter_map(|f| match f {
                                    Frame::Integer(i) => Some(*i),
                                    _ => None,
                                })
                                .collect();
                        }
                    }
                    Some(b"nodes") => {
                        let Frame::Array(nodes) = v else { continue };
                        for n in nodes {
                            let Some(f) = pairs(n) else { continue };
                            let get = |name: &[u8]| {
                                f.iter()
                                    .find(|(k, _)| k.as_bytes() == Some(name))
                                    .map(|(_, v)| v)
                            };
                            let port = match get(b"port") {
                                Some(Frame::Integer(p)) => *p,
                                _ => continue,
                            };
                            let host = get(b"endpoint")
                                .and_then(|v| v.as_bytes())
                                .filter(|h| !h.is_empty() && *h != b"?")
                                .or_else(|| get(b"ip").and_then(|v| v.as_bytes()))
                                .map(|h| String::from_utf8_lossy(h).into_owned())
                                .unwrap_or_default();
                            let addr = join(&host, port, asked);
                            let role = get(b"role").and_then(|v| v.as_bytes());
                            if role == Some(b"master") {
                                primary = Some(addr);
                            } else {
                                replicas.push(addr);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let Some(primary) = primary else { continue };
            let mut first_range = true;
            for pair in slots.chunks(2) {
                if let [first, last] = pair {
                    let reps = if first_range {
                        std::mem::take(&mut replicas)
                    } else {
                        Vec::new()
                    };
                    first_range = false;
                    m.add(*first, *last, primary.clone(), reps);
                }
            }
        }
        m.sort();
        Ok(m)
    }
}

/// A map's entries as key/value pairs, whether sent as a RESP3 map or as
/// a RESP2 flat array.
fn pairs(f: &Frame) -> Option<Vec<(&Frame, &Frame)>> {
    match f {
        Frame::Map(kv) => Some(kv.iter().map(|(k, v)| (k, v)).collect()),
        Frame::Array(flat) => Some(
            flat.chunks(2)
                .filter_map(|c| Some((c.first()?, c.get(1)?)))
                .collect(),
        ),
        _ => None,
    }
}

fn node_of_slots(n: &Frame, asked: &str) -> Option<String> {
    let Frame::Array(f) = n else { return None };
    let host = f.first()?.as_bytes()?;
    let Some(Frame::Integer(port)) = f.get(1) else {
        return None;
    };
    if host == b"?" {
        return None;
    }
    Some(join(&String::from_utf8_lossy(host), *port, asked))
}

/// `host:port`; an empty host is the host of the node asked.
fn join(host: &str, port: i64, asked: &str) -> String {
    let host = if host.is_empty() {
        asked.rsplit_once(':').map(|(h, _)| h).unwrap_or(asked)
    } else {
        host
    };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_spec() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"{user1000}.followers"), key_slot(b"user1000"));
        // An empty tag hashes the whole key; only the first `{` counts.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 16383);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    }

    fn int(i: i64) -> Frame {
        Frame::Integer(i)
    }

    #[test]
    fn cluster_slots_and_shards_give_the_same_map() {
        let node = |h: &str, p: i64| Frame::Array(vec![Frame::bulk(h), int(p), Frame::bulk("id")]);
        let slots = Frame::Array(vec![
            Frame::Array(vec![
                int(5461),
                int(10922),
                node("", 7002),
                node("127.0.0.1", 7005),
            ]),
            Frame::Array(vec![
                int(0),
                int(5460),
                node("127.0.0.1", 7001),
                node("127.0.0.1", 7004),
            ]),
            Frame::Array(vec![int(10923), int(16383), node("127.0.0.1", 7003)]),
        ]);
        let m = SlotMap::from_slots(&slots, "127.0.0.1:7002").expect("parses");
        assert_eq!(
            m.primaries(),
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
        );
        assert_eq!(m.node(0), Some("127.0.0.1:7001"));
        assert_eq!(m.node(5461), Some("127.0.0.1:7002"));
        assert_eq!(m.node(16383), Some("127.0.0.1:7003"));
        assert_eq!(m.replicas_of("127.0.0.1:7002"), ["127.0.0.1:7005"]);
        assert_eq!(m.unserved(), 0);
        assert_eq!(m.ranges_of("127.0.0.1:7002"), [(5461, 10922)]);

        let shard_node = |port: i64, role: &str| {
            Frame::Array(vec![
                Frame::bulk("id"),
                Frame::bulk("x"),
                Frame::bulk("port"),
                int(port),
                Frame::bulk("ip"),
                Frame::bulk("127.0.0.1"),
                Frame::bulk("endpoint"),
                Frame::bulk("127.0.0.1"),
                Frame::bulk("role"),
                Frame::bulk(role),
            ])
        };
        let shard = |ranges: Vec<i64>, nodes: Vec<Frame>| {
            Frame::Array(vec![
                Frame::bulk("slots"),
                Frame::Array(ranges.into_iter().map(int).collect()),
                Frame::bulk("nodes"),
                Frame::Array(nodes),
            ])
        };
        let shards = Frame::Array(vec![
            shard(vec![10923, 16383], vec![shard_node(7003, "master")]),
            shard(
                vec![0, 5460],
                vec![shard_node(7004, "replica"), shard_node(7001, "master")],
            ),
            shard(
                vec![5461, 10922],
                vec![shard_node(7002, "master"), shard_node(7005, "replica")],
            ),
        ]);
        assert_eq!(
            SlotMap::from_shards(&shards, "127.0.0.1:7001").expect("parses"),
            m
        );
    }

    #[test]
    fn a_moved_redirect_patches_one_slot() {
        let m = SlotMap::default().with_moved(42, "10.0.0.1:6379");
        assert_eq!(m.node(42), Some("10.0.0.1:6379"));
        assert_eq!(m.node(43), None);
        assert_eq!(m.unserved(), SLOTS - 1);
    }
}
