//! HyperLogLog (`PFADD`, `PFCOUNT`, `PFMERGE`, and the debugging
//! `PFDEBUG`, `PFSELFTEST`) on Redis's own string
//! format, so a value moves between the store and Redis either way (the
//! replica's import, `GET`/`SET`, `DUMP`/`RESTORE`).
//!
//! Registers, hashing (MurmurHash64A, seed `0xadc83b19`) and the estimator
//! (Ertl's, as Redis 7.0) are Redis's, so counts match to the unit. Both of
//! Redis's encodings are read; a write always leaves the dense one: Redis
//! keeps small HyperLogLogs sparse, so the bytes of a small one differ
//! after a local write, its registers and count do not.

use bytes::Bytes;
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply};
use crate::pubsub::class::STRING;
use crate::value::{StrEnc, Value};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("pfadd", pfadd),
    ("pfcount", pfcount),
    ("pfmerge", pfmerge),
    ("pfdebug", pfdebug),
    ("pfselftest", pfselftest),
];

const P: u32 = 14;
const REGISTERS: usize = 1 << P;
const Q: u32 = 64 - P;
const HDR: usize = 16;
const DENSE_SIZE: usize = HDR + (REGISTERS * 6).div_ceil(8);
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;
const NOT_HLL: &str = "WRONGTYPE Key is not a valid HyperLogLog string value.";
const INVALID: &str = "INVALIDOBJ Corrupted HLL object detected";

/// Redis's MurmurHash64A (little-endian reads).
fn murmur64a(key: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4_a793_5bd1_e995;
    const R: u32 = 47;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(M);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= (*b as u64) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> R;
    h = h.wrapping_mul(M);
    h ^= h >> R;
    h
}

/// The register an element lands in and the length of its `0…01` run.
fn pattern(ele: &[u8]) -> (usize, u8) {
    let hash = murmur64a(ele, 0xadc8_3b19);
    let index = (hash & (REGISTERS as u64 - 1)) as usize;
    let rest = (hash >> P) | (1u64 << Q);
    (index, rest.trailing_zeros() as u8 + 1)
}

/// The registers of a valid HyperLogLog string, one byte each; `None`
/// for a corrupt sparse encoding.
fn registers(s: &[u8]) -> Option<Vec<u8>> {
    let mut regs = vec![0u8; REGISTERS];
    if s[4] == 0 {
        let d = &s[HDR..];
        for (i, r) in regs.iter_mut().enumerate() {
            let byte = i * 6 / 8;
            let fb = (i * 6) & 7;
            let b0 = d[byte] as u32;
            let b1 = d.get(byte + 1).copied().unwrap_or(0) as u32;
            *r = (((b0 >> fb) | (b1 << (8 - fb))) & 63) as u8;
        }
        return Some(regs);
    }
    let mut idx = 0usize;
    let mut p = HDR;
    while p < s.len() {
        let op = s[p];
        if op & 0xc0 == 0 {
            idx += (op & 0x3f) as usize + 1;
            p += 1;
        } else if op & 0xc0 == 0x40 {
            let next = *s.get(p + 1)? as usize;
            idx += ((((op & 0x3f) as usize) << 8) | next) + 1;
            p += 2;
        } else {
            let run = (op & 0x3) as usize + 1;
            let val = ((op >> 2) & 0x1f) + 1;
            if idx + run > REGISTERS {
                break;
            }
            regs[idx..idx + run].fill(val);
            idx += run;
            p += 1;
        }
    }
    (idx == REGISTERS).then_some(regs)
}

/// A dense HyperLogLog of `regs`, with `card` as its header's cache bytes.
fn dense(regs: &[u8], card: [u8; 8]) -> Bytes {
    let mut out = vec![0u8; DENSE_SIZE];
    out[..4].copy_from_slice(b"HYLL");
    out[8..16].copy_from_slice(&card);
    let d = &mut out[HDR..];
    for (i, &v) in regs.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let byte = i * 6 / 8;
        let fb = (i * 6) & 7;
        d[byte] |= v << fb;
        if fb > 2 {
            d[byte + 1] |= v >> (8 - fb);
        }
    }
    Bytes::from(out)
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        let d = 1.0 - x;
        z -= d * d * y;
        if before == z {
            return z / 3.0;
        }
    }
}

