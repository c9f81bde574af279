//! Device state → LED patterns.
//!
//! The daemon reports a [`DeviceState`]; it becomes a list of [`Condition`]s in priority order;
//! each LED shows the pattern of the most urgent condition that has something to say on it.
//! The tables below are the ones in the README.

use crate::config::LedRole;
use serde::Serialize;

use crate::pattern::Pattern;

/// Whether the central server that samples are shipped to can be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Uplink {
    /// No shipping configured (or not known yet): says nothing.
    #[default]
    Unknown,
    Reachable,
    /// Samples are buffered locally until it comes back.
    Unreachable,
}

/// The on-disk sample store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreHealth {
    /// No store configured (or not known yet): says nothing.
    #[default]
    Unknown,
    Ok,
    /// Above its high-water mark: old samples will soon be dropped.
    NearFull,
    /// Writes fail.
    Failing,
}

/// What the daemon knows about the device, as inputs to the LEDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DeviceState {
    /// Started, and not every target has reported yet.
    pub booting: bool,
    pub targets_total: usize,
    /// Targets whose latest round (of any probe) failed.
    pub targets_failing: usize,
    pub uplink: Uplink,
    pub store: StoreHealth,
}

/// One thing the LEDs can say, most urgent first (the derived order is the priority).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The daemon's main loop stopped ticking: never claim all is well.
    NotResponding,
    /// Someone asked the device to show itself.
    Identify,
    StoreFailing,
    Booting,
    UplinkDown,
    StoreNearFull,
    AllTargetsFailing,
    TargetsFailing,
    /// The daemon runs; the baseline under everything else.
    Running,
}

impl Condition {
    pub const ALL: [Condition; 9] = [
        Condition::NotResponding,
        Condition::Identify,
        Condition::StoreFailing,
        Condition::Booting,
        Condition::UplinkDown,
        Condition::StoreNearFull,
        Condition::AllTargetsFailing,
        Condition::TargetsFailing,
        Condition::Running,
    ];
}

/// The conditions that hold, most urgent first.
pub fn conditions(state: &DeviceState, identify: bool, responding: bool) -> Vec<Condition> {
    let mut out = Vec::new();
    if !responding {
        out.push(Condition::NotResponding);
    }
    if identify {
        out.push(Condition::Identify);
    }
    if state.store == StoreHealth::Failing {
        out.push(Condition::StoreFailing);
    }
    if state.booting {
        out.push(Condition::Booting);
    }
    if state.uplink == Uplink::Unreachable {
        out.push(Condition::UplinkDown);
    }
    if state.store == StoreHealth::NearFull {
        out.push(Condition::StoreNearFull);
    }
    if state.targets_failing > 0 {
        if state.targets_failing >= state.targets_total {
            out.push(Condition::AllTargetsFailing);
        } else {
            out.push(Condition::TargetsFailing);
        }
    }
    out.push(Condition::Running);
    out
}

/// The three concerns of the three-LED layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    Health,
    Targets,
    System,
}

/// What a condition says on one channel of the three-LED layout; `None` says nothing, so a
/// less urgent condition may speak.
fn claim(cond: Condition, ch: Channel) -> Option<Pattern> {
    use Channel::*;
    use Condition::*;
    use Pattern::*;
    match (cond, ch) {
        (NotResponding, Health | Targets) => Some(Off),
        (NotResponding, System) => Some(FastBlink),
        (Identify, _) => Some(FastBlink),
        (StoreFailing, System) => Some(Steady),
        (Booting, Health) => Some(SlowBlink),
        (UplinkDown, System) => Some(SlowBlink),
        (StoreNearFull, System) => Some(DoubleFlash),
        (AllTargetsFailing, Targets) => Some(SlowBlink),
        (TargetsFailing, Targets) => Some(Steady),
        (Running, Health) => Some(Steady),
        _ => None,
    }
}

