//! One upstream connection against a real redis-server: replies streamed
//! in pieces, counted against a budget, dropped when nobody wants them.

use std::time::Duration;

use bytes::Bytes;
use test_support::RedisServer;
use upstream::{Conn, Handshake, OutputBudget};

const BIG: usize = 256 << 10;

fn gets(n: usize) -> Bytes {
    Bytes::from("*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(n))
}

fn one_reply() -> Vec<u8> {
    let mut r = format!("${BIG}\r\n").into_bytes();
    r.extend(std::iter::repeat_n(b'x', BIG));
    r.extend_from_slice(b"\r\n");
    r
}

async fn connect(redis: &RedisServer) -> Conn {
    redis.cmd(&["SET", "big", &"x".repeat(BIG)]);
    Conn::connect(
        &redis.addr().into(),
        &Handshake::default(),
        Duration::from_secs(5),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_streamed_batch_arrives_in_pieces_and_in_order() {
    let redis = RedisServer::new();
    let conn = connect(&redis).await;
    let budget = OutputBudget::new(64 << 20);
    let mut rx = conn.send_bounded(gets(40), 40, &budget, true);
    let mut all = Vec::new();
    let mut pieces = 0;
    let mut received = 0;
    loop {
        let r = rx.recv().await.expect("replies");
        assert!(!r.lost);
        assert!(
            budget.used() >= r.data.len() as u64,
            "held bytes are counted"
        );
        all.extend_from_slice(&r.data);
        received += r.received;
        pieces += 1;
        if !r.more {
            break;
        }
    }
    assert_eq!(received, 40);
    assert!(pieces > 1, "one piece: the batch was gathered whole");
    assert_eq!(all, one_reply().repeat(40));
    assert_eq!(budget.used(), 0, "taken replies are no longer counted");
    assert!(!budget.is_over());
}

#[tokio::test]
async fn replies_over_the_budget_are_dropped_and_the_connection_goes_on() {
    let redis = RedisServer::new();
    let conn = connect(&redis).await;
    // 40 replies of 256 KiB against a 2 MiB budget, never taken.
    let budget = OutputBudget::new(2 << 20);
    let mut rx = conn.send_bounded(gets(40), 40, &budget, true);
    let after = conn.send(gets(1), 1);
    let r = tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &r.data[..],
        &one_reply()[..],
        "the next batch gets its own reply"
    );
    assert!(budget.is_over());
    assert!(budget.used() <= 2 << 20, "held {} bytes", budget.used());
    while let Ok(Some(r)) = rx.try_recv() {
        drop(r);
    }
    assert_eq!(budget.used(), 0);
    assert!(conn.is_alive());

    // A caller that stopped waiting: its replies are dropped as they come.
    let budget = OutputBudget::new(64 << 20);
    drop(conn.send_bounded(gets(40), 40, &budget, false));
    let r = tokio::time::timeout(Duration::from_secs(10), conn.send(gets(1), 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&r.data[..], &one_reply()[..]);
    assert_eq!(budget.used(), 0);
}
