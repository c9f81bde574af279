//! The README's config reference as the tests read it, to hold its ranges to the code's.

use std::time::Duration;

/// The range column of `field`'s row in the table under the heading naming `section`:
/// "512 – 65535" of "0, 512 – 65535", "10ms – 30s" of "10ms – 30s, below the interval".
pub fn readme_range<'a>(readme: &'a str, section: &str, field: &str) -> (&'a str, &'a str) {
    let row = readme
        .lines()
        .skip_while(|l| !(l.starts_with("##") && l.contains(section)))
        .skip(1)
        .take_while(|l| !l.starts_with("##"))
        .find(|l| l.starts_with(&format!("| `{field}` |")))
        .unwrap_or_else(|| panic!("no row for {field} under {section}"));
    let range = row.split('|').nth(3).expect("a range column").trim();
    let range = match range.rsplit_once(", ") {
        Some((exception, rest)) if !exception.contains('–') => rest,
        Some((range, _remark)) => range,
        None => range,
    };
    range
        .split_once(" – ")
        .unwrap_or_else(|| panic!("{section} {field}: {range:?} is no range"))
}

/// A duration as the README writes it: `10ms`, `24h`, `7 days`, `10y` (of 365 days); `parse`
/// is the config's own duration parser.
pub fn readme_duration(s: &str, parse: impl Fn(&str) -> Option<Duration>) -> Option<Duration> {
    if let Some(years) = s.strip_suffix('y') {
        return Some(Duration::from_secs(
            years.parse::<u64>().ok()? * 365 * 24 * 3600,
        ));
    }
    parse(&s.replace(' ', ""))
}

/// An integer range of the README as `(section, field, min, max)` in the code.
pub type IntRange<'a> = (&'a str, &'a str, i64, i64);
/// A duration range of the README as `(section, field, min, max)` in the code.
pub type DurationRange<'a> = (&'a str, &'a str, Duration, Duration);

/// Every range whose README row differs from the code's, one line each; durations are read
/// with `parse` (and [`readme_duration`]'s years).
pub fn readme_range_mismatches(
    readme: &str,
    ints: &[IntRange<'_>],
    durations: &[DurationRange<'_>],
    parse: impl Fn(&str) -> Option<Duration> + Copy,
) -> Vec<String> {
    let int = |s: &str| s.replace(',', "").parse::<i64>().ok();
    let duration = |s: &str| readme_duration(s, parse);
    let mut wrong = Vec::new();
    for &(section, field, min, max) in ints {
        let (lo, hi) = readme_range(readme, section, field);
        if (int(lo), int(hi)) != (Some(min), Some(max)) {
            wrong.push(format!(
                "{section} {field}: README {lo} – {hi}, code {min} – {max}"
            ));
        }
    }
    for &(section, field, min, max) in durations {
        let (lo, hi) = readme_range(readme, section, field);
        if (duration(lo), duration(hi)) != (Some(min), Some(max)) {
            wrong.push(format!(
                "{section} {field}: README {lo} – {hi}, code {min:?} – {max:?}"
            ));
        }
    }
    wrong
}
