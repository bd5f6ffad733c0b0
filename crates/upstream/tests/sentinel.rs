//! The Sentinel follower against real Sentinels: a primary that turns
//! replica behind the Sentinels' back (an operator's `REPLICAOF`, a
//! failover they have not announced yet) is a failover in progress, not a
//! primary: Redoubt's state is Down until the Sentinels' primary answers
//! `ROLE master` again.

use std::time::Duration;

use std::sync::Arc;
use test_support::sentinel::{query, SentinelSet, MASTER, SENTINEL_PASSWORD};
use test_support::{wait_for, RedisServer};
use upstream::health::spawn_prober;

use upstream::sentinel::Sentinel;
use upstream::{Credentials, HealthConfig, HealthHandle, State, UpstreamUrl};

/// The follower and the prober for `set`, logged in to its Sentinels,
/// running on a thread of their own.
fn follow(set: &SentinelSet) -> (Arc<Sentinel>, HealthHandle) {
    let url = UpstreamUrl::parse(&set.url())
        .unwrap()
        .with_sentinel_auth(Some(Credentials {
            user: None,
            password: SENTINEL_PASSWORD.into(),
        }));
    let sentinel = url.sentinel.clone().unwrap();
    let health = spawn_prober(
        url,
        HealthConfig {
            interval_ms: 50,
            timeout_ms: 200,
            down_after: 2,
            up_after: 2,
        },
    );
    (sentinel, health)
}

#[test]
fn a_primary_that_answers_as_a_replica_is_a_failover_in_progress() {
    // Sentinel itself must not act during the test: a long down-after.
    let set = SentinelSet::start(60_000);
    let (sentinel, health) = follow(&set);
    let primary = set.primary();
    wait_for("Up on the primary", Duration::from_secs(10), || {
        health.state() == State::Up
            && sentinel.primary() == Some(format!("127.0.0.1:{}", primary.port()))
    });
    assert!(sentinel.failover().is_none());

    // Behind the Sentinels' back: a replica promoted by hand and the
    // primary made its replica. The Sentinels still name the old address.
    let other = set
        .servers
        .iter()
        .find(|s| s.port() != primary.port())
        .unwrap();
    other.cmd(&["REPLICAOF", "NO", "ONE"]);
    primary.cmd(&["REPLICAOF", "127.0.0.1", &other.port().to_string()]);
    wait_for(
        "Down: a failover in progress",
        Duration::from_secs(10),
        || health.state() == State::Down,
    );
    let why = health.current().reason;
    assert!(
        why.contains("sentinel failover of 'mymaster' in progress"),
        "{why}"
    );
    assert!(why.contains("slave"), "{why}");
    assert!(sentinel.failover().is_some());

    // Put back: the Sentinels' primary is a master again, and no Sentinel
    // runs a failover: over (an aborted one, to the same address).
    primary.cmd(&["REPLICAOF", "NO", "ONE"]);
    other.cmd(&["REPLICAOF", "127.0.0.1", &primary.port().to_string()]);
    wait_for("Up again", Duration::from_secs(10), || {
        health.state() == State::Up
    });
    let status = sentinel.status();
    let last = status.failovers.last().expect("the failover recorded");
    assert_eq!(last.from, Some(format!("127.0.0.1:{}", primary.port())));
    assert_eq!(last.to, format!("127.0.0.1:{}", primary.port()));
    assert!(last.why.contains("slave"), "{}", last.why);
}

