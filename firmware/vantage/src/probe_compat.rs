//! `/probe` for blackbox_exporter users: a blackbox module name (`module=icmp`,
//! `tcp_connect`, `http_2xx`, `dns`...) runs the matching Vantage kind and answers with
//! blackbox's series names, so a blackbox scrape job's relabel config, alerts and dashboards
//! work with only the exporter's address changed. Vantage's own names (`module=ping`...) keep
//! the `vantage_*` answer.
//!
//! The blackbox series are not a second definition of a round: each is one row of
//! [`ROWS`], naming the Vantage gauge (from the one series definition) it shows under the
//! blackbox name, so both answers come from the same points.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use vantage_core::config::{parse_host, split_host_port};
use vantage_core::module_gauges as m;
use vantage_core::series::{Gauge, Point, gauge, labelled};
use vantage_core::{ModuleId, Sample};
use vantage_store::StoredSample;
use vantage_store::gauges::{self as g, points};

use crate::metrics::text::{Kind, Lines, Spelled, family};

/// A blackbox module name, the Vantage kind it runs and the parameters it sets (a parameter
/// the request gives itself wins).
struct BlackboxModule {
    name: &'static str,
    kind: &'static str,
    set: &'static [(&'static str, &'static str)],
    /// How blackbox's prober takes its target, where Vantage's kind takes it otherwise.
    target: BlackboxTarget,
    /// A parameter blackbox reads from the module's config, which the scrape job has to give
    /// here (with an example value for the message when it does not). A blackbox name that is
    /// Vantage's too is blackbox's only with this parameter.
    needs: Option<(&'static str, &'static str)>,
}

/// How a blackbox prober writes its target.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BlackboxTarget {
    /// As Vantage's kind does.
    Same,
    /// `HOST:PORT` (blackbox's DNS server), the port given to Vantage's `port` parameter;
    /// without a port, the transport's default applies.
    HostPort,
    /// A URL, taken as `http://` without a scheme.
    Url,
}

const fn bb(
    name: &'static str,
    kind: &'static str,
    set: &'static [(&'static str, &'static str)],
) -> BlackboxModule {
    BlackboxModule {
        name,
        kind,
        set,
        target: BlackboxTarget::Same,
        needs: None,
    }
}

/// A blackbox DNS module: a `HOST:PORT` server, the question in `query_name`.
const fn bb_dns(
    name: &'static str,
    set: &'static [(&'static str, &'static str)],
) -> BlackboxModule {
    BlackboxModule {
        target: BlackboxTarget::HostPort,
        needs: Some(("query_name", "example.com")),
        ..bb(name, "dns", set)
    }
}

/// A blackbox HTTP module.
const fn bb_http(
    name: &'static str,
    set: &'static [(&'static str, &'static str)],
) -> BlackboxModule {
    BlackboxModule {
        target: BlackboxTarget::Url,
        ..bb(name, "http", set)
    }
}

/// The blackbox module names understood: those of blackbox's shipped `blackbox.yml` that map
/// onto a Vantage kind, and DNS ones. `dns` is blackbox's only with a `query_name` parameter;
/// with `query` it is Vantage's own `module=dns`.
const MODULES: [BlackboxModule; 9] = [
    bb("icmp", "ping", &[]),
    bb("icmp_ipv4", "ping", &[("ip_protocol", "ipv4")]),
    bb("icmp_ipv6", "ping", &[("ip_protocol", "ipv6")]),
    bb("tcp_connect", "tcp", &[("attempts", "1")]),
    bb_http("http_2xx", &[]),
    bb_http("http_post_2xx", &[("method", "POST")]),
    bb_dns("dns", &[]),
    bb_dns("dns_udp", &[("transport", "udp")]),
    bb_dns("dns_tcp", &[("transport", "tcp")]),
];

/// Blackbox's parameter names for what Vantage calls otherwise (blackbox sets them in its
/// module; here they come as scrape parameters).
const RENAMED: [(&str, &str); 3] = [
    ("query_name", "query"),
    ("query_type", "type"),
    ("transport_protocol", "transport"),
];

/// A blackbox parameter's Vantage name.
fn vantage_name(blackbox: &str) -> &str {
    RENAMED
        .iter()
        .find(|(b, _)| *b == blackbox)
        .map_or(blackbox, |r| r.1)
}

