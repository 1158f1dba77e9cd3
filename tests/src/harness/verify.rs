//! The verifier: for every paired outside packet, natrec's query API is asked "who held this
//! outside ip:port, talking to this remote ip:port with this protocol, at this instant" and the
//! answer is compared with the inside endpoint the inside capture showed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;

use jiff::{SignedDuration, Timestamp};
use recorder::model::Proto;
use recorder::query::{OutsideQuery, who_held};
use recorder::scan::{EndpointMatch, TranslationSource};

use super::HarnessError;
use super::pair::{Observation, Pairing};

/// How many failing cases a report shows.
pub const SHOWN_CASES: usize = 10;

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
            if self.answered.is_empty() {
                "nothing".to_owned()
            } else {
                self.answered.join(", ")
            }
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
    /// The first [`SHOWN_CASES`] wrong or missing cases.
    pub failures: Vec<Case>,
    /// The first [`SHOWN_CASES`] ambiguous cases.
    pub ambiguities: Vec<Case>,
    pub coverage: Coverage,
}

impl Verdict {
    /// Whether the run proves natrec right: packets were checked, and none was wrong, missing or
    /// left unpaired.
    pub fn passed(&self) -> bool {
        self.checked > 0 && self.wrong == 0 && self.missing == 0 && self.unpaired == 0
    }
}

/// Checks every observation of `pairing` against `source` with natrec's query API.
pub fn verify<S>(source: &S, pairing: &Pairing) -> Result<Verdict, HarnessError>
where
    S: TranslationSource + ?Sized,
{
    let mut v = Verdict {
        unpaired: pairing.unpaired.len() as u64,
        coverage: coverage(&pairing.observations),
        ..Verdict::default()
    };
    for o in &pairing.observations {
        let q = OutsideQuery {
            outside: EndpointMatch {
                ip: o.outside.ip(),
                port: Some(o.outside.port()),
            },
            remote: Some(EndpointMatch {
                ip: o.remote.ip(),
                port: Some(o.remote.port()),
            }),
            proto: Some(o.proto),
            at: o.at,
            window: SignedDuration::ZERO,
        };
        let answer = who_held(source, &q)?;
        let insides: HashSet<SocketAddr> = answer
            .candidates
            .iter()
            .map(|c| c.translation.inside)
            .collect();
        let outcome = match (insides.len(), insides.contains(&o.inside)) {
            (0, _) => Outcome::Missing,
            (_, false) => Outcome::Wrong,
            (1, true) => Outcome::Correct,
            (_, true) => Outcome::Ambiguous,
        };
        v.checked += 1;
        let case = || Case {
            outcome,
            observation: o.clone(),
            answered: answer
                .candidates
                .iter()
                .map(|c| {
                    let t = &c.translation;
                    let flags: Vec<&str> = t.flags.names().collect();
                    format!(
                        "{} {} ({} .. {}{})",
                        t.kind,
                        t.inside,
                        t.start,
                        t.end.map_or("open".to_owned(), |e| e.to_string()),
                        if flags.is_empty() {
                            String::new()
                        } else {
                            format!(" {}", flags.join(","))
                        }
                    )
                })
                .collect(),
        };
        match outcome {
            Outcome::Correct => {
                v.correct += 1;
                if answer.candidates.len() > 1 {
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
    Ok(v)
}

/// What the observations show the workload did.
pub fn coverage(obs: &[Observation]) -> Coverage {
    type FlowId = (Proto, SocketAddr, SocketAddr, SocketAddr);
    // Per flow: first and last time, and whether its first packet came in.
    let mut flows: HashMap<FlowId, (Timestamp, Timestamp, bool)> = HashMap::new();
    for o in obs {
        let e = flows
            .entry((o.proto, o.inside, o.outside, o.remote))
            .or_insert((o.at, o.at, !o.outbound));
        if o.at < e.0 {
            *e = (o.at, e.1, !o.outbound);
        }
        e.1 = e.1.max(o.at);
    }
    let mut c = Coverage {
        flows: flows.len(),
        ..Coverage::default()
    };
    let mut by_outside: HashMap<(Proto, SocketAddr), Vec<(Timestamp, Timestamp, SocketAddr, SocketAddr)>> =
        HashMap::new();
    for (&(proto, inside, outside, remote), &(first, last, inbound_first)) in &flows {
        *c.by_proto.entry(proto.to_string()).or_default() += 1;
        if inside.port() != outside.port() && !inbound_first {
            c.port_rewrites += 1;
        }
        if inbound_first {
            c.port_forward_flows += 1;
        }
        by_outside
            .entry((proto, outside))
            .or_default()
            .push((first, last, inside, remote));
    }
    for uses in by_outside.values_mut() {
        uses.sort();
        let insides: HashSet<SocketAddr> = uses.iter().map(|u| u.2).collect();
        if insides.len() > 1 {
            c.reused_outside += 1;
        }
        let shared = uses.iter().enumerate().any(|(i, a)| {
            uses[i + 1..]
                .iter()
                .take_while(|b| b.0 <= a.1)
                .any(|b| b.3 != a.3)
        });
        if shared {
            c.shared_outside += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use recorder::model::{Flags, Kind, Translation};

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

    fn tr(inside: &str, outside: &str, remote: &str, start: &str, end: Option<&str>) -> Translation {
        Translation {
            kind: Kind::Snat,
            proto: Proto::UDP,
            inside: inside.parse().expect("inside"),
            outside: outside.parse().expect("outside"),
            remote: remote.parse().expect("remote"),
            zone: 0,
            start: at(start),
            end: end.map(at),
            flags: Flags::empty(),
        }
    }

    #[test]
    fn each_outcome_is_counted_and_failures_are_shown() {
        let records = vec![
            tr("10.0.1.2:5000", "100.64.0.1:5000", "100.64.1.1:7", "2026-01-01T00:00:00Z", Some("2026-01-01T00:00:10Z")),
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
        let v = verify(records.as_slice(), &pairing).expect("verify");
        assert_eq!((v.checked, v.correct, v.wrong, v.missing, v.ambiguous), (5, 2, 1, 1, 1));
        assert!(!v.passed());
        assert_eq!(v.failures.len(), 2);
        assert_eq!(v.failures[0].outcome, Outcome::Wrong);
        assert!(v.failures[0].to_string().contains("natrec: snat 10.0.2.2:5000"));
        assert_eq!(v.failures[1].outcome, Outcome::Missing);
        assert_eq!(v.coverage.flows, 4);
        assert_eq!(v.coverage.reused_outside, 1);

        let honest = Pairing {
            observations: pairing.observations[..2].to_vec(),
            ..Pairing::default()
        };
        let v = verify(records.as_slice(), &honest).expect("verify");
        assert!(v.passed(), "{v:?}");
        // Nothing checked proves nothing.
        assert!(!verify(records.as_slice(), &Pairing::default()).expect("verify").passed());
    }
}
