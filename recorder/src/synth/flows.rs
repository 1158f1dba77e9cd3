//! The live flows of the workload: what each one is, and the queue that ends them in order.

use std::collections::BTreeMap;

use crate::model::{Kind, Proto};
use crate::open_table::OpenTable;

/// An exact set of packed tuple keys (hundreds of thousands of live flows: the table's slots can
/// be prefetched a batch ahead).
pub(super) type KeySet = OpenTable<u64, ()>;

/// A service a flow talks to.
#[derive(Clone, Copy, Debug)]
pub(super) enum Service {
    Web,
    OtherTcp,
    Dns,
    Ntp,
    Quic,
    OtherUdp,
    Echo,
    Forward(u8),
}

/// Port forwards: (protocol, outside port, inside port).
pub(super) const FORWARDS: [(Proto, u16, u16); 8] = [
    (Proto::TCP, 8080, 80),
    (Proto::TCP, 2222, 22),
    (Proto::TCP, 25565, 25565),
    (Proto::TCP, 3389, 3389),
    (Proto::TCP, 8443, 443),
    (Proto::UDP, 51820, 51820),
    (Proto::UDP, 1194, 1194),
    (Proto::UDP, 27015, 27015),
];

/// A live flow, compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Flow {
    pub(super) end: i64,
    pub(super) seq: u64,
    pub(super) start: i64,
    pub(super) sub: u32,
    pub(super) remote: u32,
    pub(super) inside_port: u16,
    pub(super) outside_port: u16,
    pub(super) remote_port: u16,
    pub(super) pool: u16,
    pub(super) proto: Proto,
    pub(super) kind: Kind,
    pub(super) v6: bool,
}

impl Flow {
    pub(super) fn order(&self) -> (i64, u64) {
        (self.end, self.seq)
    }
}

/// The live flows by end time: a bucket queue (one-second buckets in a `BTreeMap`), the earliest
/// bucket sorted in `current`. Much faster than a binary heap of hundreds of thousands of flows.
#[derive(Debug, Default)]
pub(super) struct EndQueue {
    /// The flows of bucket `current_id`, the earliest one, sorted by descending (end, seq).
    pub(super) current: Vec<Flow>,
    pub(super) current_id: i64,
    pub(super) later: BTreeMap<i64, Vec<Flow>>,
}

impl EndQueue {
    const BUCKET_NS: i64 = 1_000_000_000;

    pub(super) fn push(&mut self, f: Flow) {
        let id = f.end.div_euclid(Self::BUCKET_NS);
        if !self.current.is_empty() && id == self.current_id {
            let key = f.order();
            let at = self.current.partition_point(|g| g.order() > key);
            self.current.insert(at, f);
            return;
        }
        if !self.current.is_empty() && id < self.current_id {
            // An earlier bucket than the loaded one: put that back (`peek` loads the earliest),
            // so that `current` only ever holds one bucket.
            let back = std::mem::take(&mut self.current);
            self.later.insert(self.current_id, back);
        }
        self.later.entry(id).or_default().push(f);
    }

    pub(super) fn peek(&mut self) -> Option<&Flow> {
        if self.current.is_empty() {
            let (id, mut flows) = self.later.pop_first()?;
            flows.sort_unstable_by_key(|f| std::cmp::Reverse(f.order()));
            self.current = flows;
            self.current_id = id;
        }
        self.current.last()
    }

    pub(super) fn pop(&mut self) -> Option<Flow> {
        self.peek()?;
        self.current.pop()
    }

    pub(super) fn clear(&mut self) {
        self.current.clear();
        self.later.clear();
    }
}