/// A `/probe` query in blackbox's terms, rewritten into Vantage's: `None` when `module` is not
/// a blackbox module name (Vantage's own answer).
pub fn translate(q: &HashMap<String, String>) -> Result<Option<HashMap<String, String>>, String> {
    let Some(bb) = q
        .get("module")
        .and_then(|name| MODULES.iter().find(|m| m.name == name))
        .filter(|m| {
            ModuleId::by_name(m.name).is_none() || m.needs.is_some_and(|(p, _)| q.contains_key(p))
        })
    else {
        return Ok(None);
    };
    let mut out: HashMap<String, String> = q
        .iter()
        .map(|(k, v)| (vantage_name(k).to_string(), v.clone()))
        .collect();
    out.insert("module".into(), bb.kind.into());
    for (k, v) in bb.set {
        out.entry(k.to_string()).or_insert_with(|| v.to_string());
    }
    if let Some((p, example)) = bb.needs.filter(|(p, _)| !out.contains_key(vantage_name(p))) {
        return Err(format!(
            "{p} parameter is missing: blackbox reads it from the module's config; \
             give it in the scrape job (params: {{module: [{}], {p}: [{example}]}})",
            bb.name
        ));
    }
    let target = out.get("target").cloned().unwrap_or_default();
    match bb.target {
        BlackboxTarget::HostPort => {
            if parse_host(&target).is_err()
                && let Ok((host, port)) = split_host_port(&target)
            {
                out.insert("target".into(), host.to_string());
                out.entry("port".into()).or_insert_with(|| port.to_string());
            }
        }
        BlackboxTarget::Url if !target.is_empty() && !target.contains("://") => {
            out.insert("target".into(), format!("http://{target}"));
        }
        _ => {}
    }
    Ok(Some(out))
}

static PROBE_SUCCESS: Gauge = gauge(
    "probe_success",
    "Displays whether or not the probe was a success",
);
static PROBE_DURATION: Gauge = gauge(
    "probe_duration_seconds",
    "Returns how long the probe took to complete in seconds",
);
static ICMP_DURATION: Gauge = labelled(
    "probe_icmp_duration_seconds",
    "phase",
    "Duration of icmp request by phase (rtt only: the mean of the round's replies)",
);
static DNS_DURATION: Gauge = labelled(
    "probe_dns_duration_seconds",
    "phase",
    "Duration of DNS request by phase",
);
static DNS_ANSWER: Gauge = gauge(
    "probe_dns_answer_rrs",
    "Returns number of entries in the answer resource record list",
);
static DNS_AUTHORITY: Gauge = gauge(
    "probe_dns_authority_rrs",
    "Returns number of entries in the authority resource record list",
);
static DNS_ADDITIONAL: Gauge = gauge(
    "probe_dns_additional_rrs",
    "Returns number of entries in the additional resource record list",
);
static HTTP_STATUS: Gauge = gauge("probe_http_status_code", "Response HTTP status code");
static HTTP_DURATION: Gauge = labelled(
    "probe_http_duration_seconds",
    "phase",
    "Duration of http request by phase, summed over all redirects",
);
static HTTP_LENGTH: Gauge = gauge(
    "probe_http_content_length",
    "Length of http content response (the body bytes read)",
);
static HTTP_BODY_LENGTH: Gauge = gauge(
    "probe_http_uncompressed_body_length",
    "Length of uncompressed response body",
);
static HTTP_REDIRECTS: Gauge = gauge("probe_http_redirects", "The number of redirects");
static CERT_EXPIRY: Gauge = gauge(
    "probe_ssl_earliest_cert_expiry",
    "Returns last SSL chain expiry in unixtime",
);
static TLS_VERSION: Gauge = labelled(
    "probe_tls_version_info",
    "version",
    "Returns the TLS version used or NaN when unknown",
);
static DNS_LOOKUP: Gauge = gauge(
    "probe_dns_lookup_time_seconds",
    "Returns the time taken for probe dns lookup in seconds",
);
static IP_PROTOCOL: Gauge = gauge(
    "probe_ip_protocol",
    "Specifies whether probe ip protocol is IP4 or IP6",
);