/// The single-LED table: fewer patterns than conditions, so problems share one.
fn status_claim(cond: Condition) -> Pattern {
    use Condition::*;
    match cond {
        NotResponding => Pattern::Off,
        Identify => Pattern::FastBlink,
        StoreFailing | UplinkDown | StoreNearFull | AllTargetsFailing | TargetsFailing => {
            Pattern::DoubleFlash
        }
        Booting => Pattern::SlowBlink,
        Running => Pattern::Steady,
    }
}

/// The pattern an LED of `role` shows while `conds` (most urgent first) hold.
pub fn pattern_for(role: LedRole, conds: &[Condition]) -> Pattern {
    let channels: &[Channel] = match role {
        LedRole::Health => &[Channel::Health],
        LedRole::Targets => &[Channel::Targets],
        LedRole::System => &[Channel::System],
        // System first: "not responding" then blinks it rather than leaving both LEDs dark.
        LedRole::Problem => &[Channel::System, Channel::Targets],
        LedRole::Status => {
            return conds.first().map_or(Pattern::Off, |c| status_claim(*c));
        }
    };
    conds
        .iter()
        .find_map(|c| channels.iter().find_map(|ch| claim(*c, *ch)))
        .unwrap_or(Pattern::Off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Condition::*;
    use LedRole::*;
    use Pattern::*;

    const THREE: [LedRole; 3] = [Health, Targets, System];
    const TWO: [LedRole; 2] = [Health, Problem];

    fn show(roles: &[LedRole], conds: &[Condition]) -> Vec<Pattern> {
        let mut sorted = conds.to_vec();
        sorted.sort();
        roles.iter().map(|r| pattern_for(*r, &sorted)).collect()
    }

    fn healthy() -> DeviceState {
        DeviceState {
            booting: false,
            targets_total: 4,
            targets_failing: 0,
            uplink: Uplink::Reachable,
            store: StoreHealth::Ok,
        }
    }

    #[test]
    fn device_state_to_conditions() {
        assert_eq!(conditions(&healthy(), false, true), [Running]);
        let s = DeviceState {
            booting: true,
            ..healthy()
        };
        assert_eq!(conditions(&s, false, true), [Booting, Running]);
        let s = DeviceState {
            targets_failing: 1,
            ..healthy()
        };
        assert_eq!(conditions(&s, false, true), [TargetsFailing, Running]);
        let s = DeviceState {
            targets_failing: 4,
            ..healthy()
        };
        assert_eq!(conditions(&s, false, true), [AllTargetsFailing, Running]);
        let s = DeviceState {
            uplink: Uplink::Unreachable,
            store: StoreHealth::NearFull,
            ..healthy()
        };
        assert_eq!(
            conditions(&s, false, true),
            [UplinkDown, StoreNearFull, Running]
        );
        let s = DeviceState {
            store: StoreHealth::Failing,
            booting: true,
            ..healthy()
        };
        assert_eq!(
            conditions(&s, true, false),
            [NotResponding, Identify, StoreFailing, Booting, Running]
        );
        // Unknown uplink and store (not configured yet) say nothing.
        assert_eq!(conditions(&DeviceState::default(), false, true), [Running]);
        // No targets at all: nothing is failing.
        let none = DeviceState {
            targets_total: 0,
            ..healthy()
        };
        assert_eq!(conditions(&none, false, true), [Running]);
    }

    /// The README's three-LED table, row by row.
    #[test]
    fn every_state_on_three_leds() {
        let rows: &[(Condition, [Pattern; 3])] = &[
            (NotResponding, [Off, Off, FastBlink]),
            (Identify, [FastBlink, FastBlink, FastBlink]),
            (StoreFailing, [Steady, Off, Steady]),
            (Booting, [SlowBlink, Off, Off]),
            (UplinkDown, [Steady, Off, SlowBlink]),
            (StoreNearFull, [Steady, Off, DoubleFlash]),
            (AllTargetsFailing, [Steady, SlowBlink, Off]),
            (TargetsFailing, [Steady, Steady, Off]),
            (Running, [Steady, Off, Off]),
        ];
        assert_eq!(rows.len(), Condition::ALL.len());
        for (c, want) in rows {
            let conds = if *c == Running {
                vec![Running]
            } else {
                vec![*c, Running]
            };
            assert_eq!(show(&THREE, &conds), want, "{c:?}");
        }
    }

    #[test]
    fn every_state_on_two_leds() {
        let rows: &[(Condition, [Pattern; 2])] = &[
            (NotResponding, [Off, FastBlink]),
            (Identify, [FastBlink, FastBlink]),
            (StoreFailing, [Steady, Steady]),
            (Booting, [SlowBlink, Off]),
            (UplinkDown, [Steady, SlowBlink]),
            (StoreNearFull, [Steady, DoubleFlash]),
            (AllTargetsFailing, [Steady, SlowBlink]),
            (TargetsFailing, [Steady, Steady]),
            (Running, [Steady, Off]),
        ];
        for (c, want) in rows {
            assert_eq!(show(&TWO, &[*c, Running]), want, "{c:?}");
        }
    }

    #[test]
    fn every_state_on_one_led() {
        let rows: &[(Condition, Pattern)] = &[
            (NotResponding, Off),
            (Identify, FastBlink),
            (StoreFailing, DoubleFlash),
            (Booting, SlowBlink),
            (UplinkDown, DoubleFlash),
            (StoreNearFull, DoubleFlash),
            (AllTargetsFailing, DoubleFlash),
            (TargetsFailing, DoubleFlash),
            (Running, Steady),
        ];
        for (c, want) in rows {
            assert_eq!(show(&[Status], &[*c, Running]), [*want], "{c:?}");
        }
    }

    #[test]
    fn priorities_when_several_apply() {
        // A hung main loop wins over everything, identify included: it never looks healthy.
        assert_eq!(
            show(&THREE, &[Identify, NotResponding, Running]),
            [Off, Off, FastBlink]
        );
        assert_eq!(show(&[Status], &[Identify, NotResponding, Running]), [Off]);
        // Identify wins over every problem on every LED.
        assert_eq!(
            show(&THREE, &[Identify, StoreFailing, TargetsFailing, Running]),
            [FastBlink; 3]
        );
        // Each LED shows its own concern: targets and uplink side by side.
        assert_eq!(
            show(&THREE, &[UplinkDown, TargetsFailing, Running]),
            [Steady, Steady, SlowBlink]
        );
        // On the red LED, a failing store beats an unreachable uplink beats a near-full store.
        assert_eq!(
            show(&THREE, &[StoreNearFull, UplinkDown, StoreFailing, Running])[2],
            Steady
        );
        assert_eq!(
            show(&THREE, &[StoreNearFull, UplinkDown, Running])[2],
            SlowBlink
        );
        // On the shared problem LED, system problems beat failing targets.
        assert_eq!(
            show(&TWO, &[TargetsFailing, UplinkDown, Running]),
            [Steady, SlowBlink]
        );
        assert_eq!(
            show(&TWO, &[AllTargetsFailing, StoreNearFull, Running]),
            [Steady, DoubleFlash]
        );
        // Booting shows on green while the other LEDs still report what is already known.
        assert_eq!(
            show(&THREE, &[Booting, StoreFailing, Running]),
            [SlowBlink, Off, Steady]
        );
        // On one LED a failing store beats booting, booting beats failing targets.
        assert_eq!(
            show(&[Status], &[Booting, StoreFailing, Running]),
            [DoubleFlash]
        );
        assert_eq!(
            show(&[Status], &[Booting, TargetsFailing, Running]),
            [SlowBlink]
        );
        // Nothing at all holds: dark.
        assert_eq!(show(&THREE, &[]), [Off, Off, Off]);
    }
}
