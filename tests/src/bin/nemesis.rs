//! The nemesis, for long runs (docs/reliability.md): brokers as real processes, faults from a
//! seed, a checker at the end. Exits non-zero on any violation, printing the seed and the
//! command that replays the schedule.
//!
//! ```text
//! cargo run --release -p weir-tests --bin nemesis -- --minutes 60 --seed 7 --nodes 5
//! ```
//!
//! Options: `--seed S` (default: random), `--nodes N` (3), `--replication R` (replicas per
//! partition: all nodes up to 3, else 3),
//! `--minutes M` or `--seconds S` of faults (1 minute), `--partitions P` (4), `--writers W`
//! (4), `--disk honest|lying|none` (honest: the brokers' databases live on a simulated disk,
//! which adds power losses and failing fsyncs; lying: one that acknowledges syncs it has not
//! made, which the checker must catch), `--faults KIND,...` (only these kinds; default: every
//! kind the options allow), `--rounds R` (1: runs one after another, each on a fresh cluster,
//! seeds S, S+1, ...), `--serve-uncommitted` (brokers built to serve records past the high
//! watermark, which the checker must catch).
//!
//! The brokers are this binary itself: started as `nemesis broker ...` it is the `weir` command
//! line, so one build serves both.

use std::process::ExitCode;
use std::time::Duration;

use weir_tests::disk::DiskMode;
use weir_tests::nemesis::{self, FaultKind, NemesisConfig};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("broker") {
        if let Err(e) = weir_tests::test_broker::install_from_env() {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        return weir_cli::main();
    }
    // The clients' warnings (new epochs, fenced producers, retries) and the nemesis's own
    // events, on stderr; RUST_LOG changes it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,nemesis=info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nemesis: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let mut config = NemesisConfig {
        weir: std::env::current_exe()?,
        seed: rand::random(),
        nodes: 3,
        replication: 0,
        disk: Some(DiskMode::Honest),
        serve_uncommitted: false,
        kinds: Vec::new(),
        duration: Duration::from_secs(60),
        partitions: 4,
        writers: 4,
    };
    let mut rounds = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut text = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
        };
        let mut value = || -> anyhow::Result<u64> {
            let v = text()?;
            v.parse()
                .map_err(|e| anyhow::anyhow!("{flag} {v:?}: not a number ({e})"))
        };
        match flag.as_str() {
            "--seed" => config.seed = value()?,
            "--nodes" => config.nodes = usize::try_from(value()?)?,
            "--replication" => config.replication = u32::try_from(value()?)?,
            "--minutes" => config.duration = Duration::from_secs(60 * value()?),
            "--seconds" => config.duration = Duration::from_secs(value()?),
            "--partitions" => config.partitions = u32::try_from(value()?)?,
            "--writers" => config.writers = u32::try_from(value()?)?,
            "--rounds" => rounds = value()?,
            "--serve-uncommitted" => config.serve_uncommitted = true,
            "--disk" => {
                config.disk = match text()?.as_str() {
                    "honest" => Some(DiskMode::Honest),
                    "lying" => Some(DiskMode::Lying),
                    "none" => None,
                    other => anyhow::bail!("--disk {other:?}: expected honest, lying or none"),
                }
            }
            "--faults" => {
                config.kinds = text()?
                    .split(',')
                    .map(|name| {
                        FaultKind::from_name(name.trim())
                            .ok_or_else(|| anyhow::anyhow!("--faults: no fault kind {name:?}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            other => anyhow::bail!(
                "unknown option {other:?}; options: --seed --nodes --replication --minutes --seconds --partitions --writers --disk --faults --rounds --serve-uncommitted"
            ),
        }
    }
    anyhow::ensure!(config.nodes >= 3, "--nodes must be at least 3");
    anyhow::ensure!(
        config.partitions >= 1 && config.writers >= 1,
        "--partitions and --writers must be at least 1"
    );
    if config.replication == 0 {
        config.replication = config.nodes.min(3) as u32;
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let mut failed = false;
    for round in 0..rounds {
        let config = NemesisConfig {
            seed: config.seed + round,
            ..config.clone()
        };
        let seed = config.seed;
        match runtime.block_on(nemesis::run(config)) {
            Ok(report) => {
                println!("{report}\n");
                failed |= !report.violations.is_empty();
            }
            // A run that could not finish (a cluster that never agreed again) is a failure
            // of its own; the next rounds still run.
            Err(e) => {
                println!("nemesis seed {seed}: the run did not finish: {e:#}\n");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
