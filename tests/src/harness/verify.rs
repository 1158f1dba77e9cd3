//! The verifier: for every paired outside packet, natrec's query API is asked "who held this
//! outside ip:port, talking to this remote ip:port with this protocol, at this instant" and the
//! answer is compared with the inside endpoint the inside capture showed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use jiff::{SignedDuration, Timestamp};
use recorder::lookup::{EndpointMatch, TranslationSource};
use recorder::model::{Proto, Translation};
use recorder::query::{Answer, OutsideQuery, who_held};

use super::HarnessError;
use super::pair::{Observation, Pairing, Unpaired};

/// How many failing cases a report shows.
pub const SHOWN_CASES: usize = 10;

/// How natrec's query API is asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueryMode {
    /// One point query (window 0) per packet: what an operator asks. The default.
    #[default]
    PerPacket,
    /// One query per flow (proto, outside, remote) whose window spans all its packets, then the
    /// answer at each packet's instant is the candidates alive then (`Candidate` lifetimes,
    /// with the store's own overlap rule). Same verdicts, far fewer store scans: for debug
    /// builds (CI's `cargo test`).
    PerFlow,
}

/// How one packet's check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Exactly one inside endpoint, the true one.
    Correct,
    /// Candidates, none of them the true inside endpoint.
    Wrong,
    /// No candidate at all.
    Missing,
    /// Several inside endpoints although the remote was given, the true one among them.
    Ambiguous,
}

/// One failed (or ambiguous) check, with what natrec answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    pub outcome: Outcome,
    pub observation: Observation,
    /// The inside endpoints natrec named, with each record's start, end and flags.
    pub answered: Vec<String>,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.observation;
        write!(
            f,
            "{:?}: {} {} outside {} remote {} at {} (outside capture {}): truth {}; natrec: {}",
            self.outcome,
            o.proto,
            if o.outbound { "outbound" } else { "inbound" },
            o.outside,
            o.remote,
            o.at,
            o.outside_ts,
            o.inside,
            if self.answered.is_empty() { "nothing".to_owned() } else { self.answered.join(", ") }
        )
    }
}

/// What the workload exercised, as seen on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Distinct translations (proto, inside, outside, remote) seen.
    pub flows: usize,
    /// Flows by protocol name.
    pub by_proto: BTreeMap<String, usize>,
    /// Flows whose outside port (or echo identifier) differs from the inside one.
    pub port_rewrites: usize,
    /// Outside endpoints used towards two remotes or more at overlapping times.
    pub shared_outside: usize,
    /// Outside endpoints that passed from one inside endpoint to another over the run.
    pub reused_outside: usize,
    /// Flows seen inbound first: port forwards.
    pub port_forward_flows: usize,
}

/// The verification's counts and first cases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub checked: u64,
    pub correct: u64,
    pub wrong: u64,
    pub missing: u64,
    pub ambiguous: u64,
    /// Correct answers that held the true endpoint in more than one record.
    pub duplicated: u64,
    /// Outside packets whose twin was not in the inside capture (not checkable).
    pub unpaired: u64,
    /// The first [`SHOWN_CASES`] of them.
    pub unpaired_cases: Vec<Unpaired>,
    /// The first [`SHOWN_CASES`] wrong or missing cases.
    pub failures: Vec<Case>,
    /// The first [`SHOWN_CASES`] ambiguous cases.
    pub ambiguities: Vec<Case>,
    /// Damaged parts of the store an answer had to skip (each once).
    pub damage: Vec<String>,
    pub coverage: Coverage,
    /// The same counts for the IPv6 packets alone.
    pub ipv6: FamilyCounts,
}

/// One address family's share of a [`Verdict`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyCounts {
    pub checked: u64,
    pub correct: u64,
    pub wrong: u64,
    pub missing: u64,
    pub ambiguous: u64,
}

impl Verdict {
    /// Whether the run proves natrec right: packets were checked, and none was wrong, missing or
    /// left unpaired.
    pub fn passed(&self) -> bool {
        self.checked > 0
            && self.wrong == 0
            && self.missing == 0
            && self.unpaired == 0
            && self.damage.is_empty()
    }

    /// Whether, besides, every answer was a single record (no ambiguity, no duplicate records).
    pub fn exact(&self) -> bool {
        self.passed() && self.ambiguous == 0 && self.duplicated == 0
    }
}

