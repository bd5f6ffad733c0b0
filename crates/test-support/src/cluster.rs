//! A Redis Cluster for tests: three primaries and three replicas
//! (`redis-server --cluster-enabled yes`, joined by
//! `redis-cli --cluster create`), all real processes on free loopback
//! ports, killed on drop.

use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for, RedisServer};

/// The cluster's nodes, in the order they were started.
pub struct ClusterSet {
    /// Every node; which are primaries changes with failovers: ask
    /// [`ClusterSet::primaries`].
    pub nodes: Vec<RedisServer>,
}

impl ClusterSet {
    /// Starts six nodes and joins them: slots split evenly over three
    /// primaries, one replica each. Returns once every node reports
    /// `cluster_state:ok` and agrees on the slots.
    pub fn start() -> ClusterSet {
        ClusterSet::start_with(&[])
    }

    /// [`start`](Self::start), each node with `extra` options too.
    pub fn start_with(extra: &[&str]) -> ClusterSet {
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let bus = free_port().to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                    // A replica may take over however long its link was
                    // down: a test kills a primary soon after the start.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--cluster-port",
                    &bus,
                ];
                args.extend_from_slice(extra);
                RedisServer::start(&args)
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| n.addr()).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create (scripts/test.sh installs redis-tools)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let set = ClusterSet { nodes };
        set.wait_ok();
        // Every replica in sync, so a primary killed now has a replica
        // holding its data to take over.
        wait_for("every replica's link up", Duration::from_secs(30), || {
            set.nodes.iter().all(|n| {
                n.cmd_raw(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            })
        });
        set
    }

    /// Waits until a replica has taken over from the primary at `old`
    /// (killed or stopped): another node serves its slots and the cluster
    /// is ok again.
    pub fn wait_failover(&self, old: &str, slot: u16) {
        wait_for(
            &format!("a replica to take over slot {slot} from {old}"),
            Duration::from_secs(30),
            || self.owner_of(slot).is_some_and(|a| a != old),
        );
        self.wait_ok();
    }

    /// For each slot, the address of the live primary serving it, as the
    /// first running node sees it (one `CLUSTER NODES`).
    pub fn slot_owners(&self) -> Vec<Option<String>> {
        let rows = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .and_then(cluster_nodes)
            .unwrap_or_default();
        let mut owners = vec![None; 16384];
        for r in rows.iter().filter(|r| r.primary && !r.failed) {
            for &(a, b) in &r.ranges {
                for o in &mut owners[a as usize..=b as usize] {
                    *o = Some(r.addr.clone());
                }
            }
        }
        owners
    }

    /// The address of the primary serving `slot`, as the first running
    /// node sees it; `None` when no live primary does.
    pub fn owner_of(&self, slot: u16) -> Option<String> {
        let rows = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .and_then(cluster_nodes)?;
        rows.into_iter()
            .find(|r| {
                r.primary && !r.failed && r.ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .map(|r| r.addr)
    }

    /// Waits until every running node says `cluster_state:ok` and the
    /// primaries serve all 16384 slots, as seen by each node.
    pub fn wait_ok(&self) {
        wait_for(
            "the cluster to be ok on every node",
            Duration::from_secs(30),
            || {
                self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                    n.cmd_raw(&["CLUSTER", "INFO"])
                        .is_ok_and(|i| i.contains("cluster_state:ok"))
                        && cluster_nodes(n).is_some_and(|rows| {
                            rows.iter()
                                .filter(|r| r.primary && !r.failed)
                                .map(|r| r.slots)
                                .sum::<usize>()
                                == 16384
                        })
                })
            },
        );
    }

    /// `redis+cluster://` naming the first two nodes (a client needs only
    /// some).
    pub fn url(&self) -> String {
        format!(
            "redis+cluster://{},{}",
            self.nodes[0].addr(),
            self.nodes[1].addr()
        )
    }

    /// The running nodes that are primaries now, as the first running
    /// node sees them.
    pub fn primaries(&self) -> Vec<&RedisServer> {
        let Some(rows) = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .and_then(cluster_nodes)
        else {
            return Vec::new();
        };
        self.nodes
            .iter()
            .filter(|n| {
                n.is_running()
                    && rows
                        .iter()
                        .any(|r| r.primary && !r.failed && r.addr == n.addr())
            })
            .collect()
    }

    /// The node serving `slot` now (`CLUSTER SHARDS` as the first running
    /// node sees it).
    pub fn node_of_slot(&self, slot: u16) -> &RedisServer {
        let rows = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .and_then(cluster_nodes)
            .expect("a running node lists the cluster");
        let row = rows
            .iter()
            .find(|r| {
                r.primary && !r.failed && r.ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
            })
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"));
        self.nodes
            .iter()
            .find(|n| n.addr() == row.addr)
            .expect("the primary is one of ours")
    }

    /// SIGKILLs the node listening on `addr` (`host:port`).
    pub fn kill_node(&mut self, addr: &str) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.addr() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this cluster"));
        node.kill();
    }

    /// The cluster node id of `node`.
    pub fn id_of(&self, node: &RedisServer) -> String {
        node.cmd(&["CLUSTER", "MYID"])
    }
}

/// One line of `CLUSTER NODES`.
struct Row {
    addr: String,
    primary: bool,
    failed: bool,
    ranges: Vec<(u16, u16)>,
    slots: usize,
}

fn cluster_nodes(n: &RedisServer) -> Option<Vec<Row>> {
    let text = n.cmd_raw(&["CLUSTER", "NODES"]).ok()?;
    if text.starts_with('-') {
        return None;
    }
    let rows = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?.to_string();
            let flags = f[2];
            let ranges: Vec<(u16, u16)> = f[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            Some(Row {
                addr,
                primary: flags.contains("master"),
                failed: flags.contains("fail"),
                slots: ranges.iter().map(|(a, b)| (b - a) as usize + 1).sum(),
                ranges,
            })
        })
        .collect();
    Some(rows)
}
