//! Credentials Redis accepted recently, so a client that reconnects while
//! Redis is down can still log in (DESIGN, Security).
//!
//! Only salted hashes are kept, in memory only: each remembered password is
//! `SHA-256(salt ‖ password)` with a fresh random salt, so two users with
//! the same password get different hashes and nothing on disk or in a core
//! dump reads back as a password list. SHA-256 is fast, so a memory dump
//! still allows guessing weak passwords offline; the bounds keep what is
//! exposed small and recent:
//! - at most [`MAX_PASSWORDS_PER_USER`] passwords per user (a rotation in
//!   progress), the least recently accepted dropped first;
//! - at most `max_users` users, the least recently accepted dropped first;
//! - nothing older than `max_age` since Redis last accepted it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Passwords remembered per user: the current one and one being rotated
/// out.
pub const MAX_PASSWORDS_PER_USER: usize = 2;

/// What the memory says about a user and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// Redis accepted this user and password recently.
    Match,
    /// Redis accepted this user recently, with another password.
    Mismatch,
    /// Nothing recent about this user.
    Unknown,
}

struct Remembered {
    salt: [u8; 16],
    digest: [u8; 32],
    accepted: Instant,
}

/// Salted hashes of recently accepted credentials, bounded in users and
/// age.
pub struct CredentialMemory {
    max_users: usize,
    max_age: Duration,
    users: HashMap<String, Vec<Remembered>>,
}

fn salted(salt: &[u8; 16], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    h.finalize().into()
}

/// Compares without stopping at the first difference, so timing does not
/// tell how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

impl CredentialMemory {
    /// An empty memory of at most `max_users` users, each forgotten
    /// `max_age` after Redis last accepted it.
    pub fn new(max_users: usize, max_age: Duration) -> CredentialMemory {
        CredentialMemory {
            max_users: max_users.max(1),
            max_age,
            users: HashMap::new(),
        }
    }

    /// Redis accepted `user` with `password` at `now`.
    pub fn remember(&mut self, user: &str, password: &[u8], now: Instant) {
        self.expire(now);
        let entries = self.users.entry(user.to_string()).or_default();
        // The same password again: refresh it rather than keep two.
        entries.retain(|e| !constant_time_eq(&salted(&e.salt, password), &e.digest));
        let salt: [u8; 16] = rand::random();
        entries.push(Remembered {
            salt,
            digest: salted(&salt, password),
            accepted: now,
        });
        if entries.len() > MAX_PASSWORDS_PER_USER {
            entries.sort_by_key(|e| e.accepted);
            let extra = entries.len() - MAX_PASSWORDS_PER_USER;
            entries.drain(..extra);
        }
        while self.users.len() > self.max_users {
            let oldest = self
                .users
                .iter()
                .filter(|(name, _)| name.as_str() != user)
                .min_by_key(|(_, e)| e.iter().map(|r| r.accepted).max())
                .map(|(name, _)| name.clone());
            match oldest {
                Some(name) => {
                    self.users.remove(&name);
                }
                None => break,
            }
        }
    }

    /// Checks `user` and `password` against what Redis accepted recently.
    pub fn recall(&mut self, user: &str, password: &[u8], now: Instant) -> Recall {
        self.expire(now);
        let Some(entries) = self.users.get(user) else {
            return Recall::Unknown;
        };
        // Every entry is hashed and compared, match or not.
        let matched = entries.iter().fold(false, |m, e| {
            m | constant_time_eq(&salted(&e.salt, password), &e.digest)
        });
        if matched {
            Recall::Match
        } else {
            Recall::Mismatch
        }
    }

    /// Redis refused `password` for `user`: it must not log in during an
    /// outage either.
    pub fn forget_password(&mut self, user: &str, password: &[u8]) {
        if let Some(entries) = self.users.get_mut(user) {
            entries.retain(|e| !constant_time_eq(&salted(&e.salt, password), &e.digest));
            if entries.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// The user was deleted, disabled, or its passwords changed.
    pub fn forget_user(&mut self, user: &str) {
        self.users.remove(user);
    }

    /// Users remembered now.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(|s| s.as_str())
    }

    /// How many users are remembered.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn expire(&mut self, now: Instant) {
        let max_age = self.max_age;
        self.users.retain(|_, entries| {
            entries.retain(|e| now.saturating_duration_since(e.accepted) < max_age);
            !entries.is_empty()
        });
    }
}

impl std::fmt::Debug for CredentialMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes: user names and counts only.
        f.debug_struct("CredentialMemory")
            .field("users", &self.users.len())
            .field("max_users", &self.max_users)
            .field("max_age", &self.max_age)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn remembers_what_redis_accepted_and_tells_wrong_from_unknown() {
        let mut m = CredentialMemory::new(10, DAY);
        let t = Instant::now();
        m.remember("app", b"s3cret", t);
        assert_eq!(m.recall("app", b"s3cret", t), Recall::Match);
        assert_eq!(m.recall("app", b"s3cre", t), Recall::Mismatch);
        assert_eq!(m.recall("app", b"", t), Recall::Mismatch);
        assert_eq!(m.recall("other", b"s3cret", t), Recall::Unknown);
        m.forget_password("app", b"s3cret");
        assert_eq!(m.recall("app", b"s3cret", t), Recall::Unknown);
    }

    #[test]
    fn salted_so_the_same_password_hashes_differently() {
        let mut m = CredentialMemory::new(10, DAY);
        let t = Instant::now();
        m.remember("alice", b"same", t);
        m.remember("bob", b"same", t);
        let a = &m.users["alice"][0];
        let b = &m.users["bob"][0];
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.digest, b.digest);
        let plain: [u8; 32] = Sha256::digest(b"same").into();
        assert_ne!(a.digest, plain, "not an unsalted hash");
        assert!(!format!("{m:?}").contains("same"));
    }

    #[test]
    fn forgets_after_the_age_limit_counted_from_the_last_acceptance() {
        let mut m = CredentialMemory::new(10, DAY);
        let t = Instant::now();
        m.remember("app", b"pw", t);
        let later = t + DAY - Duration::from_secs(1);
        assert_eq!(m.recall("app", b"pw", later), Recall::Match);
        // Accepted again: the clock starts over.
        m.remember("app", b"pw", later);
        assert_eq!(m.users["app"].len(), 1, "refreshed, not duplicated");
        assert_eq!(m.recall("app", b"pw", t + DAY), Recall::Match);
        assert_eq!(m.recall("app", b"pw", later + DAY), Recall::Unknown);
        assert!(m.is_empty());
    }

    #[test]
    fn bounded_in_users_and_passwords_dropping_the_least_recent() {
        let mut m = CredentialMemory::new(3, DAY);
        let t = Instant::now();
        for (i, u) in ["a", "b", "c", "d"].iter().enumerate() {
            m.remember(u, b"pw", t + Duration::from_secs(i as u64));
        }
        assert_eq!(m.len(), 3);
        assert_eq!(m.recall("a", b"pw", t), Recall::Unknown, "oldest dropped");
        assert_eq!(m.recall("d", b"pw", t), Recall::Match);

        let mut m = CredentialMemory::new(3, DAY);
        for (i, pw) in [&b"one"[..], b"two", b"three"].iter().enumerate() {
            m.remember("rot", pw, t + Duration::from_secs(i as u64));
        }
        assert_eq!(m.recall("rot", b"one", t), Recall::Mismatch);
        assert_eq!(m.recall("rot", b"two", t), Recall::Match);
        assert_eq!(m.recall("rot", b"three", t), Recall::Match);
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