/// Redis 7.0's `hllCount`.
fn count(regs: &[u8]) -> u64 {
    let m = REGISTERS as f64;
    let mut histo = [0u32; 64];
    for &r in regs {
        histo[(r & 63) as usize] += 1;
    }
    let mut z = m * tau((m - histo[Q as usize + 1] as f64) / m);
    for j in (1..=Q as usize).rev() {
        z += histo[j] as f64;
        z *= 0.5;
    }
    z += m * sigma(histo[0] as f64 / m);
    (ALPHA_INF * m * m / z).round() as u64
}

/// The string at `key` if it is a valid HyperLogLog (`Ok(None)` when the
/// key is missing), with Redis's errors otherwise.
fn lookup_hll(ctx: &mut Ctx, key: &[u8]) -> Result<Option<Bytes>, Frame> {
    let Some(s) = ctx.get_str(key)? else {
        return Ok(None);
    };
    let valid =
        s.len() >= HDR && &s[..4] == b"HYLL" && s[4] <= 1 && (s[4] == 1 || s.len() == DENSE_SIZE);
    if !valid {
        return Err(err(NOT_HLL));
    }
    Ok(Some(s))
}

fn pfadd(ctx: &mut Ctx) -> Reply {
    let key = &ctx.args[1];
    let existing = lookup_hll(ctx, key)?;
    let (mut regs, card, mut updated) = match &existing {
        Some(s) => {
            let regs = registers(s).ok_or_else(|| err(INVALID))?;
            let mut card = [0u8; 8];
            card.copy_from_slice(&s[8..16]);
            (regs, card, false)
        }
        None => (vec![0u8; REGISTERS], [0u8; 8], true),
    };
    for ele in &ctx.args[2..] {
        let (i, n) = pattern(ele);
        if n > regs[i] {
            regs[i] = n;
            updated = true;
        }
    }
    if !updated {
        return Ok(Frame::Integer(0));
    }
    let mut card = card;
    card[7] |= 0x80;
    ctx.set_value(key, Value::Str(dense(&regs, card)), true);
    ctx.mark_str_enc(key, StrEnc::Raw);
    ctx.notify(STRING, "pfadd", key);
    Ok(Frame::Integer(1))
}

fn pfcount(ctx: &mut Ctx) -> Reply {
    if ctx.args.len() > 2 {
        let mut max = vec![0u8; REGISTERS];
        for j in 1..ctx.args.len() {
            let key = ctx.args[j].clone();
            let Some(s) = lookup_hll(ctx, &key)? else {
                continue;
            };
            let regs = registers(&s).ok_or_else(|| err(INVALID))?;
            for (m, r) in max.iter_mut().zip(regs) {
                *m = (*m).max(r);
            }
        }
        return Ok(Frame::Integer(count(&max) as i64));
    }
    let key = &ctx.args[1];
    let Some(s) = lookup_hll(ctx, key)? else {
        return Ok(Frame::Integer(0));
    };
    if s[15] & 0x80 == 0 {
        let mut card = [0u8; 8];
        card.copy_from_slice(&s[8..16]);
        return Ok(Frame::Integer(u64::from_le_bytes(card) as i64));
    }
    let regs = registers(&s).ok_or_else(|| err(INVALID))?;
    let card = count(&regs);
    // The cache is part of the value: written back (and journaled, as
    // Redis propagates it), the encoding left as it was.
    let mut v = s.to_vec();
    v[8..16].copy_from_slice(&card.to_le_bytes());
    ctx.set_value(key, Value::Str(Bytes::from(v)), true);
    ctx.mark_str_enc(key, StrEnc::Raw);
    Ok(Frame::Integer(card as i64))
}

fn pfmerge(ctx: &mut Ctx) -> Reply {
    let mut max = vec![0u8; REGISTERS];
    let mut card = [0u8; 8];
    for j in 1..ctx.args.len() {
        let key = ctx.args[j].clone();
        let Some(s) = lookup_hll(ctx, &key)? else {
            continue;
        };
        if j == 1 {
            card.copy_from_slice(&s[8..16]);
        }
        let regs = registers(&s).ok_or_else(|| err(INVALID))?;
        for (m, r) in max.iter_mut().zip(regs) {
            *m = (*m).max(r);
        }
    }
    let key = &ctx.args[1];
    card[7] |= 0x80;
    ctx.set_value(key, Value::Str(dense(&max, card)), true);
    ctx.mark_str_enc(key, StrEnc::Raw);
    ctx.notify(STRING, "pfadd", key);
    Ok(Frame::simple("OK"))
}

