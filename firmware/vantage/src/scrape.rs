//! The `/metrics` answer, streamed: the exposition is rendered off the async workers and sent
//! in chunks of [`SCRAPE_CHUNK`] bytes as it is written (gzipped when the scraper takes it),
//! so a scrape of 10,000 targets (tens of MB of text) never sits in memory whole. The channel
//! between the render and the socket holds a few chunks; a slow scraper slows the render, and
//! a scraper that hangs up stops it.
//!
//! Two formats: Prometheus' text format 0.0.4, and OpenMetrics 1.0 for a scraper that prefers
//! it in `Accept` (Prometheus does). They differ where the render's text needs it: a counter's
//! family is named without `_total` in OpenMetrics, and the answer ends with `# EOF`.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, SCRAPE_CHUNK};
use crate::storage::Storage;

/// The text exposition format's content type.
pub(crate) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The OpenMetrics versions whose text this writes (0.0.1 is 1.0.0's draft, read the same).
const OPENMETRICS_VERSIONS: [&str; 2] = ["1.0.0", "0.0.1"];
/// Chunks in flight between the render and the socket.
const CHUNKS_IN_FLIGHT: usize = 4;

type Chunk = Result<Bytes, std::io::Error>;

/// Answers a scrape. A Prometheus scrape (it sends its timeout header) is noted with the store
/// once the whole exposition was handed to the socket: `send = "gaps"` skips the rounds it
/// covered.
pub fn answer(
    metrics: Arc<Metrics>,
    storage: Option<Arc<Storage>>,
    headers: &HeaderMap,
) -> Response {
    let gzip = accepts_gzip(headers);
    let open_metrics = prefers_openmetrics(headers);
    let scrape = headers.contains_key("x-prometheus-scrape-timeout-seconds");
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let failed = tx.clone();
    // Rendering thousands of targets takes a while: off the async workers, so that probes
    // due meanwhile still start on time.
    let render = tokio::task::spawn_blocking(move || {
        let mut sink = Sink::new(tx, gzip, open_metrics);
        let mut out = String::with_capacity(SCRAPE_CHUNK * 2);
        metrics.render_to(&mut out, &mut |text| sink.push(text));
        if sink.finish(&mut out)
            && scrape
            && let Some(s) = &storage
        {
            s.note_scrape();
        }
    });
    // A render that fails ends the body with an error: the scraper sees a failed scrape, not a
    // short exposition it would take for the whole.
    tokio::spawn(async move {
        if let Err(e) = render.await {
            let _ = failed.send(Err(std::io::Error::other(e.to_string()))).await;
        }
    });
    let body = Body::from_stream(Chunks(rx));
    let format = if open_metrics {
        OPENMETRICS_FORMAT
    } else {
        TEXT_FORMAT
    };
    let mut resp = (
        [
            (header::CONTENT_TYPE, format),
            (header::VARY, "accept-encoding, accept"),
        ],
        body,
    )
        .into_response();
    if gzip {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

/// The receiving end, as the body's stream.
struct Chunks(mpsc::Receiver<Chunk>);

impl futures_core::Stream for Chunks {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// Where the render's text goes: through the compressor if any, then to the socket's side.
struct Sink {
    tx: mpsc::Sender<Chunk>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    /// OpenMetrics: the text's family headers rewritten into this, and `# EOF` at the end.
    open_metrics: Option<String>,
    /// False once the scraper is gone: the rest of the render is dropped.
    open: bool,
}

impl Sink {
    fn new(tx: mpsc::Sender<Chunk>, gzip: bool, open_metrics: bool) -> Self {
        Self {
            tx,
            // Fast compression: a scrape is compressed once and read once; level 1 gets most
            // of the gain.
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
            open_metrics: open_metrics.then(String::new),
            open: true,
        }
    }

    /// Takes the text (leaving `text` empty, its buffer kept for the next chunk).
    fn push(&mut self, text: &mut String) {
        if let Some(om) = &mut self.open_metrics {
            om.clear();
            to_openmetrics(text, om);
            std::mem::swap(text, om);
        }
        if self.open {
            let bytes = match &mut self.gzip {
                Some(gz) => {
                    gz.write_all(text.as_bytes())
                        .expect("writing into a Vec cannot fail");
                    Bytes::from(std::mem::take(gz.get_mut()))
                }
                None => Bytes::copy_from_slice(text.as_bytes()),
            };
            self.send(bytes);
        }
        text.clear();
    }

    fn send(&mut self, bytes: Bytes) {
        if self.open && !bytes.is_empty() {
            self.open = self.tx.blocking_send(Ok(bytes)).is_ok();
        }
    }

    /// The rest of the text, and the compressor's end. True if the scraper took it all.
    fn finish(mut self, rest: &mut String) -> bool {
        self.push(rest);
        if self.open_metrics.is_some() {
            // After the conversion: `# EOF` is not a header to rewrite.
            self.open_metrics = None;
            self.push(&mut "# EOF\n".to_string());
        }
        if let Some(gz) = self.gzip.take() {
            let tail = gz.finish().expect("writing into a Vec cannot fail");
            self.send(Bytes::from(tail));
        }
        self.open
    }
}

/// Rewrites the text format's family headers as OpenMetrics has them: a counter's family is
/// its samples' name without `_total` (a counter whose samples lack the suffix is declared
/// `unknown`, which OpenMetrics allows any name). Every other line is the same in both.
/// A family's `# HELP` and `# TYPE` lines are always in one chunk: the render flushes only
/// after a family's first sample.
fn to_openmetrics(text: &str, out: &mut String) {
    let mut help: Option<&str> = None;
    for line in text.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(h) = help.replace(rest) {
                out.push_str("# HELP ");
                push_help(out, h);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.trim_end().split_once(' ')
            && kind == "counter"
        {
            let (family, kind) = match name.strip_suffix("_total") {
                Some(base) => (base, "counter"),
                None => (name, "unknown"),
            };
            if let Some(h) = help.take() {
                out.push_str("# HELP ");
                match h.strip_prefix(name).filter(|doc| doc.starts_with(' ')) {
                    Some(doc) => {
                        out.push_str(family);
                        push_help(out, doc);
                    }
                    None => push_help(out, h),
                }
            }
            out.push_str("# TYPE ");
            out.push_str(family);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str("# HELP ");
            push_help(out, h);
        }
        out.push_str(line);
    }
    if let Some(h) = help {
        out.push_str("# HELP ");
        push_help(out, h);
    }
}

/// A help text as OpenMetrics escapes it: `\\` and `\n` as in the text format, and `"` too.
fn push_help(out: &mut String, help: &str) {
    if help.contains('"') {
        out.push_str(&help.replace('"', "\\\""));
    } else {
        out.push_str(help);
    }
}

/// Does the client prefer OpenMetrics? Yes when `Accept` names `application/openmetrics-text`
/// of a version this writes with a quality above 0 and not below the text format's (the
/// text format's is that of `text/plain`, else of `*/*`, else 0).
fn prefers_openmetrics(headers: &HeaderMap) -> bool {
    let mut om = 0.0f64;
    let (mut text, mut any) = (None::<f64>, 0.0f64);
    for item in headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut q, mut version) = (1.0, None);
        for p in parts {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.trim().parse::<f64>().unwrap_or(0.0);
            } else if let Some(v) = p.strip_prefix("version=") {
                version = Some(v.trim().trim_matches('"').to_string());
            }
        }
        match media.as_str() {
            "application/openmetrics-text"
                if version
                    .as_deref()
                    .is_none_or(|v| OPENMETRICS_VERSIONS.contains(&v)) =>
            {
                om = om.max(q);
            }
            "text/plain" => text = Some(text.unwrap_or(0.0).max(q)),
            "*/*" => any = any.max(q),
            _ => {}
        }
    }
    om > 0.0 && om >= text.unwrap_or(any)
}

/// Does the client take gzip (`Accept-Encoding: gzip`, not `gzip;q=0`)? Prometheus and every
/// browser ask for it.
pub(crate) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let q = parts
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}

