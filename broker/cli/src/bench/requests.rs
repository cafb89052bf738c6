//! The load of `weir bench produce` sent as its own produce requests: a window of
//! `--concurrency` requests in flight ([`ProducePipeline`]), each of `--batch-size` records,
//! going round-robin over the partitions. A request carries its records either as records,
//! which the broker encodes into a batch, or as one record batch encoded here with weir-client's
//! codec and sent with `Client::produce_batch` (stored as sent); the encoding is timed with the
//! rest.

use std::fmt;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use weir_client::codec::{BatchEncoder, BatchLimits, Header, Record};
use weir_client::{Client, ProducerRecord};

use super::pace::Schedule;
use super::produce::{Load, Measured};
use super::stats::{LatencyRecorder, Throughput};
use crate::pipeline::{Completion, ProducePipeline};

/// How a request carries its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// `ProduceRequest.records`: one protobuf message per record; the broker encodes the batch.
    Records,
    /// `ProduceRequest.record_batch`: a record batch (Kafka v2) encoded by the client.
    Batch,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Records => "records",
            Self::Batch => "batch",
        })
    }
}

impl Encoding {
    /// What a run in this encoding includes, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Records => {
                "requests of records (ProduceRequest.records); the broker encodes each batch"
            }
            Self::Batch => {
                "requests of one record batch encoded here (BatchEncoder, timed) and sent with \
                 produce_batch; the broker validates it and stores it as sent"
            }
        }
    }
}

/// What each request carries back to the measuring loop.
struct Sent {
    /// When the request was meant to be sent: its scheduled time open-loop, its actual send time
    /// closed-loop. Latency counts from here.
    intended: Instant,
    records: u64,
}

/// Sends `load` through `client` as requests in `encoding`; latency is per request.
pub async fn run(
    client: &Client,
    load: &Load<'_>,
    encoding: Encoding,
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<Measured> {
    let batch_size = usize::try_from(load.batch_size).context("--batch-size is too large")?;
    let max_in_flight = usize::try_from(load.concurrency).context("--concurrency is too large")?;
    // One random value shared by every record: building requests costs no copies (until the
    // batch encoder copies it, as a client's would), and the payload is not compressible.
    let value = Bytes::from(super::probe::incompressible_bytes(load.record_size));
    let mut batch: Vec<ProducerRecord> = (0..batch_size)
        .map(|_| ProducerRecord::new(value.clone()))
        .collect();
    // With keys, record number n has key n mod `keys`; the keys are made once.
    let keys: Vec<Bytes> = (0..load.keys)
        .map(|k| Bytes::from(format!("k{k}")))
        .collect();
    // Encoding checks nothing the broker does not check again with its own limits.
    let encoder = BatchEncoder::new(BatchLimits {
        max_record_bytes: usize::MAX,
        max_batch_bytes: usize::MAX,
    });

    let mut pipeline = ProducePipeline::new(client.clone(), load.topic, load.acks, max_in_flight);
    let mut latencies = LatencyRecorder::default();
    let mut acknowledged: u64 = 0;
    let mut rejected: u64 = 0;
    let mut handle = |completion: Completion<Sent>| -> anyhow::Result<()> {
        let outcome = completion.result.context("a produce request failed")?;
        latencies.record(
            completion
                .completed_at
                .saturating_duration_since(completion.tag.intended),
        );
        acknowledged += completion.tag.records;
        rejected += outcome.rejected.len() as u64;
        progress.inc(completion.tag.records);
        Ok(())
    };

    let started = Instant::now();
    let mut schedule = Schedule::start(load.plan(), started).context("cannot start the pacer")?;
    let mut request: u64 = 0;
    while let Some(chunk) = schedule.next().await {
        while !pipeline.has_room() {
            if let Some(completion) = pipeline.next_completion().await? {
                handle(completion)?;
            }
        }
        if !keys.is_empty() {
            for (n, record) in (chunk.first..).zip(batch.iter_mut()) {
                record.key = Some(keys[(n % keys.len() as u64) as usize].clone());
            }
        }
        let records =
            &batch[..usize::try_from(chunk.records).context("--batch-size is too large")?];
        let partition = u32::try_from(request % u64::from(load.partitions))
            .context("partition index overflow")?;
        let tag = Sent {
            intended: chunk.due.unwrap_or_else(Instant::now),
            records: chunk.records,
        };
        match encoding {
            Encoding::Records => pipeline.send(Some(partition), records.to_vec(), tag),
            Encoding::Batch => {
                let batch = encode(&encoder, records).context("cannot encode a batch")?;
                pipeline.send_batch(partition, batch, tag);
            }
        }
        request += 1;
    }
    while let Some(completion) = pipeline.next_completion().await? {
        handle(completion)?;
    }
    let elapsed = started.elapsed();
    Ok(Measured {
        throughput: Throughput {
            records: acknowledged,
            bytes: acknowledged * load.record_size as u64,
            elapsed,
        },
        latency: latencies.summary(),
        rejected,
    })
}

/// `records` as one batch, stamped with the client's clock as Kafka's producers stamp records
/// that carry no timestamp.
fn encode(encoder: &BatchEncoder, records: &[ProducerRecord]) -> anyhow::Result<Bytes> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let records: Vec<Record> = records
        .iter()
        .map(|r| Record {
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(key, value)| Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
            timestamp_ms: r.timestamp_ms.unwrap_or(now),
            tombstone: r.tombstone,
        })
        .collect();
    Ok(encoder.encode(&records)?.into_bytes())
}

#[cfg(test)]
mod tests {
    use weir_client::codec::EncodedBatch;

    use super::*;

    #[test]
    fn a_batch_holds_the_records_and_passes_the_stored_batch_check() {
        let encoder = BatchEncoder::new(BatchLimits::default());
        let records = vec![
            ProducerRecord::new("a"),
            ProducerRecord::new("bc").with_header("h", "v"),
        ];
        let bytes = encode(&encoder, &records).expect("encodes");
        let batch = EncodedBatch::verify(bytes).expect("a valid batch");
        let decoded: Vec<Record> = batch.records().map(|r| r.expect("decodes").1).collect();
        let values: Vec<&Bytes> = decoded.iter().map(|r| &r.value).collect();
        assert_eq!(values, [&Bytes::from("a"), &Bytes::from("bc")]);
        assert_eq!(decoded[1].headers[0].key, "h");
        assert!(
            batch.header().max_timestamp_ms > 0,
            "stamped with the clock"
        );
    }
}
