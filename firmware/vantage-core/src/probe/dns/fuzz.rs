//! The answer path on any bytes, for the fuzz targets: the checks that a message answers our
//! query, then the report and validation of an accepted answer.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;

use super::super::options::{AnswerData, DnsOptions, DnsTransport, Pattern};
use super::{DnsReport, judge, judge_stream_answer};

/// The question answers must carry to reach the report: `example.com. IN A`.
pub(crate) const QUERY: &str = "example.com";

/// Built once: compiling the patterns for every input would be most of the fuzzer's time.
fn options() -> &'static DnsOptions {
    static OPTS: OnceLock<DnsOptions> = OnceLock::new();
    OPTS.get_or_init(build_options)
}

fn build_options() -> DnsOptions {
    let mut o = DnsOptions::new(QUERY, "A").expect("a valid query");
    o.answer_contains = vec![AnswerData::parse("192.0.2.1")];
    o.answer_not_contains = vec![AnswerData::parse("mail.example.com")];
    o.answer_match = vec![Pattern(
        regex::Regex::new(r"^example\.com\. \d+ IN A ").expect("regex"),
    )];
    o.answer_not_match = vec![Pattern(regex::Regex::new("TXT").expect("regex"))];
    o.min_answers = 1;
    o
}

/// Checks `buf` as the answer to a query with its own ID (a stray ID is the cheapest check and
/// would stop the fuzzer at the door); returns the report of an accepted answer.
pub(crate) fn answer(buf: &[u8]) -> Option<DnsReport> {
    let opts = options();
    let id = u16::from_be_bytes([*buf.first()?, *buf.get(1)?]);
    let server = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)), 53);
    let msg = judge_stream_answer(buf, id, opts, server, DnsTransport::Tcp).ok()?;
    let mut report = DnsReport::default();
    let _ = judge(&mut report, &msg, opts);
    Some(report)
}
