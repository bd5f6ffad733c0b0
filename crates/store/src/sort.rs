//! SORT and SORT_RO: sorting lists, sets and sorted sets numerically or
//! lexicographically, weighted BY other keys, fetching GET patterns,
//! optionally STOREd as a list.

use bytes::Bytes;
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply, SYNTAX, WRONGTYPE};
use crate::num;
use crate::value::Value;

pub(crate) const COMMANDS: &[(&str, Handler)] = &[("sort", sort), ("sort_ro", sort)];

/// Looks up `pattern` with its first `*` replaced by `elem`: a string key,
/// or `key->field` of a hash. `#` is the element itself.
fn by_pattern(ctx: &mut Ctx, pattern: &[u8], elem: &Bytes) -> Option<Bytes> {
    if pattern == b"#" {
        return Some(elem.clone());
    }
    let star = pattern.iter().position(|&c| c == b'*')?;
    // `->` after the star splits key and hash field.
    let arrow = pattern
        .windows(2)
        .rposition(|w| w == b"->")
        .filter(|&a| a > star && a + 2 < pattern.len());
    let key_pat = &pattern[..arrow.unwrap_or(pattern.len())];
    let mut key = Vec::with_capacity(key_pat.len() + elem.len());
    key.extend_from_slice(&key_pat[..star]);
    key.extend_from_slice(elem);
    key.extend_from_slice(&key_pat[star + 1..]);
    match (ctx.lookup(&key), arrow) {
        (Some(Value::Str(s)), None) => Some(s.clone()),
        (Some(Value::Hash(h)), Some(a)) => h.get(&pattern[a + 2..]).cloned(),
        _ => None,
    }
}

fn sort(ctx: &mut Ctx) -> Reply {
    let ro = ctx.name == "sort_ro";
    let key = &ctx.args[1];
    let (mut desc, mut alpha, mut dontsort) = (false, false, false);
    let mut by: Option<Bytes> = None;
    let mut gets: Vec<Bytes> = Vec::new();
    let mut limit: Option<(i64, i64)> = None;
    let mut store: Option<Bytes> = None;
    let mut i = 2;
    while i < ctx.args.len() {
        let left = ctx.args.len() - i - 1;
        let a = ctx.args[i].to_ascii_uppercase();
        match a.as_slice() {
            b"ASC" => desc = false,
            b"DESC" => desc = true,
            b"ALPHA" => alpha = true,
            b"LIMIT" if left >= 2 => {
                limit = Some((ctx.arg_i64(i + 1)?, ctx.arg_i64(i + 2)?));
                i += 2;
            }
            b"STORE" if left >= 1 && !ro => {
                store = Some(ctx.args[i + 1].clone());
                i += 1;
            }
            b"BY" if left >= 1 => {
                let p = ctx.args[i + 1].clone();
                // A pattern without `*` cannot vary by element: no sorting.
                dontsort = !p.contains(&b'*');
                by = Some(p);
                i += 1;
            }
            b"GET" if left >= 1 => {
                gets.push(ctx.args[i + 1].clone());
                i += 1;
            }
            _ => return Err(err(SYNTAX)),
        }
        i += 1;
    }
    let (mut elems, is_set, is_zset): (Vec<Bytes>, bool, bool) = match ctx.lookup(key) {
        None => (Vec::new(), false, false),
        Some(Value::List(l)) => (l.iter().cloned().collect(), false, false),
        Some(Value::Set(s)) => (crate::sets::ordered(s), true, false),
        Some(Value::ZSet(z)) => (z.iter().map(|(m, _)| m.clone()).collect(), false, true),
        Some(_) => return Err(err(WRONGTYPE)),
    };
    if is_zset {
        // Redis converts a sorted set it SORTs to a skiplist for good.
        ctx.mark_str_enc(key, crate::value::StrEnc::Big);
    }
    // Redis sorts a set anyway when storing or inside a script, so neither
    // the stored list nor a script's result depends on hash order.
    if dontsort && is_set && (store.is_some() || ctx.sess.script) {
        dontsort = false;
        alpha = true;
        by = None;
    }
    if dontsort && is_zset && desc {
        elems.reverse();
    }
    if !dontsort {
        let mut keyed: Vec<(Bytes, Option<Bytes>)> = Vec::with_capacity(elems.len());
        for e in elems {
            let w = match &by {
                Some(p) => by_pattern(ctx, p, &e),
                None => Some(e.clone()),
            };
            keyed.push((e, w));
        }
        if alpha {
            keyed.sort_by(|a, b| {
                let c = match (&a.1, &b.1) {
                    (Some(x), Some(y)) => x.cmp(y).then_with(|| a.0.cmp(&b.0)),
                    (None, Some(_)) => std::cmp::Ordering::Less,
                    (Some(_), None) => std::cmp::Ordering::Greater,
                    (None, None) => a.0.cmp(&b.0),
                };
                if desc {
                    c.reverse()
                } else {
                    c
                }
            });
        } else {
            let mut scored = Vec::with_capacity(keyed.len());
            for (e, w) in keyed {
                let s = match w {
                    None => 0.0,
                    Some(w) => num::parse_f64(&w).ok_or_else(|| {
                        err("ERR One or more scores can't be converted into double")
                    })?,
                };
                scored.push((e, s));
            }
            scored.sort_by(|a, b| {
                let c =
                    a.1.partial_cmp(&b.1)
                        .unwrap_or(std::cmp::Ordering::Equal)
                        .then_with(|| a.0.cmp(&b.0));
                if desc {
                    c.reverse()
                } else {
                    c
                }
            });
            keyed = scored.into_iter().map(|(e, _)| (e, None)).collect();
        }
        elems = keyed.into_iter().map(|(e, _)| e).collect();
    }
    if let Some((off, count)) = limit {
        let n = elems.len() as i64;
        let start = off.clamp(0, n) as usize;
        let end = if count < 0 {
            n as usize
        } else {
            (start as i64 + count).min(n) as usize
        };
        elems = elems[start..end.max(start)].to_vec();
    }
    let mut out: Vec<Option<Bytes>> = Vec::new();
    if gets.is_empty() {
        out.extend(elems.into_iter().map(Some));
    } else {
        for e in &elems {
            for g in &gets {
                out.push(by_pattern(ctx, g, e));
            }
        }
    }
    match store {
        Some(dst) => {
            let n = out.len();
            if n == 0 {
                ctx.delete(&dst);
            } else {
                let list = out.into_iter().map(|v| v.unwrap_or_default()).collect();
                ctx.set_value(&dst, Value::List(list), false);
                ctx.notify(crate::pubsub::class::LIST, "sortstore", &dst);
            }
            Ok(Frame::Integer(n as i64))
        }
        None => Ok(Frame::Array(
            out.into_iter()
                .map(|v| v.map_or_else(|| ctx.null(), Frame::Bulk))
                .collect(),
        )),
    }
}
