//! Geo commands on sorted sets, as Redis 7.0 runs them: a member's score is
//! its 52-bit interleaved geohash (latitude limited to ±85.05112878), its
//! position the centre of that cell, distances by the haversine formula on
//! Redis's earth radius, replies formatted as Redis formats them.
//!
//! A search checks every member against the shape (Redis first narrows to
//! the geohash cells around it; both keep exactly the members inside).
//! Without `ASC`/`DESC` (and with `COUNT … ANY`) Redis returns matches in
//! the order it visits those cells, which its documentation leaves
//! unspecified; here they come in geohash order.

use bytes::Bytes;
use resp::Frame;

use crate::ctx::{err, Ctx, Handler, Reply, SYNTAX};
use crate::num;
use crate::pubsub::class::ZSET;
use crate::value::{Value, ZSet};

pub(crate) const COMMANDS: &[(&str, Handler)] = &[
    ("geoadd", geoadd),
    ("geopos", geopos),
    ("geodist", geodist),
    ("geohash", geohash),
    ("georadius", georadius),
    ("georadius_ro", georadius_ro),
    ("georadiusbymember", georadiusbymember),
    ("georadiusbymember_ro", georadiusbymember_ro),
    ("geosearch", geosearch),
    ("geosearchstore", geosearchstore),
];

const STEP: u32 = 26;
const LAT_MIN: f64 = -85.05112878;
const LAT_MAX: f64 = 85.05112878;
const LONG_MIN: f64 = -180.0;
const LONG_MAX: f64 = 180.0;
const EARTH_RADIUS: f64 = 6372797.560856;
const D_R: f64 = std::f64::consts::PI / 180.0;

fn interleave(xlo: u32, ylo: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555555555555555,
        0x3333333333333333,
        0x0F0F0F0F0F0F0F0F,
        0x00FF00FF00FF00FF,
        0x0000FFFF0000FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let (mut x, mut y) = (xlo as u64, ylo as u64);
    for i in (0..5).rev() {
        x = (x | (x << S[i])) & B[i];
        y = (y | (y << S[i])) & B[i];
    }
    x | (y << 1)
}

fn deinterleave(v: u64) -> u64 {
    const B: [u64; 6] = [
        0x5555555555555555,
        0x3333333333333333,
        0x0F0F0F0F0F0F0F0F,
        0x00FF00FF00FF00FF,
        0x0000FFFF0000FFFF,
        0x00000000FFFFFFFF,
    ];
    const S: [u32; 6] = [0, 1, 2, 4, 8, 16];
    let (mut x, mut y) = (v, v >> 1);
    for i in 0..6 {
        x = (x | (x >> S[i])) & B[i];
        y = (y | (y >> S[i])) & B[i];
    }
    x | (y << 32)
}

/// The geohash of a position within `lat` range `(min, max)`.
fn encode(lon: f64, lat: f64, lat_range: (f64, f64)) -> u64 {
    let lat_off = (lat - lat_range.0) / (lat_range.1 - lat_range.0) * (1u64 << STEP) as f64;
    let lon_off = (lon - LONG_MIN) / (LONG_MAX - LONG_MIN) * (1u64 << STEP) as f64;
    interleave(lat_off as u32, lon_off as u32)
}

