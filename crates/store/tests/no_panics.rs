//! Any command from the table with arbitrary arguments must get a reply,
//! never a panic: the store serves untrusted clients.

use bytes::Bytes;
use proptest::prelude::*;
use resp::command::{COMMANDS, SUBCOMMANDS};
use store::{Store, StoreConfig};

const WORDS: &[&str] = &[
    "k",
    "l",
    "h",
    "s",
    "z",
    "0",
    "1",
    "-1",
    "2",
    "10",
    "-10",
    "1.5",
    "inf",
    "-inf",
    "(1",
    "[a",
    "-",
    "+",
    "*",
    "?",
    "x",
    "NX",
    "XX",
    "GT",
    "LT",
    "CH",
    "INCR",
    "EX",
    "PX",
    "EXAT",
    "PXAT",
    "KEEPTTL",
    "GET",
    "PERSIST",
    "WITHSCORES",
    "LIMIT",
    "BYSCORE",
    "BYLEX",
    "REV",
    "COUNT",
    "MATCH",
    "TYPE",
    "LEFT",
    "RIGHT",
    "MIN",
    "MAX",
    "BEFORE",
    "AFTER",
    "RANK",
    "MAXLEN",
    "WEIGHTS",
    "AGGREGATE",
    "SUM",
    "DB",
    "REPLACE",
    "BIT",
    "BYTE",
    "ID",
    "SKIPME",
    "yes",
    "9223372036854775807",
    "-9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999",
    "",
];

fn names() -> Vec<String> {
    COMMANDS
        .iter()
        .chain(SUBCOMMANDS.iter())
        .map(|c| c.name.replace('|', " "))
        // Blocking forever would stall the test; their parsing is covered
        // with zero timeouts below.
        .filter(|n| {
            !n.starts_with('b') || !(n.ends_with("pop") || n.contains("pop") || n.contains("move"))
        })
        .collect()
}

#[test]
fn arbitrary_arguments_never_panic() {
    let names = names();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let store = Store::new(StoreConfig::default());
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 4000,
        failure_persistence: None,
        ..Default::default()
    });
    let strategy = (0..names.len(), prop::collection::vec(0..WORDS.len(), 0..7));
    runner
        .run(&strategy, |(n, words)| {
            let mut args: Vec<Bytes> = names[n]
                .split(' ')
                .map(|p| Bytes::copy_from_slice(p.as_bytes()))
                .collect();
            args.extend(
                words
                    .iter()
                    .map(|w| Bytes::from_static(WORDS[*w].as_bytes())),
            );
            rt.block_on(async {
                let mut s = store.session();
                // Seed every type so handlers reach their deep paths.
                for seed in [
                    &["RPUSH", "l", "a", "b"][..],
                    &["HSET", "h", "f", "1"],
                    &["SADD", "s", "1", "x"],
                    &["ZADD", "z", "1", "a", "2", "b"],
                    &["SET", "k", "10"],
                ] {
                    store
                        .execute(
                            &mut s,
                            seed.iter()
                                .map(|a| Bytes::from_static(a.as_bytes()))
                                .collect(),
                        )
                        .await;
                }
                let _ = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    store.execute(&mut s, args),
                )
                .await;
                store
                    .execute(&mut s, vec![Bytes::from_static(b"DISCARD")])
                    .await;
            });
            Ok(())
        })
        .expect("no panic");
    for cmd in [
        &["BLPOP", "l", "x", "0.01"][..],
        &["BZPOPMIN", "z", "-1"],
        &["BLMPOP", "0", "1", "q", "LEFT"],
        &["BLMOVE", "a", "b", "UP", "LEFT", "0"],
    ] {
        rt.block_on(async {
            let mut s = store.session();
            let args = cmd
                .iter()
                .map(|a| Bytes::from_static(a.as_bytes()))
                .collect();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                store.execute(&mut s, args),
            )
            .await;
        });
    }
}