/// Checks every observation of `pairing` against `source` with natrec's query API.
pub fn verify<S>(source: &S, pairing: &Pairing, mode: QueryMode) -> Result<Verdict, HarnessError>
where
    S: TranslationSource + ?Sized,
{
    let mut v = Verdict {
        unpaired: pairing.unpaired.len() as u64,
        unpaired_cases: pairing.unpaired.iter().take(SHOWN_CASES).cloned().collect(),
        coverage: coverage(&pairing.observations),
        ..Verdict::default()
    };
    let mut damage = HashSet::new();
    let mut note_damage = |answer: &Answer, v: &mut Verdict| {
        for d in &answer.report.damage {
            let text = format!(
                "{}{}: {}",
                d.segment.display(),
                d.block.map_or(String::new(), |b| format!(" block {b}")),
                d.reason
            );
            if damage.insert(text.clone()) {
                v.damage.push(text);
            }
        }
    };
    match mode {
        QueryMode::PerPacket => {
            for o in &pairing.observations {
                let answer = who_held(source, &query(o, o.at, SignedDuration::ZERO))?;
                note_damage(&answer, &mut v);
                let alive: Vec<&Translation> =
                    answer.candidates.iter().map(|c| &c.translation).collect();
                judge(&mut v, o, &alive);
            }
        }
        QueryMode::PerFlow => {
            let mut flows: HashMap<(Proto, SocketAddr, SocketAddr), Vec<&Observation>> =
                HashMap::new();
            for o in &pairing.observations {
                flows.entry((o.proto, o.outside, o.remote)).or_default().push(o);
            }
            let mut keys: Vec<_> = flows.keys().copied().collect();
            keys.sort();
            for key in keys {
                let obs = &flows[&key];
                let (Some(first), Some(last)) =
                    (obs.iter().map(|o| o.at).min(), obs.iter().map(|o| o.at).max())
                else {
                    continue;
                };
                // A window centred between the first and the last packet, reaching both.
                let half = last.duration_since(first) / 2;
                let mid =
                    first.checked_add(half).map_err(|e| HarnessError::Invalid(e.to_string()))?;
                let window = half + SignedDuration::from_nanos(1);
                let answer = who_held(source, &query(obs[0], mid, window))?;
                note_damage(&answer, &mut v);
                for o in obs {
                    let alive: Vec<&Translation> = answer
                        .candidates
                        .iter()
                        .map(|c| &c.translation)
                        .filter(|t| t.overlaps(o.at, o.at))
                        .collect();
                    judge(&mut v, o, &alive);
                }
            }
        }
    }
    Ok(v)
}

fn query(o: &Observation, at: Timestamp, window: SignedDuration) -> OutsideQuery {
    OutsideQuery {
        outside: EndpointMatch { ip: o.outside.ip(), port: Some(o.outside.port()) },
        remote: Some(EndpointMatch { ip: o.remote.ip(), port: Some(o.remote.port()) }),
        proto: Some(o.proto),
        at,
        window,
    }
}

/// Counts one packet's outcome from the records natrec named alive at its instant.
fn judge(v: &mut Verdict, o: &Observation, alive: &[&Translation]) {
    let insides: HashSet<SocketAddr> = alive.iter().map(|t| t.inside).collect();
    let outcome = match (insides.len(), insides.contains(&o.inside)) {
        (0, _) => Outcome::Missing,
        (_, false) => Outcome::Wrong,
        (1, true) => Outcome::Correct,
        (_, true) => Outcome::Ambiguous,
    };
    v.checked += 1;
    if o.outside.is_ipv6() {
        let c = &mut v.ipv6;
        c.checked += 1;
        match outcome {
            Outcome::Correct => c.correct += 1,
            Outcome::Wrong => c.wrong += 1,
            Outcome::Missing => c.missing += 1,
            Outcome::Ambiguous => c.ambiguous += 1,
        }
    }
    let case = || Case {
        outcome,
        observation: o.clone(),
        answered: alive
            .iter()
            .map(|t| {
                let flags: Vec<&str> = t.flags.names().collect();
                format!(
                    "{} {} ({} .. {}{})",
                    t.kind,
                    t.inside,
                    t.start,
                    t.end.map_or("open".to_owned(), |e| e.to_string()),
                    if flags.is_empty() { String::new() } else { format!(" {}", flags.join(",")) }
                )
            })
            .collect(),
    };
    match outcome {
        Outcome::Correct => {
            v.correct += 1;
            if alive.len() > 1 {
                v.duplicated += 1;
            }
        }
        Outcome::Wrong | Outcome::Missing => {
            if outcome == Outcome::Wrong {
                v.wrong += 1;
            } else {
                v.missing += 1;
            }
            if v.failures.len() < SHOWN_CASES {
                v.failures.push(case());
            }
        }
        Outcome::Ambiguous => {
            v.ambiguous += 1;
            if v.ambiguities.len() < SHOWN_CASES {
                v.ambiguities.push(case());
            }
        }
    }
}