/// A whole text gzipped as a scrape is (for the exposition's cost measurement).
#[cfg(test)]
pub(crate) fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(raw.len() / 6), Compression::fast());
    enc.write_all(raw).expect("writing into a Vec cannot fail");
    enc.finish().expect("writing into a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use http_body_util::BodyExt;

    use super::*;

    /// Ping targets enough for a scrape of several chunks.
    fn metrics(n: usize) -> Arc<Metrics> {
        let mut text = String::new();
        for i in 0..n {
            text.push_str(&format!(
                "[[targets]]\nname = \"t{i}\"\nprobes = [\"ping\"]\nhost = \"127.1.0.{}\"\n",
                i % 250 + 1
            ));
        }
        let m = Arc::new(Metrics::new());
        m.apply(&crate::config::parse(&text, "scrape.toml").unwrap());
        m
    }

    /// The per-target part: the process figures move between two renders.
    fn targets_part(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.contains("target=\"")).collect()
    }

    async fn frames(resp: Response) -> Vec<Bytes> {
        let mut body = resp.into_body();
        let mut out = Vec::new();
        while let Some(f) = body.frame().await {
            out.push(f.unwrap().into_data().unwrap());
        }
        out
    }

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, accept.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn a_large_scrape_goes_out_in_bounded_chunks_and_reads_as_the_whole() {
        let m = metrics(600);
        let whole = m.render();
        assert!(whole.len() > 4 * SCRAPE_CHUNK, "{} bytes", whole.len());
        let resp = answer(m.clone(), None, &headers("identity"));
        assert!(resp.headers().get(header::CONTENT_LENGTH).is_none());
        let frames = frames(resp).await;
        assert!(frames.len() >= 4, "{} chunks", frames.len());
        // A chunk ends at a target's end: at least SCRAPE_CHUNK, at most one target's lines more.
        for f in &frames[..frames.len() - 1] {
            assert!(
                (SCRAPE_CHUNK..2 * SCRAPE_CHUNK).contains(&f.len()),
                "{}",
                f.len()
            );
        }
        let text = String::from_utf8(frames.concat()).unwrap();
        assert_eq!(targets_part(&text), targets_part(&whole));
        assert!(text.starts_with("# HELP"));
        assert!(text.ends_with('\n'));
    }

    #[tokio::test]
    async fn a_gzipped_scrape_is_one_stream_of_the_whole() {
        let m = metrics(600);
        let whole = m.render();
        let resp = answer(m.clone(), None, &headers("gzip"));
        assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
        let frames = frames(resp).await;
        assert!(frames.len() > 1);
        let zipped = frames.concat();
        assert!(
            zipped.len() * 5 < whole.len(),
            "{} of {}",
            zipped.len(),
            whole.len()
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(&zipped[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(targets_part(&text), targets_part(&whole));
    }

    #[test]
    fn a_scraper_that_hangs_up_stops_the_sending() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut sink = Sink::new(tx, false, false);
        let mut text = "x".repeat(SCRAPE_CHUNK);
        sink.push(&mut text);
        assert!(text.is_empty(), "the text is taken all the same");
        assert!(!sink.open);
        assert!(!sink.finish(&mut "rest".to_string()));
    }

    #[test]
    fn counters_are_named_as_openmetrics_has_them() {
        let text = "# HELP a_total Rounds.\n# TYPE a_total counter\na_total{t=\"x\"} 3\n\
                    # HELP b Bytes (send = \"gaps\").\n# TYPE b gauge\nb 1\n\
                    # HELP c_count Odd.\n# TYPE c_count counter\nc_count 2\n\
                    # TYPE d_total counter\nd_total 0\n\
                    # HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n";
        let mut out = String::new();
        to_openmetrics(text, &mut out);
        assert_eq!(
            out,
            "# HELP a Rounds.\n# TYPE a counter\na_total{t=\"x\"} 3\n\
             # HELP b Bytes (send = \\\"gaps\\\").\n# TYPE b gauge\nb 1\n\
             # HELP c_count Odd.\n# TYPE c_count unknown\nc_count 2\n\
             # TYPE d counter\nd_total 0\n\
             # HELP h Hist.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n"
        );
    }

    #[tokio::test]
    async fn an_openmetrics_scrape_ends_with_eof_and_names_counter_families_without_total() {
        let m = metrics(600);
        let whole = m.render();
        // What Prometheus 2.x sends.
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
                .parse()
                .unwrap(),
        );
        let resp = answer(m.clone(), None, &h);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], OPENMETRICS_FORMAT);
        let text = String::from_utf8(frames(resp).await.concat()).unwrap();
        assert!(text.ends_with("\n# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
        let counters: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        assert!(counters.len() >= 3, "{counters:?}");
        for family in &counters {
            assert!(!family.ends_with("_total"), "{family}");
            assert!(text.contains(&format!("\n{family}_total")), "{family}");
        }
        assert_eq!(targets_part(&text), targets_part(&whole));
        // The text format is unchanged for everyone else.
        let plain = answer(m.clone(), None, &HeaderMap::new());
        assert_eq!(plain.headers()[header::CONTENT_TYPE], TEXT_FORMAT);
        let plain = String::from_utf8(frames(plain).await.concat()).unwrap();
        assert!(!plain.contains("# EOF"));
        assert!(plain.contains("_total counter\n"));
    }

    #[test]
    fn openmetrics_only_when_preferred() {
        let accept = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, v.parse().unwrap());
            prefers_openmetrics(&h)
        };
        assert!(accept("application/openmetrics-text"));
        assert!(accept(
            "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;q=0.4"
        ));
        assert!(!accept(
            "application/openmetrics-text;version=2.0.0,text/plain;q=0.1"
        ));
        assert!(!accept(
            "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
        ));
        assert!(!accept("application/openmetrics-text;q=0"));
        assert!(!accept("*/*"));
        assert!(!accept("text/plain"));
        assert!(!prefers_openmetrics(&HeaderMap::new()));
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        for (accept, gzip) in [
            ("gzip", true),
            ("deflate, gzip;q=0.5", true),
            ("*", true),
            ("identity", false),
            ("gzip;q=0", false),
            ("br, deflate", false),
        ] {
            assert_eq!(accepts_gzip(&headers(accept)), gzip, "{accept}");
        }
    }
}
