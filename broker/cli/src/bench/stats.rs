//! Measurement helpers of the benchmark: a latency histogram (HdrHistogram) with its percentile
//! summary, and throughput arithmetic. MB means 10^6 bytes throughout, for the disk probe and the
//! broker alike, so their ratio is unit-free.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency the histogram resolves, in microseconds (one hour); longer ones count as this.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// Latencies at microsecond resolution, 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
                .expect("constant bounds: low >= 1, high >= 2 * low, sigfig <= 5"),
        }
    }
}

impl LatencyRecorder {
    /// Records one latency; sub-microsecond latencies count as 1 µs.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros.max(1));
    }

    /// Percentiles of what was recorded; `None` when nothing was.
    pub fn summary(&self) -> Option<LatencySummary> {
        if self.histogram.is_empty() {
            return None;
        }
        let at = |quantile| Duration::from_micros(self.histogram.value_at_quantile(quantile));
        Some(LatencySummary {
            count: self.histogram.len(),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: Duration::from_micros(self.histogram.max()),
        })
    }
}

/// Latency percentiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {}, p99 {}, p99.9 {}, max {} ({} samples)",
            Millis(self.p50),
            Millis(self.p99),
            Millis(self.p999),
            Millis(self.max),
            self.count
        )
    }
}

/// A duration shown in milliseconds with two decimals.
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} ms", self.0.as_secs_f64() * 1e3)
    }
}

/// Records and bytes moved in some time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Records moved.
    pub records: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl Throughput {
    /// Records per second; 0 for an empty interval.
    pub fn records_per_sec(&self) -> f64 {
        per_sec(self.records, self.elapsed)
    }

    /// Megabytes (10^6 bytes) per second; 0 for an empty interval.
    pub fn mb_per_sec(&self) -> f64 {
        per_sec(self.bytes, self.elapsed) / 1e6
    }
}

impl fmt::Display for Throughput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.0} records/s, {:.1} MB/s ({} records, {:.1} MB in {:.2} s)",
            self.records_per_sec(),
            self.mb_per_sec(),
            self.records,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64()
        )
    }
}

/// `count` per second over `elapsed`; 0 for an empty interval.
fn per_sec(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut recorder = LatencyRecorder::default();
        assert_eq!(recorder.summary(), None);
        for ms in 1..=1000 {
            recorder.record(Duration::from_millis(ms));
        }
        let summary = recorder.summary().expect("samples were recorded");
        assert_eq!(summary.count, 1000);
        let near = |value: Duration, ms: f64| (value.as_secs_f64() * 1e3 - ms).abs() <= ms * 0.002;
        assert!(near(summary.p50, 500.0), "{summary}");
        assert!(near(summary.p99, 990.0), "{summary}");
        assert!(near(summary.p999, 999.0), "{summary}");
        assert!(near(summary.max, 1000.0), "{summary}");
    }

    #[test]
    fn sub_microsecond_latencies_still_count() {
        let mut recorder = LatencyRecorder::default();
        recorder.record(Duration::from_nanos(10));
        let summary = recorder.summary().expect("one sample");
        assert_eq!((summary.count, summary.max), (1, Duration::from_micros(1)));
    }

    #[test]
    fn throughput_uses_decimal_megabytes() {
        let throughput = Throughput {
            records: 2_000,
            bytes: 3_000_000,
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(throughput.records_per_sec(), 1_000.0);
        assert_eq!(throughput.mb_per_sec(), 1.5);
        let idle = Throughput {
            elapsed: Duration::ZERO,
            ..throughput
        };
        assert_eq!(idle.records_per_sec(), 0.0);
    }
}