/// What the observations show the workload did.
pub fn coverage(obs: &[Observation]) -> Coverage {
    type FlowId = (Proto, SocketAddr, SocketAddr, SocketAddr);
    // Per flow: first and last time, and whether its first packet came in.
    let mut flows: HashMap<FlowId, (Timestamp, Timestamp, bool)> = HashMap::new();
    for o in obs {
        let e = flows.entry((o.proto, o.inside, o.outside, o.remote)).or_insert((
            o.at,
            o.at,
            !o.outbound,
        ));
        if o.at < e.0 {
            *e = (o.at, e.1, !o.outbound);
        }
        e.1 = e.1.max(o.at);
    }
    let mut c = Coverage { flows: flows.len(), ..Coverage::default() };
    // Per outside endpoint: (first, last, inside, remote) of each flow that used it.
    type Use = (Timestamp, Timestamp, SocketAddr, SocketAddr);
    let mut by_outside: HashMap<(Proto, SocketAddr), Vec<Use>> = HashMap::new();
    for (&(proto, inside, outside, remote), &(first, last, inbound_first)) in &flows {
        *c.by_proto.entry(proto.to_string()).or_default() += 1;
        if inside.port() != outside.port() && !inbound_first {
            c.port_rewrites += 1;
        }
        if inbound_first {
            c.port_forward_flows += 1;
        }
        by_outside.entry((proto, outside)).or_default().push((first, last, inside, remote));
    }
    for uses in by_outside.values_mut() {
        uses.sort();
        let insides: HashSet<SocketAddr> = uses.iter().map(|u| u.2).collect();
        if insides.len() > 1 {
            c.reused_outside += 1;
        }
        let shared = uses
            .iter()
            .enumerate()
            .any(|(i, a)| uses[i + 1..].iter().take_while(|b| b.0 <= a.1).any(|b| b.3 != a.3));
        if shared {
            c.shared_outside += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use recorder::testing;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn obs(inside: &str, outside: &str, remote: &str, t: &str) -> Observation {
        Observation {
            proto: Proto::UDP,
            outside: outside.parse().expect("outside"),
            remote: remote.parse().expect("remote"),
            inside: inside.parse().expect("inside"),
            outbound: true,
            at: at(t),
            outside_ts: at(t),
        }
    }

    fn tr(
        inside: &str,
        outside: &str,
        remote: &str,
        start: &str,
        end: Option<&str>,
    ) -> Translation {
        testing::tr(inside, outside, remote)
            .proto(Proto::UDP)
            .start(at(start))
            .end(end.map(at))
            .build()
    }

    #[test]
    fn each_outcome_is_counted_and_failures_are_shown() {
        let records = vec![
            tr(
                "10.0.1.2:5000",
                "100.64.0.1:5000",
                "100.64.1.1:7",
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:10Z"),
            ),
            // Port reused later by another host, towards the same remote.
            tr("10.0.2.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:20Z", None),
            // Two records of one remote at once: ambiguous.
            tr("10.0.3.2:6000", "100.64.0.1:6000", "100.64.1.2:7", "2026-01-01T00:00:00Z", None),
            tr("10.0.4.2:6000", "100.64.0.1:6000", "100.64.1.2:7", "2026-01-01T00:00:00Z", None),
        ];
        let pairing = Pairing {
            observations: vec![
                obs("10.0.1.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:05Z"),
                obs("10.0.2.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:25Z"),
                // The wire says host 3, the log says host 2: wrong.
                obs("10.0.3.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:30Z"),
                // Between the two lifetimes: missing.
                obs("10.0.1.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:15Z"),
                obs("10.0.3.2:6000", "100.64.0.1:6000", "100.64.1.2:7", "2026-01-01T00:00:01Z"),
            ],
            unpaired: Vec::new(),
            not_translated: 0,
        };
        let v = verify(records.as_slice(), &pairing, QueryMode::PerPacket).expect("verify");
        assert_eq!((v.checked, v.correct, v.wrong, v.missing, v.ambiguous), (5, 2, 1, 1, 1));
        // One query per flow reaches the same verdict.
        let per_flow = verify(records.as_slice(), &pairing, QueryMode::PerFlow).expect("verify");
        assert_eq!(
            (
                per_flow.checked,
                per_flow.correct,
                per_flow.wrong,
                per_flow.missing,
                per_flow.ambiguous
            ),
            (5, 2, 1, 1, 1)
        );
        assert!(!v.passed());
        assert_eq!(v.failures.len(), 2);
        assert_eq!(v.failures[0].outcome, Outcome::Wrong);
        assert!(v.failures[0].to_string().contains("natrec: snat 10.0.2.2:5000"));
        assert_eq!(v.failures[1].outcome, Outcome::Missing);
        assert_eq!(v.coverage.flows, 4);
        assert_eq!(v.coverage.reused_outside, 1);

        let honest =
            Pairing { observations: pairing.observations[..2].to_vec(), ..Pairing::default() };
        for mode in [QueryMode::PerPacket, QueryMode::PerFlow] {
            let v = verify(records.as_slice(), &honest, mode).expect("verify");
            assert!(v.passed() && v.exact(), "{v:?}");
            // Nothing checked proves nothing.
            assert!(
                !verify(records.as_slice(), &Pairing::default(), mode).expect("verify").passed()
            );
        }
    }
}