/// The centre of a score's cell, clamped to the valid range.
fn decode(score: f64) -> (f64, f64) {
    let bits = score as u64;
    let sep = deinterleave(bits);
    let ilat = sep as u32 as f64;
    let ilon = (sep >> 32) as u32 as f64;
    let cells = (1u64 << STEP) as f64;
    let (lat_scale, lon_scale) = (LAT_MAX - LAT_MIN, LONG_MAX - LONG_MIN);
    let lat_min = LAT_MIN + (ilat / cells) * lat_scale;
    let lat_max = LAT_MIN + ((ilat + 1.0) / cells) * lat_scale;
    let lon_min = LONG_MIN + (ilon / cells) * lon_scale;
    let lon_max = LONG_MIN + ((ilon + 1.0) / cells) * lon_scale;
    let lon = ((lon_min + lon_max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((lat_min + lat_max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS * (lat2 * D_R - lat1 * D_R).abs()
}

fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lon1r, lon2r) = (lon1 * D_R, lon2 * D_R);
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (lat1 * D_R, lat2 * D_R);
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS * a.sqrt().asin()
}

/// `%.17Lf` with trailing zeros trimmed: how Redis prints a coordinate.
fn coord(ctx: &Ctx, d: f64) -> Frame {
    let s = format!("{d:.17}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if ctx.resp3() {
        Frame::Double(Bytes::from(s))
    } else {
        Frame::Bulk(Bytes::from(s))
    }
}

/// Four decimals, rounded as Redis's `fixedpoint_d2string` does.
fn dist_text(d: f64) -> Frame {
    let scaled = (d * 10000.0).round_ties_even() as i64;
    let neg = scaled < 0;
    let a = scaled.unsigned_abs();
    let s = format!(
        "{}{}.{:04}",
        if neg { "-" } else { "" },
        a / 10000,
        a % 10000
    );
    Frame::Bulk(Bytes::from(s))
}

fn lon_lat(ctx: &Ctx, i: usize) -> Result<(f64, f64), Frame> {
    let lon = ctx.arg_f64(i)?;
    let lat = ctx.arg_f64(i + 1)?;
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return Err(err(&format!(
            "ERR invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok((lon, lat))
}

fn unit(ctx: &Ctx, i: usize) -> Result<f64, Frame> {
    let u = ctx.args[i].to_ascii_lowercase();
    Ok(match &u[..] {
        b"m" => 1.0,
        b"km" => 1000.0,
        b"ft" => 0.3048,
        b"mi" => 1609.34,
        _ => {
            return Err(err(
                "ERR unsupported unit provided. please use M, KM, FT, MI",
            ))
        }
    })
}

fn float_or(ctx: &Ctx, i: usize, msg: &str) -> Result<f64, Frame> {
    num::parse_f64(&ctx.args[i]).ok_or_else(|| err(msg))
}

fn geoadd(ctx: &mut Ctx) -> Reply {
    let (mut nx, mut xx, mut ch) = (false, false, false);
    let mut i = 2;
    while i < ctx.args.len() {
        if ctx.arg_is(i, "NX") {
            nx = true;
        } else if ctx.arg_is(i, "XX") {
            xx = true;
        } else if ctx.arg_is(i, "CH") {
            ch = true;
        } else {
            break;
        }
        i += 1;
    }
    let rest = ctx.args.len() - i;
    if !rest.is_multiple_of(3) || rest == 0 || (xx && nx) {
        return Err(err(SYNTAX));
    }
    let mut pairs = Vec::with_capacity(rest / 3);
    for j in (i..ctx.args.len()).step_by(3) {
        let (lon, lat) = lon_lat(ctx, j)?;
        let score = encode(lon, lat, (LAT_MIN, LAT_MAX)) as f64;
        pairs.push((score, ctx.args[j + 2].clone()));
    }
    let key = &ctx.args[1];
    if xx && ctx.get_zset(key)?.is_none() {
        return Ok(Frame::Integer(0));
    }
    let z = ctx
        .zset_mut(key, true)?
        .ok_or_else(|| err("ERR internal"))?;
    let (mut added, mut changed) = (0, 0);
    for (score, m) in pairs {
        match z.score(&m) {
            Some(cur) if !nx && cur != score => {
                z.insert(m, score);
                changed += 1;
            }
            Some(_) => {}
            None if !xx => {
                z.insert(m, score);
                added += 1;
            }
            None => {}
        }
    }
    if added + changed > 0 {
        ctx.notify(ZSET, "zadd", key);
    }
    ctx.modified(key);
    if added + changed == 0 {
        ctx.dirty = ctx.dirty.saturating_sub(1);
    }
    Ok(Frame::Integer(if ch { added + changed } else { added }))
}

fn geopos(ctx: &mut Ctx) -> Reply {
    let args = ctx.args;
    let scores: Vec<Option<f64>> = match ctx.get_zset(&args[1])? {
        Some(z) => args[2..].iter().map(|m| z.score(m)).collect(),
        None => vec![None; args.len() - 2],
    };
    let out = scores
        .into_iter()
        .map(|s| match s {
            Some(s) => {
                let (lon, lat) = decode(s);
                Frame::Array(vec![coord(ctx, lon), coord(ctx, lat)])
            }
            None => ctx.null_array(),
        })
        .collect();
    Ok(Frame::Array(out))
}

fn geodist(ctx: &mut Ctx) -> Reply {
    let to_meters = match ctx.args.len() {
        5 => unit(ctx, 4)?,
        n if n > 5 => return Err(err(SYNTAX)),
        _ => 1.0,
    };
    let args = ctx.args;
    let Some(z) = ctx.get_zset(&args[1])? else {
        return Ok(ctx.null());
    };
    let (Some(a), Some(b)) = (z.score(&args[2]), z.score(&args[3])) else {
        return Ok(ctx.null());
    };
    let ((lon1, lat1), (lon2, lat2)) = (decode(a), decode(b));
    Ok(dist_text(distance(lon1, lat1, lon2, lat2) / to_meters))
}

fn geohash(ctx: &mut Ctx) -> Reply {
    const ALPHABET: &[u8] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let args = ctx.args;
    let scores: Vec<Option<f64>> = match ctx.get_zset(&args[1])? {
        Some(z) => args[2..].iter().map(|m| z.score(m)).collect(),
        None => vec![None; args.len() - 2],
    };
    let out = scores
        .into_iter()
        .map(|s| match s {
            Some(s) => {
                // Re-encoded on the standard ±90 latitude range.
                let (lon, lat) = decode(s);
                let bits = encode(lon, lat, (-90.0, 90.0));
                let text: Vec<u8> = (0..11)
                    .map(|i| {
                        let idx = if i == 10 {
                            0
                        } else {
                            (bits >> (52 - (i + 1) * 5)) & 0x1f
                        };
                        ALPHABET[idx as usize]
                    })
                    .collect();
                Frame::Bulk(Bytes::from(text))
            }
            None => ctx.null(),
        })
        .collect();
    Ok(Frame::Array(out))
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Radius(f64),
    Box(f64, f64),
}

const COORDS: u8 = 1;
const MEMBER: u8 = 2;
const NOSTORE: u8 = 4;
const SEARCH: u8 = 8;
const SEARCHSTORE: u8 = 16;

fn georadius(ctx: &mut Ctx) -> Reply {
    search(ctx, 1, COORDS)
}
fn georadius_ro(ctx: &mut Ctx) -> Reply {
    search(ctx, 1, COORDS | NOSTORE)
}
fn georadiusbymember(ctx: &mut Ctx) -> Reply {
    search(ctx, 1, MEMBER)
}
fn georadiusbymember_ro(ctx: &mut Ctx) -> Reply {
    search(ctx, 1, MEMBER | NOSTORE)
}
fn geosearch(ctx: &mut Ctx) -> Reply {
    search(ctx, 1, SEARCH)
}
fn geosearchstore(ctx: &mut Ctx) -> Reply {
    search(ctx, 2, SEARCH | SEARCHSTORE)
}

fn member_pos(z: Option<&ZSet>, m: &[u8]) -> Result<(f64, f64), Frame> {
    z.and_then(|z| z.score(m))
        .map(decode)
        .ok_or_else(|| err("ERR could not decode requested zset member"))
}

/// Redis's `georadiusGeneric`: arguments checked in its order, then the
/// matches, sorted, counted, replied or stored.
fn search(ctx: &mut Ctx, src: usize, flags: u8) -> Reply {
    let src_key = ctx.args[src].clone();
    let z = ctx.get_zset(&src_key)?.cloned();
    let mut center = (0.0, 0.0);
    let mut shape = None;
    let mut conversion = 1.0;
    let mut store: Option<Bytes> = None;
    let base;
    if flags & COORDS != 0 {
        base = 6;
        center = lon_lat(ctx, 2)?;
        let r = float_or(ctx, 4, "ERR need numeric radius")?;
        if r < 0.0 {
            return Err(err("ERR radius cannot be negative"));
        }
        conversion = unit(ctx, 5)?;
        shape = Some(Shape::Radius(r));
    } else if flags & MEMBER != 0 {
        base = 5;
        if z.is_some() {
            center = member_pos(z.as_ref(), &ctx.args[2])?;
            let r = float_or(ctx, 3, "ERR need numeric radius")?;
            if r < 0.0 {
                return Err(err("ERR radius cannot be negative"));
            }
            conversion = unit(ctx, 4)?;
            shape = Some(Shape::Radius(r));
        }
    } else if flags & SEARCHSTORE != 0 {
        base = 3;
        store = Some(ctx.args[1].clone());
    } else {
        base = 2;
    }
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut from_member, mut from_loc, mut by_radius, mut by_box) = (false, false, false, false);
    let mut storedist = false;
    let mut sort: i8 = 0;
    let mut count: i64 = 0;
    let n = ctx.args.len();
    let mut i = base;
    while i < n {
        let remaining = n - i - 1;
        let search = flags & SEARCH != 0;
        let may_store = flags & NOSTORE == 0 && !search;
        if ctx.arg_is(i, "WITHDIST") {
            withdist = true;
        } else if ctx.arg_is(i, "WITHHASH") {
            withhash = true;
        } else if ctx.arg_is(i, "WITHCOORD") {
            withcoord = true;
        } else if ctx.arg_is(i, "ANY") {
            any = true;
        } else if ctx.arg_is(i, "ASC") {
            sort = 1;
        } else if ctx.arg_is(i, "DESC") {
            sort = -1;
        } else if ctx.arg_is(i, "COUNT") && remaining >= 1 {
            count = ctx.arg_i64(i + 1)?;
            if count <= 0 {
                return Err(err("ERR COUNT must be > 0"));
            }
            i += 1;
        } else if ctx.arg_is(i, "STORE") && remaining >= 1 && may_store {
            store = Some(ctx.args[i + 1].clone());
            storedist = false;
            i += 1;
        } else if ctx.arg_is(i, "STOREDIST") && remaining >= 1 && may_store {
            store = Some(ctx.args[i + 1].clone());
            storedist = true;
            i += 1;
        } else if ctx.arg_is(i, "STOREDIST") && search && flags & SEARCHSTORE != 0 {
            storedist = true;
        } else if ctx.arg_is(i, "FROMMEMBER") && remaining >= 1 && search && !from_loc {
            if z.is_some() {
                center = member_pos(z.as_ref(), &ctx.args[i + 1])?;
            }
            from_member = true;
            i += 1;
        } else if ctx.arg_is(i, "FROMLONLAT") && remaining >= 2 && search && !from_member {
            center = lon_lat(ctx, i + 1)?;
            from_loc = true;
            i += 2;
        } else if ctx.arg_is(i, "BYRADIUS") && remaining >= 2 && search && !by_box {
            let r = float_or(ctx, i + 1, "ERR need numeric radius")?;
            if r < 0.0 {
                return Err(err("ERR radius cannot be negative"));
            }
            conversion = unit(ctx, i + 2)?;
            shape = Some(Shape::Radius(r));
            by_radius = true;
            i += 2;
        } else if ctx.arg_is(i, "BYBOX") && remaining >= 3 && search && !by_radius {
            let w = float_or(ctx, i + 1, "ERR need numeric width")?;
            let h = float_or(ctx, i + 2, "ERR need numeric height")?;
            if w < 0.0 || h < 0.0 {
                return Err(err("ERR height or width cannot be negative"));
            }
            conversion = unit(ctx, i + 3)?;
            shape = Some(Shape::Box(w, h));
            by_box = true;
            i += 3;
        } else {
            return Err(err(SYNTAX));
        }
        i += 1;
    }
    if store.is_some() && (withdist || withhash || withcoord) {
        let what = if flags & SEARCHSTORE != 0 {
            "GEOSEARCHSTORE"
        } else {
            "STORE option in GEORADIUS"
        };
        return Err(err(&format!(
            "ERR {what} is not compatible with WITHDIST, WITHHASH and WITHCOORD options"
        )));
    }
    let name = String::from_utf8_lossy(&ctx.args[0]).into_owned();
    if flags & SEARCH != 0 && !(from_member || from_loc) {
        return Err(err(&format!(
            "ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        )));
    }
    if flags & SEARCH != 0 && !(by_radius || by_box) {
        return Err(err(&format!(
            "ERR exactly one of BYRADIUS and BYBOX can be specified for {name}"
        )));
    }
    if any && count == 0 {
        return Err(err("ERR the ANY argument requires COUNT argument"));
    }
    let (Some(z), Some(shape)) = (z, shape) else {
        if let Some(dst) = store {
            if ctx.delete(&dst) {
                ctx.propagate(vec![Bytes::from_static(b"DEL"), dst]);
            }
            return Ok(Frame::Integer(0));
        }
        return Ok(Frame::Array(Vec::new()));
    };
    if count != 0 && sort == 0 && !any {
        sort = 1;
    }
    // (member, score, distance in metres, lon, lat), in geohash order.
    let mut found = Vec::new();
    for (m, score) in z.iter() {
        let (lon, lat) = decode(score);
        let within = match shape {
            Shape::Radius(r) => {
                let d = distance(center.0, center.1, lon, lat);
                (d <= r * conversion).then_some(d)
            }
            Shape::Box(w, h) => {
                let (w, h) = (w * conversion, h * conversion);
                // The width is measured at the point's latitude, as Redis does.
                if lat_distance(lat, center.1) > h / 2.0
                    || distance(lon, lat, center.0, lat) > w / 2.0
                {
                    None
                } else {
                    Some(distance(center.0, center.1, lon, lat))
                }
            }
        };
        if let Some(d) = within {
            found.push((m.clone(), score, d, lon, lat));
            if any && found.len() as i64 >= count {
                break;
            }
        }
    }
    if found.is_empty() && store.is_none() {
        return Ok(Frame::Array(Vec::new()));
    }
    match sort {
        1 => found.sort_by(|a, b| a.2.total_cmp(&b.2)),
        -1 => found.sort_by(|a, b| b.2.total_cmp(&a.2)),
        _ => {}
    }
    if count > 0 {
        found.truncate(count as usize);
    }
    let Some(dst) = store else {
        let options = withdist as usize + withhash as usize + withcoord as usize;
        let out = found
            .into_iter()
            .map(|(m, score, d, lon, lat)| {
                if options == 0 {
                    return Frame::Bulk(m);
                }
                let mut item = vec![Frame::Bulk(m)];
                if withdist {
                    item.push(dist_text(d / conversion));
                }
                if withhash {
                    item.push(Frame::Integer(score as i64));
                }
                if withcoord {
                    item.push(Frame::Array(vec![coord(ctx, lon), coord(ctx, lat)]));
                }
                Frame::Array(item)
            })
            .collect();
        return Ok(Frame::Array(out));
    };
    let n = found.len();
    if n == 0 {
        if ctx.delete(&dst) {
            ctx.propagate(vec![Bytes::from_static(b"DEL"), dst]);
        }
        return Ok(Frame::Integer(0));
    }
    let stored = Value::zset(
        found
            .into_iter()
            .map(|(m, score, d, _, _)| (m, if storedist { d / conversion } else { score })),
    );
    ctx.set_value(&dst, stored, false);
    let event = if flags & SEARCH != 0 {
        "geosearchstore"
    } else {
        "georadiusstore"
    };
    ctx.notify(ZSET, event, &dst);
    Ok(Frame::Integer(n as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_survives_encode_and_decode_within_the_cell() {
        let s = encode(13.361389, 38.115556, (LAT_MIN, LAT_MAX)) as f64;
        let (lon, lat) = decode(s);
        assert!((lon - 13.361389).abs() < 1e-5 && (lat - 38.115556).abs() < 1e-5);
    }
}
