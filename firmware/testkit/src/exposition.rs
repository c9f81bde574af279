//! Reading back a Prometheus text exposition, for tests that compare series.

use std::collections::BTreeMap;

/// Label name to value.
pub type Labels = BTreeMap<String, String>;

/// The sample lines of a text exposition: name, labels and value (NaN where the value does
/// not parse). Comments and blank lines are skipped. Label values must not contain `",`,
/// which no series of ours does.
pub fn exposition_series(text: &str) -> Vec<(String, Labels, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample line: {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label in {line:?}"));
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (name.to_string(), labels, value.parse().unwrap_or(f64::NAN))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP x y\n# TYPE x gauge\nx 1\ny{a=\"1\",b=\"two words\"} 2.5\nz{} NaN\n\n";
        let s = exposition_series(text);
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].0.as_str(), s[0].1.len(), s[0].2), ("x", 0, 1.0));
        assert_eq!(s[1].1["b"], "two words");
        assert_eq!(s[1].2, 2.5);
        assert!(s[2].2.is_nan());
    }
}
