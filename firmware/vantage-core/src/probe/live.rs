//! "Run now": a few rounds of one target while someone watches, each answer shown as it
//! arrives (the page's live ping burst and traces). The daemon claims the run, streams its
//! events and stops it; a kind that runs live says through [`LiveRun`] how many rounds, with
//! which options, and what each event holds. A kind without one ([`ProbeModule::live`]'s
//! default) does not stream.
//!
//! A run's events: `start`, the answers as they arrive, an event after each round if the kind
//! has one, then `summary` (docs/API.md lists each kind's fields).
//!
//! [`ProbeModule::live`]: super::ProbeModule::live

use std::fmt::Debug;
use std::time::Duration;

use serde_json::{Map, Value};

use super::round::Progress;
use crate::config::target::Target;
use crate::sample::Sample;

/// An event's fields.
pub type Fields = Map<String, Value>;

/// How a kind runs live. The daemon writes each event's `type` and `kind`, the start event's
/// `target` and `host`; the kind adds its own fields.
pub trait LiveRun: Send + Sync + Debug {
    /// Rounds in a run (the run stops early after a round that measured nothing: no socket,
    /// no address, which another round would not have either).
    fn rounds(&self) -> u32;
    /// The pause between two rounds.
    fn gap(&self) -> Duration {
        Duration::ZERO
    }
    /// The start event's own fields, from the target as configured.
    fn start(&self, target: &Target, event: &mut Fields);
    /// The target as the run probes it, after the start event: a run's own options, or a
    /// name of its own for a kind that compares a round with the last one to the same target.
    fn target(&self, _target: &mut Target) {}
    /// An answer of round `round` (from 1) as an event; `None` for one the kind does not show.
    fn progress(&self, p: &Progress, round: u32) -> Option<Value>;
    /// The event after round `round`, if the kind shows one.
    fn round(&self, _round: u32, _sample: &Sample) -> Option<Value> {
        None
    }
    /// The summary event's own fields, from the last round and the number of rounds run.
    fn summary(&self, last: Option<&Sample>, rounds: u32, event: &mut Fields);
}

/// A time as a live event shows it: milliseconds, to the microsecond.
pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::probe::ping::live::RUN_PINGS;
    use crate::probe::ping::options::PingOptions;
    use crate::probe::trace::live::RUN_TRACES;
    use crate::sample::{Measurement, PingReport};
    use crate::types::ProbeKind;

    fn target() -> Target {
        let c = Config::parse(
            "[[targets]]\nname = \"t\"\nhost = \"127.0.0.1\"\nprobes = [\"ping\", \"trace\"]\n\
             ping = { packets = 3, spacing = \"50ms\" }\ntrace = { max_hops = 7 }\n",
            "t.toml",
        )
        .unwrap();
        c.targets[0].as_ref().clone()
    }

    fn live(kind: ProbeKind) -> &'static dyn LiveRun {
        kind.module().and_then(|m| m.live()).expect("runs live")
    }

    /// A ping run is one round of its own packet count with the target's other options; each
    /// echo request is an event, the summary the round's figures.
    #[test]
    fn a_ping_run_sends_its_own_burst() {
        let l = live(ProbeKind::PING);
        let mut t = target();
        let mut start = Fields::new();
        l.start(&t, &mut start);
        assert_eq!(Value::Object(start), json!({"count": RUN_PINGS}));
        l.target(&mut t);
        let o: PingOptions = t.options_or_default();
        assert_eq!(
            (o.packets, o.spacing),
            (RUN_PINGS, Duration::from_millis(50))
        );
        assert_eq!((l.rounds(), t.name.as_str()), (1, "t"));
        let echo = Progress::Echo {
            index: 0,
            rtt: Some(Duration::from_micros(1500)),
        };
        assert_eq!(
            l.progress(&echo, 1),
            Some(json!({"type": "echo", "seq": 1, "rtt_ms": 1.5}))
        );
        let s = Sample {
            target: "t".into(),
            probe: ProbeKind::PING,
            timestamp: SystemTime::now(),
            duration: Duration::from_secs(1),
            success: true,
            error: None,
            measurement: Measurement::from(PingReport {
                sent: 2,
                received: 1,
                rtts: vec![Duration::from_micros(2000)],
                ..PingReport::default()
            }),
            quality: Default::default(),
        };
        assert_eq!(l.round(1, &s), None);
        let mut summary = Fields::new();
        l.summary(Some(&s), 1, &mut summary);
        assert_eq!(
            (&summary["sent"], &summary["received"]),
            (&json!(2), &json!(1))
        );
        assert_eq!(
            (&summary["loss"], &summary["avg_ms"]),
            (&json!(0.5), &json!(2.0))
        );
        let mut none = Fields::new();
        l.summary(None, 0, &mut none);
        assert_eq!(
            (&none["success"], &none["sent"]),
            (&json!(false), &json!(0))
        );
    }

    /// A trace run's traces keep their path state apart from the target's (a name of their
    /// own); each answer is a `hop` event of its trace.
    #[test]
    fn a_trace_run_is_a_few_traces_of_its_own() {
        let l = live(ProbeKind::TRACE);
        let mut t = target();
        let mut start = Fields::new();
        l.start(&t, &mut start);
        assert_eq!(
            Value::Object(start),
            json!({"count": RUN_TRACES, "max_hops": 7})
        );
        l.target(&mut t);
        assert_eq!((l.rounds(), t.name.as_str()), (RUN_TRACES, "run now: t"));
        let hop = Progress::Hop {
            ttl: 2,
            flow: 0,
            from: "192.0.2.1".parse().unwrap(),
            rtt: Duration::from_micros(250),
            destination: false,
        };
        let e = l.progress(&hop, 3).unwrap();
        assert_eq!(
            (&e["type"], &e["cycle"], &e["rtt_ms"]),
            (&json!("hop"), &json!(3), &json!(0.25))
        );
        let echo = Progress::Echo {
            index: 0,
            rtt: None,
        };
        assert_eq!(l.progress(&echo, 1), None);
    }
}
