//! The per-target part of `/metrics`, written as text straight from the targets' state: no
//! intermediate metric families, so a scrape of 10,000 targets costs one pass and one string.
//!
//! The text format wants every line of a family together, so the writer goes family by family
//! and, within each, target by target.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vantage_core::LockExt;

/// How much text a streamed scrape gathers before passing it on: large enough that the
/// compressor and the socket see few calls (at 64 KiB a 10,000-target scrape took 0.15 s
/// instead of 0.11 s), small beside the whole of a large scrape (27 MB).
pub const SCRAPE_CHUNK: usize = 256 * 1024;

/// Seconds since the Unix epoch, for timestamp gauges.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// What `# TYPE` says of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// A value as the text format spells it.
pub fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Counts and buckets: integer formatting is several times cheaper than a float's.
        out.push_str(itoa::Buffer::new().format(v as i64));
    } else {
        write_float(out, v);
    }
}

/// A finite float as `Display` spells it (`{v}`: the shortest digits that read back as `v`,
/// never an exponent), from ryu's digits: several times cheaper than the formatting
/// machinery, and a scrape has tens of thousands of them (RTTs, durations, timestamps).
fn write_float(out: &mut String, v: f64) {
    let mut buf = ryu::Buffer::new();
    let s = buf.format_finite(v);
    let (s, negative) = match s.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    if negative {
        out.push('-');
    }
    let (mantissa, exp) = match s.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // ryu writes `1.0` for one: no fractional digits there.
    let frac = frac.trim_end_matches('0');
    let significant = int.trim_start_matches('0').len() + frac.len();
    if significant >= 16 {
        // Only this long can the value lie halfway between two shortest spellings, and ryu
        // breaks that tie to the even digit where `Display` rounds up.
        out.truncate(out.len() - usize::from(negative));
        let _ = write!(out, "{v}");
        return;
    }
    // The digits without the point, and where the point goes among them.
    let point = int.len() as i32 + exp;
    let digits = int.bytes().chain(frac.bytes());
    let n = (int.len() + frac.len()) as i32;
    if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.extend(digits.map(char::from));
    } else if point >= n {
        out.extend(digits.map(char::from));
        out.extend(std::iter::repeat_n('0', (point - n) as usize));
    } else {
        for (i, d) in digits.enumerate() {
            if i as i32 == point {
                out.push('.');
            }
            out.push(char::from(d));
        }
    }
}

fn write_label_value(out: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `name="value",` with the value escaped: how a label is spelled between the braces.
fn spell_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    write_label_value(out, value);
    out.push_str("\",");
}

/// The labels of many targets, each spelled once per scrape (escaped, in name order) in one
/// string, so that a line copies its target's labels instead of spelling them again: a scrape
/// of 10,000 targets writes some 400,000 lines. Two growing buffers for all the targets.
#[derive(Debug, Default)]
pub struct SpelledSet<'a> {
    text: String,
    /// Each label's name and where its spelling ends in `text`.
    ends: Vec<(&'a str, usize)>,
    /// Where each set's labels end in `ends`.
    sets: Vec<usize>,
}

impl<'a> SpelledSet<'a> {
    /// Room for `sets` sets of about `bytes` bytes and `labels` labels each.
    pub fn with_capacity(sets: usize, labels: usize, bytes: usize) -> Self {
        Self {
            text: String::with_capacity(sets * bytes),
            ends: Vec::with_capacity(sets * labels),
            sets: Vec::with_capacity(sets),
        }
    }

    /// Adds a set of labels, which must come sorted by name.
    pub fn push(&mut self, labels: impl IntoIterator<Item = (&'a str, &'a str)>) {
        for (k, v) in labels {
            spell_label(&mut self.text, k, v);
            self.ends.push((k, self.text.len()));
        }
        self.sets.push(self.ends.len());
    }

    /// The `i`th set pushed.
    pub fn get(&self, i: usize) -> Spelled<'_> {
        let first = if i == 0 { 0 } else { self.sets[i - 1] };
        let ends = &self.ends[first..self.sets[i]];
        let start = match first {
            0 => 0,
            f => self.ends[f - 1].1,
        };
        let end = ends.last().map_or(start, |e| e.1);
        Spelled {
            text: &self.text[start..end],
            start,
            ends,
        }
    }
}

/// One target's labels as [`SpelledSet`] holds them.
#[derive(Debug, Clone, Copy)]
pub struct Spelled<'a> {
    /// Every label's `name="value",`.
    text: &'a str,
    /// Where `text` starts in the set's string: `ends` count from there.
    start: usize,
    ends: &'a [(&'a str, usize)],
}

