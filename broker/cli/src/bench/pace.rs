//! When `weir bench produce` sends each chunk of its records (a request, or records a `Producer`
//! is handed together): at once closed-loop, on schedule open-loop.
//!
//! Open-loop latency counts from each chunk's scheduled time, so the benchmark must send on
//! time or it charges the broker for its own lateness. tokio's timer cannot pace that finely: it
//! fires on a millisecond tick at or after the deadline, so a chunk paced by
//! `tokio::time::sleep_until` leaves up to a millisecond late, every one of them — half of a
//! 2 ms latency target. The pacer's own thread sleeps with `std::thread::sleep` instead (the
//! kernel's high-resolution timers, late by tens of microseconds) and hands each chunk to the
//! sending task when it is due.

use std::io;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Chunks handed to a sender that fell behind before the pacer waits for it (each still carries
/// its own due time, so its latency counts from then).
const PACED_AHEAD: usize = 4096;

/// How a run's records are cut into chunks and, open-loop, when each is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Records to send.
    pub records: u64,
    /// Records per chunk (the last may have fewer).
    pub chunk_records: u32,
    /// Records per second, open-loop; 0 for closed-loop.
    pub rate: u64,
}

/// One chunk of a run's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// Records sent before it.
    pub first: u64,
    /// Its records.
    pub records: u64,
    /// When it is due, open-loop; `None` closed-loop (sent as soon as there is room).
    pub due: Option<Instant>,
}

/// A plan's chunks, in order.
#[derive(Debug, Clone)]
pub struct Chunks {
    plan: Plan,
    started: Instant,
    next: u64,
}

impl Iterator for Chunks {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        let plan = self.plan;
        let first = self.next;
        if first >= plan.records {
            return None;
        }
        let records = u64::from(plan.chunk_records.max(1)).min(plan.records - first);
        self.next += records;
        Some(Chunk {
            first,
            records,
            due: (plan.rate > 0).then(|| self.started + send_offset(first, plan.rate)),
        })
    }
}

/// When, after the start, the chunk that begins with record number `records_before` is due at
/// `rate` records per second.
fn send_offset(records_before: u64, rate: u64) -> Duration {
    Duration::from_secs_f64(records_before as f64 / rate as f64)
}

/// A run's chunks, each handed out when it is due.
pub enum Schedule {
    /// Closed-loop: every chunk at once.
    Now(Chunks),
    /// Open-loop: from the pacer's thread, on time.
    Paced(mpsc::Receiver<Chunk>),
}

impl Schedule {
    /// The chunks of `plan` for a run that started at `started`; open-loop, a pacer thread that
    /// stops once the last chunk is handed out or the schedule is dropped.
    pub fn start(plan: Plan, started: Instant) -> io::Result<Self> {
        let chunks = Chunks {
            plan,
            started,
            next: 0,
        };
        if plan.rate == 0 {
            return Ok(Self::Now(chunks));
        }
        let (sender, receiver) = mpsc::channel(PACED_AHEAD);
        std::thread::Builder::new()
            .name("weir-bench-pacer".into())
            .spawn(move || {
                for chunk in chunks {
                    let wait = chunk
                        .due
                        .and_then(|due| due.checked_duration_since(Instant::now()));
                    if let Some(wait) = wait {
                        std::thread::sleep(wait);
                    }
                    if sender.blocking_send(chunk).is_err() {
                        break; // The run ended early.
                    }
                }
            })?;
        Ok(Self::Paced(receiver))
    }

    /// The next chunk, once it is due; `None` after the last.
    pub async fn next(&mut self) -> Option<Chunk> {
        match self {
            Self::Now(chunks) => chunks.next(),
            Self::Paced(paced) => paced.recv().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_loop_chunks_are_spaced_by_their_records() {
        assert_eq!(send_offset(0, 1000), Duration::ZERO);
        assert_eq!(send_offset(100, 1000), Duration::from_millis(100));
        assert_eq!(send_offset(2500, 1000), Duration::from_millis(2500));
        let started = Instant::now();
        let plan = Plan {
            records: 250,
            chunk_records: 100,
            rate: 1000,
        };
        let chunks: Vec<Chunk> = Chunks {
            plan,
            started,
            next: 0,
        }
        .collect();
        let ms = Duration::from_millis;
        assert_eq!(
            chunks,
            [
                (0, 100, Some(started)),
                (100, 100, Some(started + ms(100))),
                (200, 50, Some(started + ms(200))),
            ]
            .map(|(first, records, due)| Chunk {
                first,
                records,
                due
            })
        );
        let closed = Chunks {
            plan: Plan { rate: 0, ..plan },
            started,
            next: 0,
        };
        assert!(closed.map(|c| c.due).eq([None, None, None]));
    }

    /// The pacer hands out every chunk, in order, none before it is due.
    #[tokio::test]
    async fn a_paced_schedule_hands_out_each_chunk_once_it_is_due() {
        let started = Instant::now();
        let plan = Plan {
            records: 30,
            chunk_records: 10,
            rate: 1000,
        };
        let mut schedule = Schedule::start(plan, started).expect("a pacer thread");
        let mut firsts = Vec::new();
        while let Some(chunk) = schedule.next().await {
            let due = chunk.due.expect("open-loop chunks are due at a time");
            assert!(
                Instant::now() >= due,
                "chunk {} handed out early",
                chunk.first
            );
            firsts.push(chunk.first);
        }
        assert_eq!(firsts, [0, 10, 20]);
    }
}
