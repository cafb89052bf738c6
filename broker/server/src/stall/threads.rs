//! What every thread of this process is doing, as Linux tells it in `/proc/self/task`: the
//! stall warning carries it, so that a runtime whose workers are blocked (on a lock, a pipe, the
//! disk) can be told from one whose workers spin, and where they wait, without a debugger.
//!
//! For each thread: its name, its scheduler state (`R` running, `S` sleeping, `D` in an
//! uninterruptible wait, usually the disk), the kernel function it waits in (`wchan`: a
//! `futex_…` function for a lock, a condition variable or a parked runtime worker, `pipe_write`
//! for a full pipe, `ep_poll` for the worker waiting for I/O events) and the system call it is
//! in. Threads alike in all four are counted together, so a pool of idle threads takes one
//! entry.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// What one thread is doing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ThreadState {
    name: String,
    state: String,
    wchan: String,
    syscall: String,
}

/// One line naming what each thread of the process does, alike threads counted together; what
/// went wrong instead, where `/proc` cannot be read (not Linux).
pub(super) fn summary() -> String {
    let tasks = match fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks,
        Err(e) => return format!("unknown (cannot list /proc/self/task: {e})"),
    };
    let mut alike: BTreeMap<ThreadState, usize> = BTreeMap::new();
    for task in tasks.flatten() {
        // A thread that ended since the listing has nothing left to read: skip it.
        if let Some(thread) = read_thread(&task.path()) {
            *alike.entry(thread).or_default() += 1;
        }
    }
    alike
        .into_iter()
        .map(|(t, count)| {
            let count = if count > 1 {
                format!(" ×{count}")
            } else {
                String::new()
            };
            format!(
                "{}{count}: {} in {} (syscall {})",
                t.name, t.state, t.wchan, t.syscall
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn read_thread(task: &Path) -> Option<ThreadState> {
    let read = |file: &str| fs::read_to_string(task.join(file)).ok();
    let name = read("comm")?.trim().to_owned();
    // `stat` is "pid (comm) state …"; the name may hold spaces and parentheses, so the state
    // is the first field after the last ')'.
    let stat = read("stat")?;
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    let wchan = match read("wchan").as_deref().map(str::trim) {
        None | Some("" | "0") => "-".to_owned(),
        Some(function) => function.to_owned(),
    };
    // The system call's number and arguments, "running" when it runs in user space, or "-1"
    // when it is blocked outside a system call.
    let syscall = read("syscall")
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned());
    Some(ThreadState {
        name,
        state,
        wchan,
        syscall,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_thread_blocked_on_a_lock_is_named_with_where_it_waits() {
        let lock = Arc::new(Mutex::new(()));
        let held = lock.lock().expect("lock");
        let waiter = {
            let lock = lock.clone();
            std::thread::Builder::new()
                .name("weir-held-test".into())
                .spawn(move || drop(lock.lock()))
                .expect("spawn")
        };
        // The thread sleeps in the kernel once it finds the lock taken; until then it runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let entry = loop {
            let summary = summary();
            assert!(
                std::time::Instant::now() < deadline,
                "the blocked thread never showed as sleeping: {summary}"
            );
            let entry = summary
                .split("; ")
                .find(|e| e.starts_with("weir-held-test"))
                .map(str::to_owned);
            if let Some(entry) = entry.filter(|e| e.contains(": S in ")) {
                break entry;
            }
            std::thread::yield_now();
        };
        // Blocked on the lock's futex (where the kernel hides `wchan`, the system call says
        // it: 202 on x86_64, 98 on aarch64).
        assert!(
            entry.contains("futex")
                || entry.ends_with("(syscall 202)")
                || entry.ends_with("(syscall 98)"),
            "{entry}"
        );
        drop(held);
        waiter
            .join()
            .expect("the waiter ends once the lock is free");
        // This thread, reading, is running.
        let current = std::thread::current();
        let name = current.name().unwrap_or_default();
        let own: String = name.chars().take(15).collect();
        assert!(
            summary()
                .split("; ")
                .any(|e| e.starts_with(own.as_str()) && e.contains(": R in ")),
            "{}",
            summary()
        );
    }
}
