//! `maxmemory` and the eviction policies, sampled like Redis (a few random
//! candidates per round, the best one evicted) rather than exact.

use rand::Rng;

use crate::config::Policy;
use crate::store::Inner;
use crate::value::Entry;
use crate::Effect;

/// What an empty redis-server 7.0 reports as `used_memory`: its own
/// structures (`used_memory_startup`, ~0.86 MB, and a little more once
/// clients connect). Redis counts them against `maxmemory`, so a limit
/// below them refuses every write; counting them too keeps that so here.
pub(crate) const BASELINE: usize = 900 * 1024;

/// `used_memory` as Redis reports it and compares with `maxmemory`: the
/// data and the baseline.
pub(crate) fn used(inner: &Inner) -> usize {
    inner.used_memory.saturating_add(BASELINE)
}

pub(crate) const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Updates LRU time and the LFU counter on access (Redis's
/// `updateLFU`: decay by elapsed minutes, then a logarithmic increment).
pub(crate) fn record_access(e: &mut Entry, now: u64, log_factor: u32, decay_minutes: u64) {
    if let Some(periods) = (now.saturating_sub(e.access) / 60_000).checked_div(decay_minutes) {
        e.freq = e.freq.saturating_sub(periods.min(255) as u8);
    }
    if e.freq < 255 {
        let base = f64::from(e.freq.saturating_sub(crate::value::LFU_INIT));
        let p = 1.0 / (base * f64::from(log_factor) + 1.0);
        if rand::thread_rng().gen::<f64>() < p {
            e.freq += 1;
        }
    }
    e.access = now;
}

/// Evicts keys until used memory is under `maxmemory`. False when that is
/// impossible (noeviction, or nothing left to evict): the command gets OOM.
/// The evicted keys are recorded as DEL effects so a journal forgets them.
pub(crate) fn make_room(inner: &mut Inner, now: u64, effects: &mut Vec<Effect>) -> bool {
    let max = inner.config.maxmemory as usize;
    if max == 0 || used(inner) <= max {
        return true;
    }
    let policy = inner.config.policy;
    if policy == Policy::NoEviction {
        return false;
    }
    let samples = inner.config.samples;
    let mut rng = rand::thread_rng();
    while used(inner) > max {
        // Best candidate over all databases: (score, db, key); lower score
        // is evicted first.
        let mut best: Option<(u64, usize, bytes::Bytes)> = None;
        for (dbi, db) in inner.dbs.iter().enumerate() {
            let pool_len = if policy.volatile_only() {
                db.volatile.len()
            } else {
                db.map.len()
            };
            if pool_len == 0 {
                continue;
            }
            // A pool no bigger than the sample is looked at whole, so small
            // keyspaces evict exactly the best candidate.
            let picks: Vec<usize> = if pool_len <= samples {
                (0..pool_len).collect()
            } else {
                (0..samples).map(|_| rng.gen_range(0..pool_len)).collect()
            };
            for i in picks {
                let key = if policy.volatile_only() {
                    db.volatile.get_index(i)
                } else {
                    db.map.get_index(i).map(|(k, _)| k)
                };
                let Some(key) = key else { continue };
                let Some(e) = db.map.get(&key[..]) else {
                    continue;
                };
                let score = match policy {
                    Policy::AllKeysLru | Policy::VolatileLru => e.access,
                    Policy::AllKeysLfu | Policy::VolatileLfu => u64::from(e.freq),
                    Policy::VolatileTtl => e.expire_at.unwrap_or(u64::MAX),
                    _ => rng.gen(),
                };
                if best.as_ref().is_none_or(|(s, _, _)| score < *s) {
                    best = Some((score, dbi, key.clone()));
                }
            }
        }
        let Some((_, db, key)) = best else {
            return false;
        };
        inner.delete_key(db, &key);
        inner.touch_watched(db, &key);
        inner.stats.evicted_keys += 1;
        crate::pubsub::notify(inner, db, crate::pubsub::class::EVICTED, "evicted", &key);
        effects.push(Effect {
            db,
            args: vec![bytes::Bytes::from_static(b"DEL"), key],
        });
    }
    let _ = now;
    true
}
