//! `weir bench produce | consume`: Weir's own benchmark (DESIGN §8). It prints records/s, MB/s
//! and latency percentiles, and, for produce, a physical-limit probe of the disk in the same run
//! so that durable throughput reads as a fraction of what the disk can do.
//!
//! Each benchmark is a function of a [`Client`] and its options that returns a report; how the
//! client is obtained is decided in one place, [`BenchCommand::run`].

mod consume;
mod probe;
mod produce;
mod stats;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use weir_client::Client;

/// A benchmark.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Produce fixed-size records (closed-loop, or open-loop at --rate) and probe the disk.
    Produce(produce::ProduceBenchArgs),
    /// Read a topic from the beginning with large fetches.
    Consume(consume::ConsumeBenchArgs),
}

impl BenchCommand {
    /// Runs the benchmark against the broker at `broker` and prints its report to stdout.
    pub async fn run(self, broker: &str) -> anyhow::Result<()> {
        // The one place that decides which broker is measured: an `--embedded` option will start
        // an in-process broker in a temporary directory here and connect to it instead.
        let client: Client = crate::connect(broker).await?;
        match self {
            Self::Produce(args) => print!("{}", produce::run(&client, args).await?),
            Self::Consume(args) => print!("{}", consume::run(&client, args).await?),
        }
        Ok(())
    }
}

/// A progress bar over `total` units on stderr; indicatif draws nothing when stderr is not a
/// terminal, so redirected runs stay clean.
fn progress_bar(total: u64, unit: &str) -> ProgressBar {
    let template = format!("{{bar:40}} {{human_pos}}/{{human_len}} {unit} {{per_sec}} eta {{eta}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total).with_style(style)
}
