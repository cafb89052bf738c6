//! The nemesis in CI: a bounded run on three real brokers, which must find nothing. The long
//! run is `cargo run --release -p weir-tests --bin nemesis` (docs/reliability.md).

use std::path::PathBuf;
use std::time::Duration;

use weir_tests::nemesis::{self, NemesisConfig};

/// A fixed schedule, so CI passes or fails on the code, not on luck; `WEIR_NEMESIS_SEED`
/// runs another one (the long runs explore random seeds).
fn seed() -> u64 {
    std::env::var("WEIR_NEMESIS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261205)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_under_faults_lose_duplicate_and_reorder_nothing() -> anyhow::Result<()> {
    weir_tests::init_tracing();
    let config = NemesisConfig {
        weir: PathBuf::from(crate::WEIR),
        seed: seed(),
        nodes: 3,
        duration: Duration::from_secs(40),
        partitions: 3,
        writers: 3,
    };
    let report = nemesis::run(config).await?;
    println!("{report}");
    assert!(
        report.violations.is_empty(),
        "{report}\n(replay in CI with WEIR_NEMESIS_SEED={})",
        report.config.seed
    );
    assert!(report.tally.acknowledged > 0, "{report}");
    assert!(report.faults.values().sum::<u64>() > 0, "{report}");
    Ok(())
}
