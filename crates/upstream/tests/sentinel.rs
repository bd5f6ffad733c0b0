//! The Sentinel follower against real Sentinels: a primary that turns
//! replica behind the Sentinels' back (an operator's `REPLICAOF`, a
//! failover they have not announced yet) is a failover in progress, not a
//! primary: Redoubt's state is Down until the Sentinels' primary answers
//! `ROLE master` again.

use std::time::Duration;

use test_support::sentinel::{SentinelSet, SENTINEL_PASSWORD};
use test_support::wait_for;
use upstream::health::spawn_prober;
use upstream::{Credentials, HealthConfig, State, UpstreamUrl};

#[test]
fn a_primary_that_answers_as_a_replica_is_a_failover_in_progress() {
    // Sentinel itself must not act during the test: a long down-after.
    let set = SentinelSet::start(60_000);
    let url = UpstreamUrl::parse(&set.url())
        .unwrap()
        .with_sentinel_auth(Some(Credentials {
            user: None,
            password: SENTINEL_PASSWORD.into(),
        }));
    let sentinel = url.sentinel.clone().unwrap();
    // The prober and the follower run on a thread of their own.
    let health = spawn_prober(
        url,
        HealthConfig {
            interval_ms: 50,
            timeout_ms: 200,
            down_after: 2,
            up_after: 2,
        },
    );
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
