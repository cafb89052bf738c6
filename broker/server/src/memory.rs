//! How much memory this process may use: the machine's, or less where the cgroup it runs in (a
//! container's, a systemd unit's) sets a limit. The defaults that scale with memory (the
//! partition log's page cache) are sized from it.
//!
//! Read once at start from `/proc/meminfo` and the cgroup files at their usual mount points
//! (`/sys/fs/cgroup` for cgroup v2, `/sys/fs/cgroup/memory` for v1's memory controller), for the
//! process's own cgroup and every cgroup above it, since a parent's limit binds its children.

use std::fs;
use std::path::Path;

/// Bytes of memory this process may use: the machine's total, lowered by any cgroup memory
/// limit above the process. `None` where the machine's total cannot be read (not Linux).
pub(crate) fn usable_memory_bytes() -> Option<u64> {
    let total = mem_total_bytes(&fs::read_to_string("/proc/meminfo").ok()?)?;
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let limit = cgroup_limits(&cgroups)
        .filter_map(|file| fs::read_to_string(file).ok())
        .filter_map(|text| limit_bytes(&text))
        .min();
    Some(limit.map_or(total, |limit| limit.min(total)))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

/// The limit files that apply to a process in the cgroups `/proc/self/cgroup` names: its own
/// and its ancestors', for v2 (`0::/path`) and for v1's memory controller
/// (`N:...memory...:/path`). Files that do not exist are skipped by the reader.
fn cgroup_limits(proc_self_cgroup: &str) -> impl Iterator<Item = std::path::PathBuf> + '_ {
    proc_self_cgroup.lines().flat_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next(), fields.next());
        let (root, file) = match controllers {
            Some("") => ("/sys/fs/cgroup", "memory.max"),
            Some(list) if list.split(',').any(|c| c == "memory") => {
                ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
            }
            _ => return Vec::new(),
        };
        let Some(path) = path else {
            return Vec::new();
        };
        let own = Path::new(root).join(path.trim_start_matches('/'));
        own.ancestors()
            .take_while(|dir| dir.starts_with(root))
            .map(|dir| dir.join(file))
            .collect()
    })
}

/// A cgroup memory limit file's value: `max` (v2) means none; v1 writes "none" as a number near
/// `i64::MAX`, which [`usable_memory_bytes`] then discards against the machine's total.
fn limit_bytes(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24683520 kB\nMemFree:        20912000 kB\n";
        assert_eq!(mem_total_bytes(meminfo), Some(24_683_520 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: lots kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 1 MB\n"), None, "an unknown unit");
    }

    #[test]
    fn the_limits_of_a_cgroup_and_its_ancestors_apply() {
        let files: Vec<_> = cgroup_limits("0::/system.slice/weir.service\n").collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/system.slice/weir.service/memory.max",
                "/sys/fs/cgroup/system.slice/memory.max",
                "/sys/fs/cgroup/memory.max",
            ]
            .map(std::path::PathBuf::from)
        );
        let v1 = "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n";
        let files: Vec<_> = cgroup_limits(v1).collect();
        assert_eq!(
            files,
            [
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/docker/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "/sys/fs/cgroup/memory.max",
            ]
            .map(std::path::PathBuf::from),
            "v1's memory controller and v2's root; not the cpu controller's"
        );
        assert_eq!(cgroup_limits("garbage\n").count(), 0);
    }

    #[test]
    fn a_limit_of_max_is_no_limit() {
        assert_eq!(limit_bytes("max\n"), None);
        assert_eq!(limit_bytes("1073741824\n"), Some(1 << 30));
    }

    #[test]
    fn this_machine_has_memory() {
        if cfg!(target_os = "linux") {
            let usable = usable_memory_bytes().expect("Linux reports its memory");
            assert!(usable >= 64 << 20, "{usable} bytes");
        }
    }
}
