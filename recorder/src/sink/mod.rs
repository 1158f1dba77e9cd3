//! Where `natrec record` writes its [`FlowEvent`] stream.
//!
//! Every output is a [`Sink`], one file of this module each: JSON Lines ([`jsonl`]) and the
//! attribution store ([`store`]). The daemon writes to a [`Fanout`] of the sinks the
//! configuration asks for, in order: every sink sees every event, in the order the tracker
//! emitted them.
//!
//! A sink must not block the capture loop: one whose work is slow (the store seals segments,
//! an exporter waits for its peer) does it on a thread of its own and buffers, counting what it
//! could not take.

pub mod jsonl;
pub mod store;

use std::io;
use std::path::PathBuf;

use jiff::Timestamp;

use crate::model::FlowEvent;
use crate::store::{StoreError, WriterOptions, WriterStats};

pub use jsonl::JsonlSink;
pub use store::StoreSink;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("writing JSON Lines to {target}: {source}")]
    Write { target: String, source: io::Error },
    #[error("attribution store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}: {1}")]
    Thread(&'static str, io::Error),
}

/// An output of the recorder.
pub trait Sink: Send {
    /// Takes the next events, in order. An error is fatal to the recording; a sink whose
    /// failures are not (the store's, for instance) counts and logs them itself.
    fn write(&mut self, events: &[FlowEvent]) -> Result<(), SinkError>;

    /// Called every daemon tick (100 ms) and at shutdown: flush what is buffered, so that a
    /// reader sees events within a tick.
    fn tick(&mut self, now: Timestamp) -> Result<(), SinkError>;

    /// Writes what is left and reports what the sink did.
    fn close(self: Box<Self>) -> Result<Closed, SinkError>;

    /// Takes the settings a reload (SIGHUP) may change; `store` is the store's, if any.
    fn reload(&mut self, store: Option<&WriterOptions>) {
        let _ = store;
    }
}

/// What a sink reports when it closes.
#[derive(Debug)]
pub enum Closed {
    /// Nothing beyond the events written.
    Plain,
    /// The attribution store's counters.
    Store(WriterStats),
}

/// The sinks of a run, written in the order they were added.
#[derive(Default)]
pub struct Fanout {
    sinks: Vec<Box<dyn Sink>>,
}

impl Fanout {
    pub fn push(&mut self, sink: Box<dyn Sink>) {
        self.sinks.push(sink);
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Gives `events` to every sink and empties it (its capacity is kept for the next batch).
    pub fn write(&mut self, events: &mut Vec<FlowEvent>) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        for s in &mut self.sinks {
            s.write(events)?;
        }
        events.clear();
        Ok(())
    }

    pub fn tick(&mut self, now: Timestamp) -> Result<(), SinkError> {
        self.sinks.iter_mut().try_for_each(|s| s.tick(now))
    }

    pub fn reload(&mut self, store: Option<&WriterOptions>) {
        self.sinks.iter_mut().for_each(|s| s.reload(store));
    }

    /// Closes every sink, in order, even after one fails; the first error is returned.
    pub fn close(self) -> Result<Vec<Closed>, SinkError> {
        let mut closed = Vec::with_capacity(self.sinks.len());
        let mut first_err = None;
        for s in self.sinks {
            match s.close() {
                Ok(c) => closed.push(c),
                Err(e) => {
                    tracing::error!("closing a sink: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(closed), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::model::{Flags, Kind, Proto, Translation};

    /// Records what it was given into a shared log.
    struct Probe(Arc<Mutex<Vec<String>>>, &'static str);

    impl Sink for Probe {
        fn write(&mut self, events: &[FlowEvent]) -> Result<(), SinkError> {
            let mut log = self.0.lock().expect("lock");
            log.extend(
                events.iter().map(|e| format!("{}{}", self.1, e.translation().inside.port())),
            );
            Ok(())
        }
        fn tick(&mut self, now: Timestamp) -> Result<(), SinkError> {
            self.0.lock().expect("lock").push(format!("{}tick {now}", self.1));
            Ok(())
        }
        fn close(self: Box<Self>) -> Result<Closed, SinkError> {
            self.0.lock().expect("lock").push(format!("{}close", self.1));
            Ok(Closed::Plain)
        }
    }

    #[test]
    fn every_sink_sees_every_event_in_order_and_the_batch_is_emptied() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut fan = Fanout::default();
        assert!(fan.is_empty());
        fan.push(Box::new(Probe(log.clone(), "a")));
        fan.push(Box::new(Probe(log.clone(), "b")));
        let t = |port: u16| Translation {
            kind: Kind::Snat,
            proto: Proto::UDP,
            inside: format!("10.0.0.2:{port}").parse().expect("addr"),
            outside: "100.64.0.1:40000".parse().expect("addr"),
            remote: "100.64.1.5:53".parse().expect("addr"),
            zone: 0,
            start: "2026-01-01T00:00:00Z".parse().expect("time"),
            end: None,
            flags: Flags::empty(),
        };
        let mut batch = vec![FlowEvent::Start(t(1)), FlowEvent::Start(t(2))];
        fan.write(&mut batch).expect("write");
        assert!(batch.is_empty());
        fan.write(&mut batch).expect("an empty batch is no call");
        fan.tick("2026-01-01T00:00:01Z".parse().expect("time")).expect("tick");
        fan.close().expect("close");
        let log = log.lock().expect("lock");
        let tick = "tick 2026-01-01T00:00:01Z";
        assert_eq!(
            *log,
            ["a1", "a2", "b1", "b2", &format!("a{tick}"), &format!("b{tick}"), "aclose", "bclose"]
        );
    }
}
