//! Active expiry: Redis's `activeExpireCycle`, sampling keys with a TTL so
//! expired keys nobody reads still release their memory.

use std::time::{Duration, Instant};

use rand::Rng;

use crate::store::Shared;

/// Keys sampled per database per round (Redis: 20).
const SAMPLE: usize = 20;
/// Another round follows while more than this many of a sample expired
/// (Redis: 25 %).
const REPEAT_ABOVE: usize = SAMPLE / 4;
/// Time budget of one cycle, so the lock is never held long.
const BUDGET: Duration = Duration::from_millis(2);

pub(crate) fn active_cycle(shared: &Shared, now: u64) -> usize {
    if shared.expiry_paused() {
        return 0;
    }
    let start = Instant::now();
    let mut inner = shared.lock();
    let mut rng = rand::thread_rng();
    let mut deleted = 0;
    for db in 0..inner.dbs.len() {
        loop {
            let n = inner.dbs[db].volatile.len();
            if n == 0 {
                break;
            }
            let mut expired = Vec::new();
            for _ in 0..SAMPLE.min(n) {
                let i = rng.gen_range(0..n);
                if let Some(k) = inner.dbs[db].volatile.get_index(i) {
                    if inner.dbs[db].is_expired(k, now) && !expired.contains(k) {
                        expired.push(k.clone());
                    }
                }
            }
            for k in &expired {
                inner.delete_key(db, k);
                inner.touch_watched(db, k);
                inner.stats.expired_keys += 1;
                crate::pubsub::notify(&mut inner, db, crate::pubsub::class::EXPIRED, "expired", k);
            }
            deleted += expired.len();
            if expired.len() <= REPEAT_ABOVE || start.elapsed() > BUDGET {
                break;
            }
        }
        if start.elapsed() > BUDGET {
            break;
        }
    }
    deleted
}
