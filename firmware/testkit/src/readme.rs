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
