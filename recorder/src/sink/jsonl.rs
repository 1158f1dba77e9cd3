//! JSON Lines: one [`FlowEvent`] a line, to a file or standard output.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use jiff::Timestamp;

use super::{Closed, Sink, SinkError};
use crate::model::FlowEvent;

/// The JSON Lines sink: one [`FlowEvent`] a line, appended; flushed at every tick so a reader
/// (`tail -f`, the test harness) sees events within the daemon's tick.
pub struct JsonlSink {
    target: String,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonlSink {
    /// `-` is standard output; anything else a file, created or appended to.
    pub fn open(path: &Path) -> Result<Self, SinkError> {
        let (target, w): (String, Box<dyn Write + Send>) = if path == Path::new("-") {
            ("standard output".into(), Box::new(io::stdout()))
        } else {
            // Who talked to whom: the same modes as the store's files.
            let f: File = crate::store::create_options()
                .append(true)
                .open(path)
                .map_err(|source| SinkError::Open { path: path.to_owned(), source })?;
            (path.display().to_string(), Box::new(f))
        };
        Ok(Self { target, out: BufWriter::with_capacity(1 << 16, w) })
    }

    fn write_one(&mut self, ev: &FlowEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, ev)?;
        self.out.write_all(b"\n")
    }

    fn failed(&self, source: io::Error) -> SinkError {
        SinkError::Write { target: self.target.clone(), source }
    }
}

impl Sink for JsonlSink {
    fn write(&mut self, events: &[FlowEvent]) -> Result<(), SinkError> {
        events.iter().try_for_each(|ev| self.write_one(ev)).map_err(|e| self.failed(e))
    }

    fn tick(&mut self, _now: Timestamp) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.failed(e))
    }

    fn close(mut self: Box<Self>) -> Result<Closed, SinkError> {
        self.out.flush().map_err(|e| self.failed(e))?;
        Ok(Closed::Plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Flags, Kind, Proto, Translation};

    #[test]
    fn events_are_appended_one_per_line() {
        let dir = tempfile::tempdir().expect("tmp dir");
        let path = dir.path().join("events.jsonl");
        let t = Translation {
            kind: Kind::Dnat,
            proto: Proto::TCP,
            inside: "10.0.9.2:80".parse().expect("addr"),
            outside: "100.64.0.1:8080".parse().expect("addr"),
            remote: "100.64.1.5:50000".parse().expect("addr"),
            zone: 0,
            start: "2026-01-01T00:00:00Z".parse().expect("time"),
            end: None,
            flags: Flags::empty(),
        };
        for _ in 0..2 {
            let mut s = JsonlSink::open(&path).expect("open");
            s.write(&[FlowEvent::Start(t.clone())]).expect("write");
            Box::new(s).close().expect("close");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<FlowEvent> =
            text.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
        assert_eq!(lines, vec![FlowEvent::Start(t.clone()), FlowEvent::Start(t)]);
    }
}
