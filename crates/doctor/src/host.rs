//! Facts about the machine Redis runs on, read from `/proc` and `/sys`.
//! Only meaningful when Redis is on this machine; the caller decides.

use std::path::Path;

/// Kernel settings and the Redis process's swap, as read from the host.
/// `None` means "could not read", never "fine".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostFacts {
    /// `/sys/kernel/mm/transparent_hugepage/enabled`, e.g. `always [madvise] never`.
    pub thp: Option<String>,
    /// `/proc/sys/vm/overcommit_memory`.
    pub overcommit: Option<String>,
    /// `/proc/sys/net/core/somaxconn`.
    pub somaxconn: Option<u64>,
    /// Current clocksource name.
    pub clocksource: Option<String>,
    /// `VmSwap` of the Redis process in KiB.
    pub redis_swap_kb: Option<u64>,
}

impl HostFacts {
    /// Reads the facts under `root` (`/` in production; a fixture dir in
    /// tests). `pid` is Redis's `process_id`; its swap is read only when
    /// that pid is a redis process here (in a container it may be another
    /// namespace's pid, or another program).
    pub(crate) fn read(root: &Path, pid: Option<u32>) -> HostFacts {
        let read = |p: &str| {
            std::fs::read_to_string(root.join(p))
                .ok()
                .map(|s| s.trim().to_string())
        };
        let redis_swap_kb = pid.and_then(|pid| {
            let comm = read(&format!("proc/{pid}/comm"))?;
            if !comm.contains("redis") {
                return None;
            }
            parse_vm_swap(&read(&format!("proc/{pid}/status"))?)
        });
        HostFacts {
            thp: read("sys/kernel/mm/transparent_hugepage/enabled"),
            overcommit: read("proc/sys/vm/overcommit_memory"),
            somaxconn: read("proc/sys/net/core/somaxconn").and_then(|s| s.parse().ok()),
            clocksource: read("sys/devices/system/clocksource/clocksource0/current_clocksource"),
            redis_swap_kb,
        }
    }
}

/// The `VmSwap:   123 kB` line of `/proc/PID/status`.
fn parse_vm_swap(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmSwap:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_swap_is_read_from_status() {
        let status = "Name:\tredis-server\nVmRSS:\t  9000 kB\nVmSwap:\t  2048 kB\n";
        assert_eq!(parse_vm_swap(status), Some(2048));
        assert_eq!(parse_vm_swap("Name:\tx\n"), None);
    }

    #[test]
    fn facts_are_read_from_a_fixture_root() {
        let dir = std::env::temp_dir().join(format!("doctor-host-{}", std::process::id()));
        let w = |p: &str, s: &str| {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "[always] madvise never\n",
        );
        w("proc/sys/vm/overcommit_memory", "0\n");
        w("proc/sys/net/core/somaxconn", "128\n");
        w(
            "sys/devices/system/clocksource/clocksource0/current_clocksource",
            "xen\n",
        );
        w("proc/42/comm", "redis-server\n");
        w("proc/42/status", "VmSwap:\t512 kB\n");
        w("proc/43/comm", "nginx\n");
        w("proc/43/status", "VmSwap:\t512 kB\n");
        let f = HostFacts::read(&dir, Some(42));
        assert_eq!(f.thp.as_deref(), Some("[always] madvise never"));
        assert_eq!(f.overcommit.as_deref(), Some("0"));
        assert_eq!(f.somaxconn, Some(128));
        assert_eq!(f.clocksource.as_deref(), Some("xen"));
        assert_eq!(f.redis_swap_kb, Some(512));
        // A pid that is not redis here is not ours to judge.
        assert_eq!(HostFacts::read(&dir, Some(43)).redis_swap_kb, None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
