//! Open-loop load at a fixed rate, for tail latency (`scripts/bench-latency.sh`):
//! CONNS connections each send `GET key` on a fixed schedule, and each
//! reply's latency is counted from when its request was *due*, not when it
//! was sent, so a stalled server is charged for the requests it delayed
//! (no coordinated omission). Prints `p50_us p99_us p999_us sent behind`,
//! where `behind` counts requests sent later than 1 ms past their time.
//! RATE 0 runs closed loop (each connection sends as soon as its reply
//! arrives): the peak this generator reaches.
//!
//!   cargo run --release --example rate_load -- PORT RATE SECONDS [CONNS]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"*2\r\n$3\r\nGET\r\n$11\r\nrate:load:k\r\n";

/// Length of the first complete RESP reply in `buf` (simple, error,
/// integer or bulk: what `GET` and `SET` answer), if it is all there.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let line = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    match buf.first()? {
        b'$' => {
            let n: i64 = std::str::from_utf8(&buf[1..line - 2]).ok()?.parse().ok()?;
            let total = if n < 0 { line } else { line + n as usize + 2 };
            (buf.len() >= total).then_some(total)
        }
        _ => Some(line),
    }
}

async fn conn(port: u16, interval: Option<Duration>, until: Instant) -> (Vec<u32>, u64) {
    let mut s = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut lat = Vec::new();
    let mut behind = 0;
    let mut due = Instant::now();
    while due < until {
        if interval.is_some() {
            // Tokio's timer ticks once a millisecond: sleep to within one
            // tick of the due time, then yield until it comes, so requests
            // leave on time rather than bunched on tick boundaries.
            if let Some(early) = due.checked_duration_since(Instant::now()) {
                if early > Duration::from_millis(2) {
                    tokio::time::sleep_until((due - Duration::from_millis(1)).into()).await;
                }
                while Instant::now() < due {
                    tokio::task::yield_now().await;
                }
            } else if due.elapsed() > Duration::from_millis(1) {
                behind += 1;
            }
        }
        s.write_all(REQUEST).await.expect("send");
        loop {
            if let Some(n) = reply_len(&buf) {
                buf.drain(..n);
                break;
            }
            let n = s.read(&mut chunk).await.expect("read");
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        lat.push(due.elapsed().as_micros().min(u32::MAX as u128) as u32);
        due = match interval {
            Some(i) => due + i,
            // Closed loop: the next request is due now.
            None => Instant::now(),
        };
    }
    (lat, behind)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rate_load PORT RATE SECONDS [CONNS]";
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let rate: f64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let secs: f64 = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let conns: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(50);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut lat, behind) = rt.block_on(async {
        let interval = (rate > 0.0).then(|| Duration::from_secs_f64(conns as f64 / rate));
        let until = Instant::now() + Duration::from_secs_f64(secs);
        let tasks: Vec<_> = (0..conns)
            .map(|_| tokio::spawn(conn(port, interval, until)))
            .collect();
        let mut all = Vec::new();
        let mut behind = 0;
        for t in tasks {
            let (l, b) = t.await.expect("connection task");
            all.extend(l);
            behind += b;
        }
        (all, behind)
    });
    lat.sort_unstable();
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "{} {} {} {} {}",
        q(0.50),
        q(0.99),
        q(0.999),
        lat.len(),
        behind
    );
}
