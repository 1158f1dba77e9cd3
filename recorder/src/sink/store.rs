//! The attribution store as a sink: the store's [`Writer`] on a thread of its own.
//!
//! Flushing, fsyncing and above all sealing a segment (compressing a whole segment with zstd)
//! never stall the capture loop; events wait in the channel meanwhile. Store errors are
//! counted and logged, never fatal: the capture goes on, and a JSON Lines sink, if any, keeps
//! everything.

use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::{Closed, Sink, SinkError};
use crate::model::FlowEvent;
use crate::store::{StoreError, Writer, WriterOptions, WriterStats};

/// Events beyond which the batch goes to the store thread before the tick. It bounds what the
/// batches hold after a burst (an event takes 152 bytes, and up to [`SPARE_BATCHES`] + 2
/// batches keep their capacity): 8 192 events are 1.2 MB a batch, where 65 536 held 10 MB
/// each. At 230 000 translations a second that is 30 hand-overs a second instead of 10.
const BATCH_MAX: usize = 1 << 13;

/// Written batches the store thread may send back for reuse before the capture side takes one
/// (it takes one at each hand-over; a batch beyond these is freed).
const SPARE_BATCHES: usize = 2;

enum Msg {
    Events(Vec<FlowEvent>),
    Tick(Timestamp),
    Limits(Box<WriterOptions>),
}

/// The store writer's thread, fed in batches.
pub struct StoreSink {
    tx: mpsc::Sender<Msg>,
    handle: JoinHandle<(Result<WriterStats, StoreError>, u64)>,
    /// Events for the thread, handed over at each tick (one wake-up of that thread per tick
    /// rather than per ring-buffer read; the writer flushes only at ticks, so nothing waits
    /// longer for the disk) or when [`BATCH_MAX`] are waiting.
    batch: Vec<FlowEvent>,
    /// Batches the thread has written, sent back empty with their capacity, so that a new batch
    /// neither grows by reallocation (copying itself each time) nor faults in fresh pages.
    spare: mpsc::Receiver<Vec<FlowEvent>>,
    stats: LiveStats,
}

/// The writer's counters as of its last batch or tick, for the metrics endpoint.
#[derive(Clone, Debug, Default)]
pub struct LiveStats(Arc<Mutex<WriterStats>>);

impl LiveStats {
    pub fn get(&self) -> WriterStats {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn set(&self, stats: WriterStats) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = stats;
    }
}

impl StoreSink {
    /// Starts the thread that owns `writer`.
    pub fn spawn(mut writer: Writer) -> Result<Self, SinkError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let (back, spare) = mpsc::sync_channel::<Vec<FlowEvent>>(SPARE_BATCHES);
        let stats = LiveStats::default();
        stats.set(writer.stats());
        let live = stats.clone();
        let handle = std::thread::Builder::new()
            .name("natrec-store".into())
            .spawn(move || {
                let mut errors = 0u64;
                let mut last_log: Option<Instant> = None;
                // Logged at most every 10 s.
                let mut fail = |e: StoreError| {
                    errors += 1;
                    if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::error!(errors, "attribution store: {e}");
                        last_log = Some(Instant::now());
                    }
                };
                for msg in rx {
                    match msg {
                        Msg::Events(mut batch) => {
                            writer.append_all(&batch, &mut fail);
                            batch.clear();
                            // Full (the capture side has enough spares) or gone: dropped.
                            let _ = back.try_send(batch);
                        }
                        Msg::Tick(now) => {
                            if let Err(e) = writer.tick(now) {
                                fail(e);
                            }
                        }
                        Msg::Limits(opts) => writer.set_limits(&opts),
                    }
                    live.set(writer.stats());
                }
                (writer.close(), errors)
            })
            .map_err(|e| SinkError::Thread("starting the store writer thread", e))?;
        Ok(Self { tx, handle, batch: Vec::new(), spare, stats })
    }

    /// The writer's counters, kept current by its thread.
    pub fn live_stats(&self) -> LiveStats {
        self.stats.clone()
    }

    /// Sends the batch, if any, to the thread, and starts the next in a spare one.
    fn hand_over(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let next = self.spare.try_recv().unwrap_or_default();
        let full = std::mem::replace(&mut self.batch, next);
        self.send(Msg::Events(full));
    }

    fn send(&self, msg: Msg) {
        // The thread ends only when the channel closes, or by a panic, which close reports.
        let _ = self.tx.send(msg);
    }
}

impl Sink for StoreSink {
    fn write(&mut self, events: &[FlowEvent]) -> Result<(), SinkError> {
        self.batch.extend_from_slice(events);
        if self.batch.len() >= BATCH_MAX {
            self.hand_over();
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) -> Result<(), SinkError> {
        self.hand_over();
        self.send(Msg::Tick(now));
        Ok(())
    }

    fn reload(&mut self, store: Option<&WriterOptions>) {
        if let Some(opts) = store {
            self.send(Msg::Limits(Box::new(opts.clone())));
        }
    }

    /// Closes the channel, lets the writer drain it and seal, and returns its counters.
    fn close(mut self: Box<Self>) -> Result<Closed, SinkError> {
        self.hand_over();
        let Self { tx, handle, .. } = *self;
        drop(tx);
        let (stats, errors) = handle.join().map_err(|_| {
            SinkError::Thread("the store writer thread", std::io::Error::other("panicked"))
        })?;
        if errors > 0 {
            tracing::error!(errors, "the attribution store failed to take some events");
        }
        Ok(Closed::Store(stats?))
    }
}
