//! The CPU time a process has used, user and system together, as Linux counts it in
//! `/proc/PID/stat` (other systems have no `/proc`: reading it fails there).

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;

/// The CPU time process `pid` has used so far, all its threads, user and system.
pub(super) async fn used(pid: u32) -> anyhow::Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = tokio::fs::read_to_string(&path)
        .await
        .with_context(|| format!("cannot read {path}"))?;
    let ticks: CpuTicks = stat
        .parse()
        .with_context(|| format!("unexpected contents of {path}"))?;
    Ok(ticks.at(rustix::param::clock_ticks_per_second()))
}

/// CPU time in clock ticks, the unit of `/proc/PID/stat` (`sysconf(_SC_CLK_TCK)` a second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTicks(u64);

impl CpuTicks {
    /// The time these ticks stand for, at `per_second` ticks a second.
    fn at(self, per_second: u64) -> Duration {
        Duration::from_secs_f64(self.0 as f64 / per_second.max(1) as f64)
    }
}

/// From the contents of `/proc/PID/stat`: `utime` plus `stime`, its fields 14 and 15 (counted
/// from 1). Field 2, the command name in parentheses, may itself hold spaces and parentheses, so
/// the fields are counted from after its last `)`, where field 3 begins.
impl FromStr for CpuTicks {
    type Err = anyhow::Error;

    fn from_str(stat: &str) -> Result<Self, Self::Err> {
        let (_, after_name) = stat
            .rsplit_once(')')
            .context("no command name in parentheses")?;
        let mut fields = after_name.split_whitespace().skip(14 - 3);
        let mut next = |name: &str| -> anyhow::Result<u64> {
            fields
                .next()
                .with_context(|| format!("no {name} field"))?
                .parse()
                .with_context(|| format!("{name} is not a number"))
        };
        let user = next("utime")?;
        let system = next("stime")?;
        Ok(Self(user + system))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_are_fields_14_and_15_whatever_the_command_name() {
        let stat = "4242 (weir (a) b) S 1 4242 4242 0 -1 4194560 1200 0 3 0 731 52 0 0 20 0 \
                    24 0 8123 1234567 890 18446744073709551615 1 1 0 0 0 0 0 4096 17920 0 0 0 \
                    17 1 0 0 0 0 0";
        assert_eq!(stat.parse::<CpuTicks>().unwrap(), CpuTicks(731 + 52));
        assert!("4242 weir S 1".parse::<CpuTicks>().is_err());
        assert!("4242 (weir) S 1 2 3".parse::<CpuTicks>().is_err());
    }

    #[test]
    fn ticks_become_time_at_the_clock_rate() {
        assert_eq!(CpuTicks(250).at(100), Duration::from_millis(2500));
        assert_eq!(CpuTicks(3).at(1000), Duration::from_millis(3));
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn this_process_has_used_some_cpu_time_and_never_less_later() {
        let before = used(std::process::id()).await.unwrap();
        let mut spin = 0u64;
        for i in 0..20_000_000u64 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        let after = used(std::process::id()).await.unwrap();
        assert!(
            after >= before && after > Duration::ZERO,
            "{before:?} then {after:?}"
        );
    }
}