impl Spelled<'_> {
    /// No labels.
    pub const NONE: Spelled<'static> = Spelled {
        text: "",
        start: 0,
        ends: &[],
    };

    /// Where the labels named up to `name` end in `text` (a label of the target's goes before
    /// a line's own label of the same name).
    fn end_before(&self, name: &str) -> usize {
        let n = self.ends.partition_point(|(k, _)| *k <= name);
        if n == 0 {
            0
        } else {
            self.ends[n - 1].1 - self.start
        }
    }
}

/// Writes the lines of one target's series: its labels (sorted by name) go on every line.
#[derive(Debug)]
pub struct Lines<'a> {
    out: &'a mut String,
    labels: Spelled<'a>,
    written: bool,
}

impl<'a> Lines<'a> {
    pub fn new(out: &'a mut String, labels: Spelled<'a>) -> Self {
        Self {
            out,
            labels,
            written: false,
        }
    }

    /// One sample line: `name{labels} value`. `own` labels (sorted by name) are merged into
    /// the target's in name order; `last` (a histogram's `le`) goes at the end.
    pub fn sample(&mut self, name: &str, own: &[(&str, &str)], last: Option<(&str, &str)>, v: f64) {
        self.sample_of(name, "", own, last, v);
    }

    /// [`Lines::sample`] of the series named `name` followed by `suffix` (a histogram's
    /// `_bucket`), without building the name.
    pub fn sample_of(
        &mut self,
        name: &str,
        suffix: &str,
        own: &[(&str, &str)],
        last: Option<(&str, &str)>,
        v: f64,
    ) {
        self.written = true;
        let out = &mut *self.out;
        out.push_str(name);
        out.push_str(suffix);
        let open = out.len();
        out.push('{');
        let text = self.labels.text;
        let mut from = 0;
        for (k, val) in own {
            let to = self.labels.end_before(k).max(from);
            out.push_str(&text[from..to]);
            from = to;
            spell_label(out, k, val);
        }
        out.push_str(&text[from..]);
        if let Some((k, val)) = last {
            spell_label(out, k, val);
        }
        if out.len() == open + 1 {
            // No label: no braces.
            out.pop();
        } else {
            // The last label's comma.
            out.pop();
            out.push('}');
        }
        out.push(' ');
        write_value(out, v);
        out.push('\n');
    }

    pub fn wrote(&self) -> bool {
        self.written
    }
}

/// Writes a family: its header, then whatever `body` writes; nothing if it writes no line.
pub fn family(
    out: &mut String,
    name: &str,
    help: &str,
    kind: Kind,
    body: impl FnOnce(&mut String) -> bool,
) {
    let start = out.len();
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
    if !body(out) {
        out.truncate(start);
    }
}

/// A counter of one target.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds, with their `le` values spelled once for every target's histogram.
#[derive(Debug)]
pub struct Buckets {
    bounds: Vec<f64>,
    les: Vec<String>,
}

