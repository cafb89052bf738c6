//! The load of `weir bench produce --producer`: records enqueued one by one into weir-client's
//! `Producer`, idempotent or plain, which batches them (`--batch-size` records per batch),
//! partitions them (keyless: sticky) and keeps its own window of batches in flight. Latency is
//! per record, from its enqueue (or its scheduled time, open-loop) to its acknowledgement, so it
//! includes the time spent in the producer's buffer.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::ValueEnum;
use futures::FutureExt;
use tokio::sync::mpsc;
use weir_client::{
    Acks, Client, Delivery, DeliveryError, MAX_IN_FLIGHT_IDEMPOTENT, Producer, ProducerConfig,
    ProducerRecord, RecordMetadata,
};

use super::pace::Schedule;
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
    let mut schedule = Schedule::start(load.plan(), started).context("cannot start the pacer")?;
    while let Some(chunk) = schedule.next().await {
        for _ in 0..chunk.records {
            let intended = chunk.due.unwrap_or_else(Instant::now);
            let delivery = producer
                .enqueue(load.topic, ProducerRecord::new(value.clone()))
                .await
                .context("cannot enqueue a record")?;
            if deliveries.send((intended, delivery)).is_err() {
                // The collector stopped at a failed delivery; its error is reported below.
                break;
            }
        }
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

/// Awaits every delivery sent on `received`, until the channel closes; fails at the first
/// record that was not delivered.
///
/// A partition answers its records in the order they were enqueued, a batch at a time, so each
/// partition's deliveries wait in a queue and only its oldest is awaited: once that one
/// resolves, the rest of its batch has too, and is taken at the same instant without a wake-up
/// or a clock read per record (a `FuturesUnordered` of deliveries cost an eighth of the
/// client's CPU, charged to the `Producer`).
async fn collect(
    mut received: mpsc::UnboundedReceiver<(Instant, Delivery)>,
    progress: indicatif::ProgressBar,
) -> anyhow::Result<Collected> {
    let mut collected = Collected {
        acknowledged: 0,
        rejected: 0,
        latencies: LatencyRecorder::default(),
    };
    let mut waiting = Waiting::default();
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            next = received.recv(), if open => match next {
                Some((intended, delivery)) => waiting.push(intended, delivery),
                None => open = false,
            },
            (partition, first) = waiting.oldest_resolved(), if !waiting.is_empty() => {
                let answered = Instant::now();
                let mut taken = 0;
                let mut result = Some(first);
                while let Some((intended, outcome)) = result {
                    match outcome {
                        Ok(_) => {}
                        Err(DeliveryError::Rejected(_)) => collected.rejected += 1,
                        Err(e) => bail!("a record was not delivered: {e}"),
                    }
                    collected
                        .latencies
                        .record(answered.saturating_duration_since(intended));
                    taken += 1;
                    result = waiting.resolved_next(partition);
                }
                collected.acknowledged += taken;
                progress.inc(taken);
            }
        }
    }
    Ok(collected)
}

type Outcome = Result<RecordMetadata, DeliveryError>;

/// The deliveries not yet resolved, by partition, in the order they were enqueued.
#[derive(Default)]
struct Waiting {
    partitions: Vec<VecDeque<(Instant, Delivery)>>,
    count: usize,
}

impl Waiting {
    fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn push(&mut self, intended: Instant, delivery: Delivery) {
        let partition = delivery.partition() as usize;
        if partition >= self.partitions.len() {
            self.partitions.resize_with(partition + 1, VecDeque::new);
        }
        self.partitions[partition].push_back((intended, delivery));
        self.count += 1;
    }

    /// Waits until the oldest delivery of some partition resolves, and takes it; returns the
    /// partition and the delivery's intended time and outcome.
    async fn oldest_resolved(&mut self) -> (usize, (Instant, Outcome)) {
        let (partition, outcome) = std::future::poll_fn(|cx| {
            for (partition, queue) in self.partitions.iter_mut().enumerate() {
                if let Some((_, oldest)) = queue.front_mut()
                    && let Poll::Ready(outcome) = Pin::new(oldest).poll(cx)
                {
                    return Poll::Ready((partition, outcome));
                }
            }
            Poll::Pending
        })
        .await;
        (partition, (self.take_oldest(partition), outcome))
    }

    /// The oldest delivery of `partition` if it has resolved (it is then taken).
    fn resolved_next(&mut self, partition: usize) -> Option<(Instant, Outcome)> {
        let (_, oldest) = self.partitions[partition].front_mut()?;
        let outcome = oldest.now_or_never()?;
        Some((self.take_oldest(partition), outcome))
    }

    /// Takes the oldest delivery of `partition` (resolved), returning its intended time.
    fn take_oldest(&mut self, partition: usize) -> Instant {
        let (intended, _) = self.partitions[partition]
            .pop_front()
            .expect("a resolved delivery is waiting");
        self.count -= 1;
        intended
    }
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
