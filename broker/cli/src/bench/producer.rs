//! The load of `weir bench produce --producer`: records enqueued one by one into weir-client's
//! `Producer`, idempotent or plain, which batches them (`--batch-size` records per batch),
//! partitions them (keyless: sticky) and keeps its own window of batches in flight. Latency is
//! per record, from its enqueue (or its scheduled time, open-loop) to its acknowledgement, so it
//! includes the time spent in the producer's buffer.

use std::fmt;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::ValueEnum;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use weir_client::{
    Acks, Client, Delivery, DeliveryError, MAX_IN_FLIGHT_IDEMPOTENT, Producer, ProducerConfig,
    ProducerRecord,
};

use super::produce::{Load, Measured};
use super::stats::{LatencyRecorder, Throughput};

/// Whether the `Producer` is idempotent ([`ProducerConfig::idempotence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Idempotence {
    /// A producer id and sequence numbers: each record stored once, in order (weir-client's
    /// default).
    Idempotent,
    /// No producer id: a retry after an unknown outcome may store a batch twice.
    Plain,
}

impl fmt::Display for Idempotence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Idempotent => "idempotent",
            Self::Plain => "plain",
        })
    }
}

impl Idempotence {
    /// The producer's configuration for `load`: batches of `--batch-size` records and
    /// `--batch-bytes` encoded bytes at most, `--concurrency` batches in flight per partition as
    /// far as the producer allows, everything else the default.
    pub fn config(self, load: &Load<'_>) -> ProducerConfig {
        ProducerConfig {
            batch_max_records: load.batch_size as usize,
            batch_max_bytes: load.batch_bytes,
            acks: load.acks,
            idempotence: self == Self::Idempotent,
            max_in_flight: load.concurrency as usize,
            ..ProducerConfig::default()
        }
    }

    /// Batches the producer keeps in flight per partition when asked for `concurrency`: up to
    /// [`MAX_IN_FLIGHT_IDEMPOTENT`] when idempotent, always one when not (or without
    /// acknowledgements), so that a retry cannot reorder records.
    pub fn in_flight(self, concurrency: u32, acks: Acks) -> usize {
        match self {
            Self::Idempotent if acks != Acks::None => {
                (concurrency as usize).clamp(1, MAX_IN_FLIGHT_IDEMPOTENT)
            }
            Self::Idempotent | Self::Plain => 1,
        }
    }

    /// What a run with this producer includes, for the report.
    pub fn describe(self, concurrency: u32, acks: Acks) -> String {
        let in_flight = self.in_flight(concurrency, acks);
        let what = match self {
            Self::Idempotent if acks != Acks::None => {
                "idempotent: a producer id (InitProducerId) and sequence numbers in every batch"
            }
            Self::Idempotent => "idempotence off: it needs acknowledgements",
            Self::Plain => "not idempotent",
        };
        format!(
            "weir-client's Producer, {what}; records enqueued one by one, batches encoded by \
             the producer, {in_flight} in flight per partition"
        )
    }
}

/// Sends `load` through a new `Producer` over `client`; latency is per record.
pub async fn run(
    client: &Client,
    load: &Load<'_>,
    idempotence: Idempotence,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Measured> {
    let producer = Producer::new(client.clone(), idempotence.config(load));
    let value = Bytes::from(super::probe::incompressible_bytes(load.record_size));
    let (deliveries, received) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(received, progress.clone()));

    let started = Instant::now();
    let mut sent: u64 = 0;
    while sent < load.records {
        let scheduled = load.due(started, sent);
        if let Some(scheduled) = scheduled {
            tokio::time::sleep_until(scheduled.into()).await;
        }
        let count = load.chunk(sent);
        for _ in 0..count {
            let intended = scheduled.unwrap_or_else(Instant::now);
            let delivery = producer
                .enqueue(load.topic, ProducerRecord::new(value.clone()))
                .await
                .context("cannot enqueue a record")?;
            if deliveries.send((intended, delivery)).is_err() {
                // The collector stopped at a failed delivery; its error is reported below.
                break;
            }
        }
        sent += count;
    }
    drop(deliveries);
    let collected = collector.await.context("the delivery collector failed")??;
    let elapsed = started.elapsed();
    Ok(Measured {
        throughput: Throughput {
            records: collected.acknowledged,
            bytes: collected.acknowledged * load.record_size as u64,
            elapsed,
        },
        latency: collected.latencies.summary(),
        rejected: collected.rejected,
    })
}

/// What the deliveries said.
struct Collected {
    /// Records answered as stored or as rejected by a produce chain, like a request's records.
    acknowledged: u64,
    rejected: u64,
    latencies: LatencyRecorder,
}

/// Awaits every delivery sent on `received` as it resolves, in any order, until the channel
/// closes; fails at the first record that was not delivered.
async fn collect(
    mut received: mpsc::UnboundedReceiver<(Instant, Delivery)>,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<Collected> {
    let mut collected = Collected {
        acknowledged: 0,
        rejected: 0,
        latencies: LatencyRecorder::default(),
    };
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            next = received.recv(), if open => match next {
                Some((intended, delivery)) => pending.push(async move {
                    let result = delivery.await;
                    (intended, Instant::now(), result)
                }),
                None => open = false,
            },
            Some((intended, answered, result)) = pending.next(), if !pending.is_empty() => {
                match result {
                    Ok(_) => {}
                    Err(DeliveryError::Rejected(_)) => collected.rejected += 1,
                    Err(e) => bail!("a record was not delivered: {e}"),
                }
                collected.acknowledged += 1;
                collected
                    .latencies
                    .record(answered.saturating_duration_since(intended));
                progress.inc(1);
            }
        }
    }
    Ok(collected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(concurrency: u32, acks: Acks) -> Load<'static> {
        Load {
            topic: "t",
            partitions: 1,
            records: 1000,
            record_size: 1024,
            keys: 0,
            batch_size: 100,
            batch_bytes: 500_000,
            concurrency,
            acks,
            rate: 0,
        }
    }

    #[test]
    fn the_config_keeps_the_load_and_switches_only_idempotence() {
        let load = load(5, Acks::All);
        let idempotent = Idempotence::Idempotent.config(&load);
        let plain = Idempotence::Plain.config(&load);
        assert!(idempotent.idempotence && !plain.idempotence);
        for config in [&idempotent, &plain] {
            assert_eq!(config.batch_max_records, 100);
            assert_eq!(config.batch_max_bytes, 500_000);
            assert_eq!((config.acks, config.max_in_flight), (Acks::All, 5));
        }
    }

    #[test]
    fn only_an_idempotent_producer_keeps_several_batches_in_flight() {
        assert_eq!(Idempotence::Idempotent.in_flight(8, Acks::All), 5);
        assert_eq!(Idempotence::Idempotent.in_flight(3, Acks::Leader), 3);
        assert_eq!(Idempotence::Idempotent.in_flight(8, Acks::None), 1);
        assert_eq!(Idempotence::Plain.in_flight(8, Acks::All), 1);
        let text = Idempotence::Plain.describe(8, Acks::All);
        assert!(text.contains("not idempotent"), "{text}");
        assert!(text.contains("1 in flight per partition"), "{text}");
        let off = Idempotence::Idempotent.describe(8, Acks::None);
        assert!(off.contains("idempotence off"), "{off}");
    }
}
