//! Which keys the tracker asks Redis about: the literal prefixes of the
//! `cache` and `durable` keyspace globs.
//!
//! `CLIENT TRACKING … BCAST PREFIX p` reports writes to every key starting
//! with `p`, so a glob is covered by the literal text before its first
//! special character (`*`, `?`, `[`, or an escape `\`). Tracking a superset
//! only costs extra invalidations; tracking a subset would lose some, so
//! the derivation always errs towards shorter prefixes. Redis refuses
//! prefixes that overlap (one starting with another), so a prefix covered
//! by a shorter one is dropped.

use bytes::Bytes;

/// What the tracking connection subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracked {
    /// Every key (a glob with no literal prefix, such as `*`): `BCAST`
    /// with no `PREFIX`.
    Everything,
    /// Keys starting with one of these; sorted, none a prefix of another.
    Prefixes(Vec<Bytes>),
}

impl Tracked {
    /// The prefixes covering `patterns` (the globs of the `cache` and
    /// `durable` keyspaces). `None` when there are no patterns: nothing to
    /// track, so no tracker should run.
    pub fn from_patterns<I, P>(patterns: I) -> Option<Tracked>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut prefixes: Vec<Bytes> = patterns
            .into_iter()
            .map(|p| Bytes::copy_from_slice(literal_prefix(p.as_ref())))
            .collect();
        if prefixes.is_empty() {
            return None;
        }
        if prefixes.iter().any(|p| p.is_empty()) {
            return Some(Tracked::Everything);
        }
        // Sorted, a prefix comes right before the strings it covers, so
        // one pass against the last kept prefix removes every overlap.
        prefixes.sort();
        let mut kept: Vec<Bytes> = Vec::with_capacity(prefixes.len());
        for p in prefixes {
            if kept.last().is_some_and(|k| p.starts_with(k)) {
                continue;
            }
            kept.push(p);
        }
        Some(Tracked::Prefixes(kept))
    }

    /// True if writes to `key` are reported to the tracker.
    pub fn covers(&self, key: &[u8]) -> bool {
        match self {
            Tracked::Everything => true,
            Tracked::Prefixes(ps) => ps.iter().any(|p| key.starts_with(p)),
        }
    }

    /// `CLIENT TRACKING ON BCAST [PREFIX p]…`, as arguments.
    pub fn command(&self) -> Vec<Bytes> {
        let mut args: Vec<Bytes> = [&b"CLIENT"[..], b"TRACKING", b"ON", b"BCAST"]
            .into_iter()
            .map(Bytes::from_static)
            .collect();
        if let Tracked::Prefixes(ps) = self {
            for p in ps {
                args.push(Bytes::from_static(b"PREFIX"));
                args.push(p.clone());
            }
        }
        args
    }
}

/// The literal text of a Redis glob before its first special character.
pub fn literal_prefix(pattern: &[u8]) -> &[u8] {
    let end = pattern
        .iter()
        .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
        .unwrap_or(pattern.len());
    &pattern[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes(ps: &[&str]) -> Tracked {
        Tracked::Prefixes(ps.iter().map(|p| Bytes::from(p.to_string())).collect())
    }

    #[test]
    fn literal_prefix_stops_at_the_first_special_character() {
        for (glob, want) in [
            ("sess:*", "sess:"),
            ("user:?:name", "user:"),
            ("job:[ab]*", "job:"),
            (r"odd\*key", "odd"),
            ("exact", "exact"),
            ("*", ""),
            ("", ""),
        ] {
            assert_eq!(literal_prefix(glob.as_bytes()), want.as_bytes(), "{glob}");
        }
    }

    #[test]
    fn overlapping_prefixes_keep_only_the_shorter_one() {
        let t = Tracked::from_patterns(["sess:admin:*", "cache:*", "sess:*", "sess:*:x"]);
        assert_eq!(t, Some(prefixes(&["cache:", "sess:"])));
    }

    #[test]
    fn a_glob_without_literal_prefix_tracks_everything() {
        assert_eq!(
            Tracked::from_patterns(["sess:*", "*:tmp"]),
            Some(Tracked::Everything)
        );
        assert_eq!(Tracked::Everything.command().len(), 4);
    }

    #[test]
    fn no_patterns_means_no_tracking() {
        assert_eq!(Tracked::from_patterns(Vec::<&str>::new()), None);
    }

    #[test]
    fn command_names_each_prefix_and_covers_matches_them() {
        let t = prefixes(&["a:", "b:"]);
        let cmd = t.command();
        let cmd: Vec<&[u8]> = cmd.iter().map(|b| &b[..]).collect();
        assert_eq!(
            cmd,
            [
                &b"CLIENT"[..],
                b"TRACKING",
                b"ON",
                b"BCAST",
                b"PREFIX",
                b"a:",
                b"PREFIX",
                b"b:"
            ]
        );
        assert!(t.covers(b"a:1") && t.covers(b"b:") && !t.covers(b"c:1") && !t.covers(b"a"));
    }
}