/// `PFDEBUG GETREG|DECODE|ENCODING|TODENSE key`, as Redis 7.0 answers it:
/// GETREG and TODENSE leave a sparse value dense (a write).
fn pfdebug(ctx: &mut Ctx) -> Reply {
    let key = ctx.args[2].clone();
    let sub = ctx.args[1].to_ascii_lowercase();
    let Some(s) = lookup_hll(ctx, &key)? else {
        return Err(err("ERR The specified key does not exist"));
    };
    let sparse = s[4] == 1;
    let to_dense = |ctx: &mut Ctx| -> Result<Vec<u8>, Frame> {
        let regs = registers(&s).ok_or_else(|| err(INVALID))?;
        if sparse {
            let mut card = [0u8; 8];
            card.copy_from_slice(&s[8..16]);
            ctx.set_value(&key, Value::Str(dense(&regs, card)), true);
            ctx.mark_str_enc(&key, StrEnc::Raw);
        }
        Ok(regs)
    };
    match &sub[..] {
        b"getreg" => {
            let regs = to_dense(ctx)?;
            Ok(Frame::Array(
                regs.into_iter().map(|r| Frame::Integer(r.into())).collect(),
            ))
        }
        b"decode" if !sparse => Err(err("ERR HLL encoding is not sparse")),
        b"decode" => Ok(Frame::bulk(decode_sparse(&s[HDR..]))),
        b"encoding" => Ok(Frame::simple(if sparse { "sparse" } else { "dense" })),
        b"todense" => {
            to_dense(ctx)?;
            Ok(Frame::Integer(sparse.into()))
        }
        _ => Err(Frame::error(format!(
            "ERR Unknown PFDEBUG subcommand '{}'",
            String::from_utf8_lossy(&ctx.args[1])
        ))),
    }
}

/// The opcodes of a sparse HyperLogLog in `PFDEBUG DECODE`'s words:
/// `z:len` and `Z:len` runs of zeros, `v:value,len` runs of a value.
fn decode_sparse(mut d: &[u8]) -> String {
    let mut out = Vec::new();
    while let Some(&op) = d.first() {
        if op & 0xc0 == 0 {
            out.push(format!("z:{}", (op & 0x3f) as u32 + 1));
            d = &d[1..];
        } else if op & 0xc0 == 0x40 {
            let next = d.get(1).copied().unwrap_or(0) as u32;
            out.push(format!("Z:{}", ((((op & 0x3f) as u32) << 8) | next) + 1));
            d = d.get(2..).unwrap_or_default();
        } else {
            out.push(format!("v:{},{}", ((op >> 2) & 0x1f) + 1, (op & 0x3) + 1));
            d = &d[1..];
        }
    }
    out.join(" ")
}

/// `PFSELFTEST`: every register value at every position survives the
/// dense encoding, and a count of distinct elements is within the error
/// Redis's own self-test allows.
fn pfselftest(_ctx: &mut Ctx) -> Reply {
    let fail = |what: String| Err(Frame::error(format!("ERR TESTFAILED {what}")));
    for v in 0..64u8 {
        let regs: Vec<u8> = (0..REGISTERS)
            .map(|i| (i as u8).wrapping_add(v) & 63)
            .collect();
        match registers(&dense(&regs, [0; 8])) {
            Some(back) if back == regs => {}
            _ => return fail(format!("dense registers do not round-trip (offset {v})")),
        }
    }
    let mut regs = vec![0u8; REGISTERS];
    let n = 100_000u64;
    for i in 0..n {
        let (idx, run) = pattern(i.to_string().as_bytes());
        regs[idx] = regs[idx].max(run);
    }
    let got = count(&regs) as f64;
    // Redis allows 5 standard errors (1.04 / sqrt(m)).
    let bound = 5.0 * 1.04 / (REGISTERS as f64).sqrt();
    if ((got - n as f64) / n as f64).abs() > bound {
        return fail(format!("count of {n} distinct elements is {got}"));
    }
    Ok(Frame::simple("OK"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_registers_round_trip() {
        let regs: Vec<u8> = (0..REGISTERS).map(|i| (i * 7 % 64) as u8).collect();
        let s = dense(&regs, [0; 8]);
        assert_eq!(s.len(), DENSE_SIZE);
        assert_eq!(registers(&s).unwrap(), regs);
    }

    #[test]
    fn an_empty_hll_counts_zero() {
        assert_eq!(count(&[0u8; REGISTERS]), 0);
    }
}