impl Buckets {
    /// `count` bounds from `start`, each `factor` times the last.
    pub fn exponential(start: f64, factor: f64, count: usize) -> Self {
        let bounds: Vec<f64> = std::iter::successors(Some(start), |b| Some(b * factor))
            .take(count)
            .collect();
        let les = bounds
            .iter()
            .map(|b| {
                let mut s = String::new();
                write_value(&mut s, *b);
                s
            })
            .collect();
        Self { bounds, les }
    }
}

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    buckets: &'static Buckets,
    /// Per-bucket counts (not cumulative), the sum and the count.
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(buckets: &'static Buckets) -> Self {
        Self {
            buckets,
            state: Mutex::new((vec![0; buckets.bounds.len()], 0.0, 0)),
        }
    }

    pub fn observe(&self, v: f64) {
        let mut s = self.state.lock_or_recover();
        if let Some(i) = self.buckets.bounds.iter().position(|b| v <= *b) {
            s.0[i] += 1;
        }
        s.1 += v;
        s.2 += 1;
    }

    /// `_bucket` lines (cumulative, `+Inf` last), `_sum` and `_count`.
    pub fn write(&self, name: &str, lines: &mut Lines<'_>) {
        let (counts, sum, count) = &*self.state.lock_or_recover();
        let mut cumulative = 0;
        for (le, c) in self.buckets.les.iter().zip(counts) {
            cumulative += c;
            lines.sample_of(name, "_bucket", &[], Some(("le", le)), cumulative as f64);
        }
        let inf = Some(("le", "+Inf"));
        lines.sample_of(name, "_bucket", &[], inf, *count as f64);
        lines.sample_of(name, "_sum", &[], None, *sum);
        lines.sample_of(name, "_count", &[], None, *count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_merge_in_name_order_and_escape() {
        let mut out = String::new();
        let mut set = SpelledSet::default();
        set.push([("site", "a\"b"), ("target", "x\\y\nz")]);
        let mut l = Lines::new(&mut out, set.get(0));
        l.sample("m", &[("hop", "3"), ("zone", "q")], None, 1.5);
        l.sample("n", &[], Some(("le", "+Inf")), f64::NAN);
        assert_eq!(
            out,
            "m{hop=\"3\",site=\"a\\\"b\",target=\"x\\\\y\\nz\",zone=\"q\"} 1.5\n\
             n{site=\"a\\\"b\",target=\"x\\\\y\\nz\",le=\"+Inf\"} NaN\n"
        );
        let mut out = String::new();
        Lines::new(&mut out, Spelled::NONE).sample("bare", &[], None, 0.0);
        assert_eq!(out, "bare 0\n");
    }

    /// Each set of a scrape's labels is its own, whatever sets came before or after it; a
    /// line's own label goes after a target's label of the same name, as a merge of the two
    /// lists would put it.
    #[test]
    fn spelled_sets_keep_their_own_labels() {
        let mut set = SpelledSet::default();
        set.push([("a", "1"), ("m", "2"), ("z", "3")]);
        set.push([]);
        set.push([("target", "t\"")]);
        let line = |i: usize, own: &[(&str, &str)], last| {
            let mut out = String::new();
            Lines::new(&mut out, set.get(i)).sample("s", own, last, 2.0);
            out
        };
        let own = [("b", "x"), ("m", "y"), ("zz", "w")];
        assert_eq!(
            line(0, &own, None),
            "s{a=\"1\",b=\"x\",m=\"2\",m=\"y\",z=\"3\",zz=\"w\"} 2\n"
        );
        assert_eq!(
            line(0, &[("0", "")], None),
            "s{0=\"\",a=\"1\",m=\"2\",z=\"3\"} 2\n"
        );
        assert_eq!(line(1, &[], None), "s 2\n");
        assert_eq!(
            line(1, &[("b", "x")], Some(("le", "1"))),
            "s{b=\"x\",le=\"1\"} 2\n"
        );
        assert_eq!(
            line(2, &[("probe", "ping")], Some(("le", "+Inf"))),
            "s{probe=\"ping\",target=\"t\\\"\",le=\"+Inf\"} 2\n"
        );
    }

    /// Floats are spelled as `Display` spells them, digit for digit: values as rounds give
    /// them (durations, RTTs, ratios, timestamps) and any bit pattern.
    #[test]
    fn floats_are_spelled_as_display_spells_them() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            // xorshift64*: the same values on every run.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut values = vec![
            0.1,
            1.5,
            -2.25,
            1e-7,
            1.25e-300,
            5e-324,
            1e15 + 0.5,
            1e22,
            1e300,
        ];
        values.extend([
            f64::MAX,
            f64::MIN_POSITIVE,
            0.000_180,
            1_764_842_400.123_456,
        ]);
        for _ in 0..100_000 {
            let bits = next();
            values.push(f64::from_bits(bits));
            values.push((bits % 10_000_000) as f64 / 1e6);
            values.push(1.7e9 + (bits % 1_000_000_000) as f64 / 1e6);
            values.push((bits % 1000) as f64 / 7.0);
        }
        let mut out = String::new();
        for v in values.into_iter().filter(|v| v.is_finite()) {
            out.clear();
            write_float(&mut out, v);
            assert_eq!(out, format!("{v}"), "bits {:#x}", v.to_bits());
        }
    }

    #[test]
    fn histogram_is_cumulative_and_a_family_without_lines_is_left_out() {
        let buckets: &'static Buckets = Box::leak(Box::new(Buckets::exponential(0.001, 10.0, 3)));
        let h = Histogram::new(buckets);
        for v in [0.0005, 0.002, 0.05, 7.0] {
            h.observe(v);
        }
        let mut out = String::new();
        family(&mut out, "rtt", "help", Kind::Histogram, |o| {
            let mut set = SpelledSet::default();
            set.push([("target", "t")]);
            let mut l = Lines::new(o, set.get(0));
            h.write("rtt", &mut l);
            l.wrote()
        });
        let want = [
            "rtt_bucket{target=\"t\",le=\"0.001\"} 1",
            "rtt_bucket{target=\"t\",le=\"0.01\"} 2",
            "rtt_bucket{target=\"t\",le=\"0.1\"} 3",
            "rtt_bucket{target=\"t\",le=\"+Inf\"} 4",
            "rtt_count{target=\"t\"} 4",
            "# TYPE rtt histogram",
        ];
        for w in want {
            assert!(out.contains(w), "missing {w}\n{out}");
        }
        family(&mut out, "empty", "h", Kind::Gauge, |_| false);
        assert!(!out.contains("empty"), "{out}");
    }
}