/// After a failover its leader names the new primary under a new
/// `config-epoch`; the other Sentinels name the old one until they hear of
/// it, and the old primary answers `ROLE master` until it is reconfigured.
/// The follower must take the newest configuration, not the first answer:
/// neither end the failover on the old primary (as aborted) nor go back to
/// it on a later refresh. Here the leader is cut off from the other
/// Sentinels, so they keep naming the old primary for the whole test.
#[test]
fn the_primary_named_under_the_newest_epoch_wins_over_the_first_sentinel_asked() {
    let set = SentinelSet::start(60_000);
    let (sentinel, health) = follow(&set);
    let old = set.primary();
    let old_addr = format!("127.0.0.1:{}", old.port());
    wait_for("Up on the primary", Duration::from_secs(10), || {
        health.state() == State::Up && sentinel.primary().as_deref() == Some(old_addr.as_str())
    });

    // The URL's last Sentinel monitors the master's name on another pair
    // of servers, and cannot tell the other Sentinels (a wrong password
    // for them): its configuration stays its own.
    let base = RedisServer::start(&["--repl-diskless-sync-delay", "0"]);
    let promoted = RedisServer::start(&[
        "--replicaof",
        "127.0.0.1",
        &base.port().to_string(),
        "--repl-diskless-sync-delay",
        "0",
    ]);
    let new_addr = format!("127.0.0.1:{}", promoted.port());
    wait_for("replica linked", Duration::from_secs(20), || {
        promoted
            .cmd(&["INFO", "replication"])
            .contains("master_link_status:up")
    });
    let leader = set.sentinels.last().unwrap();
    for cmd in [
        &["SENTINEL", "CONFIG", "SET", "sentinel-pass", "not-theirs"][..],
        &["SENTINEL", "REMOVE", MASTER],
        &[
            "SENTINEL",
            "MONITOR",
            MASTER,
            "127.0.0.1",
            &base.port().to_string(),
            "2",
        ],
    ] {
        assert_eq!(leader.cmd(cmd), ["OK"], "{cmd:?}");
    }
    wait_for(
        "the last Sentinel to see its replica",
        Duration::from_secs(30),
        || {
            let r = leader.cmd(&["SENTINEL", "replicas", MASTER]);
            r.concat().contains(&promoted.port().to_string())
                && r.iter().any(|v| v == "master-link-status")
        },
    );
    // Equal epochs: the primary in use stays.
    assert_eq!(sentinel.primary().as_deref(), Some(old_addr.as_str()));

    // A failover begins: the old primary answers as a replica.
    old.cmd(&["REPLICAOF", "127.0.0.1", "1"]);
    wait_for("a failover in progress", Duration::from_secs(10), || {
        sentinel.failover().is_some()
    });
    // The last Sentinel runs one, under a new epoch.
    wait_for(
        "the last Sentinel's failover",
        Duration::from_secs(30),
        || leader.cmd(&["SENTINEL", "FAILOVER", MASTER]) == ["OK"],
    );
    wait_for(
        "the last Sentinel to name the promoted replica",
        Duration::from_secs(30),
        || {
            leader.cmd(&["SENTINEL", "get-master-addr-by-name", MASTER])
                == ["127.0.0.1".to_string(), promoted.port().to_string()]
        },
    );
    // The old primary answers as a master again; the first Sentinels
    // still name it.
    old.cmd(&["REPLICAOF", "NO", "ONE"]);
    wait_for(
        "Up on the promoted replica",
        Duration::from_secs(10),
        || health.state() == State::Up && sentinel.failover().is_none(),
    );
    assert_eq!(sentinel.primary().as_deref(), Some(new_addr.as_str()));
    let status = sentinel.status();
    let f = status.failovers.last().expect("the failover recorded");
    assert_eq!(f.from.as_deref(), Some(old_addr.as_str()));
    assert_eq!(f.to, new_addr);

    // And it stays there across the follower's periodic refresh (5 s),
    // while the first Sentinel asked still names the old primary, which
    // answers as a master.
    let until = std::time::Instant::now() + Duration::from_secs(7);
    while std::time::Instant::now() < until {
        assert_eq!(sentinel.primary().as_deref(), Some(new_addr.as_str()));
        assert!(sentinel.failover().is_none());
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = &set.sentinels[0];
    assert_eq!(
        first.cmd(&["SENTINEL", "get-master-addr-by-name", MASTER]),
        ["127.0.0.1".to_string(), old.port().to_string()],
        "the first Sentinel heard of the failover: the test proves nothing"
    );
    let role = query(old.port(), &["ROLE"]).unwrap();
    assert_eq!(role.first().map(String::as_str), Some("master"), "{role:?}");
}

/// A failover that no Sentinel reports in progress any more, while one
/// Sentinel does not answer, may be over with that one as its leader and
/// the others not told yet: the follower waits for the Sentinels'
/// `failover-timeout` (10 s here) before calling it aborted.
#[test]
fn an_aborted_failover_with_a_sentinel_unanswered_ends_after_the_failover_timeout() {
    let mut set = SentinelSet::start(60_000);
    let (sentinel, health) = follow(&set);
    let port = set.primary_port();
    let addr = format!("127.0.0.1:{port}");
    wait_for("Up on the primary", Duration::from_secs(10), || {
        health.state() == State::Up && sentinel.primary().as_deref() == Some(addr.as_str())
    });
    set.sentinels[2].kill();
    set.server(port).cmd(&["REPLICAOF", "127.0.0.1", "1"]);
    wait_for("a failover in progress", Duration::from_secs(10), || {
        sentinel.failover().is_some()
    });
    set.server(port).cmd(&["REPLICAOF", "NO", "ONE"]);
    wait_for("Up again", Duration::from_secs(30), || {
        health.state() == State::Up && sentinel.failover().is_none()
    });
    let status = sentinel.status();
    let f = status.failovers.last().expect("the failover recorded");
    assert_eq!(f.to, addr);
    assert!(
        f.duration_ms >= 10_000,
        "called aborted after {} ms, before the failover-timeout",
        f.duration_ms
    );
}