/// One blackbox series: the Vantage gauge it shows, and for a labelled one which of the
/// gauge's label values it takes (`None`: every value, under the same label value).
struct Row {
    blackbox: &'static Gauge,
    from: &'static Gauge,
    label: Option<(&'static str, &'static str)>,
}

const fn row(blackbox: &'static Gauge, from: &'static Gauge) -> Row {
    Row {
        blackbox,
        from,
        label: None,
    }
}

/// The blackbox series of a round, each from one Vantage gauge.
static ROWS: [Row; 14] = [
    row(&PROBE_SUCCESS, &g::PROBE_SUCCESS),
    row(&PROBE_DURATION, &g::PROBE_DURATION),
    Row {
        blackbox: &ICMP_DURATION,
        from: &g::PING_RTT,
        label: Some(("avg", "rtt")),
    },
    row(&DNS_DURATION, &g::DNS_PHASE),
    row(&DNS_ANSWER, &g::DNS_ANSWER_RECORDS),
    row(&DNS_AUTHORITY, &g::DNS_AUTHORITY_RECORDS),
    row(&DNS_ADDITIONAL, &g::DNS_ADDITIONAL_RECORDS),
    row(&HTTP_STATUS, &m::HTTP_STATUS),
    row(&HTTP_DURATION, &m::HTTP_PHASE),
    row(&HTTP_LENGTH, &m::HTTP_CONTENT_LENGTH),
    row(&HTTP_BODY_LENGTH, &m::HTTP_CONTENT_LENGTH),
    row(&HTTP_REDIRECTS, &m::HTTP_REDIRECTS),
    row(&CERT_EXPIRY, &m::TLS_CERT_NOT_AFTER),
    row(&TLS_VERSION, &m::TLS_VERSION),
];

/// What the `/probe` handler learnt of the target before the round: how long its name took
/// to resolve (0 for an address) and the address it resolved to.
#[derive(Debug, Clone, Copy)]
pub struct Lookup {
    pub took: Duration,
    pub address: Option<IpAddr>,
}

/// The blackbox answer of one round: every row's points, then the lookup's series.
pub fn render(sample: &Sample, lookup: Option<Lookup>) -> String {
    let pts = points(&StoredSample::from_sample(sample, 0));
    let mut extra = Vec::new();
    if let Some(l) = lookup {
        extra.push(Point::new(&DNS_LOOKUP, l.took.as_secs_f64()));
        if let Some(ip) = l.address {
            let v = if ip.to_canonical().is_ipv4() {
                4.0
            } else {
                6.0
            };
            extra.push(Point::new(&IP_PROTOCOL, v));
        }
    }
    let mut out = String::new();
    for (i, r) in ROWS.iter().enumerate() {
        // A family written once, though two rows may feed it.
        if ROWS[..i]
            .iter()
            .any(|p| std::ptr::eq(p.blackbox, r.blackbox))
        {
            continue;
        }
        let b = r.blackbox;
        family(&mut out, b.name, b.help, Kind::Gauge, |o| {
            let mut lines = Lines::new(o, Spelled::NONE);
            for row in ROWS.iter().filter(|x| std::ptr::eq(x.blackbox, b)) {
                write_row(row, &pts, &mut lines);
            }
            lines.wrote()
        });
    }
    for p in &extra {
        family(&mut out, p.gauge.name, p.gauge.help, Kind::Gauge, |o| {
            Lines::new(o, Spelled::NONE).sample(p.gauge.name, &[], None, p.value);
            true
        });
    }
    out
}

fn write_row(row: &Row, pts: &[Point], lines: &mut Lines<'_>) {
    for p in pts.iter().filter(|p| std::ptr::eq(p.gauge, row.from)) {
        let name = row.blackbox.name;
        match (row.blackbox.label, row.label, p.label_value.as_deref()) {
            (Some(l), Some((from, to)), Some(v)) if v == from => {
                lines.sample(name, &[(l, to)], None, p.value)
            }
            (Some(_), Some(_), _) => {}
            (Some(l), None, Some(v)) => lines.sample(name, &[(l, v)], None, p.value),
            _ => lines.sample(name, &[], None, p.value),
        }
    }
}

#[cfg(test)]
#[path = "probe_compat_tests.rs"]
mod tests;
