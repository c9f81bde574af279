//! The `/metrics` answer, streamed: the exposition is rendered off the async workers and sent
//! in chunks of [`SCRAPE_CHUNK`] bytes as it is written (gzipped when the scraper takes it),
//! so a scrape of 10,000 targets (tens of MB of text) never sits in memory whole. The channel
//! between the render and the socket holds a few chunks; a slow scraper slows the render, and
//! a scraper that hangs up stops it.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use flate2::Compression;
use flate2::write::GzEncoder;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, SCRAPE_CHUNK};
use crate::storage::Storage;

/// The text exposition format's content type.
pub(crate) const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
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
    let scrape = headers.contains_key("x-prometheus-scrape-timeout-seconds");
    let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
    let failed = tx.clone();
    // Rendering thousands of targets takes a while: off the async workers, so that probes
    // due meanwhile still start on time.
    let render = tokio::task::spawn_blocking(move || {
        let mut sink = Sink::new(tx, gzip);
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
    if gzip {
        (
            [
                (header::CONTENT_TYPE, TEXT_FORMAT),
                (header::CONTENT_ENCODING, "gzip"),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, TEXT_FORMAT),
                (header::VARY, "accept-encoding"),
            ],
            body,
        )
            .into_response()
    }
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
    /// False once the scraper is gone: the rest of the render is dropped.
    open: bool,
}

impl Sink {
    fn new(tx: mpsc::Sender<Chunk>, gzip: bool) -> Self {
        Self {
            tx,
            // Fast compression: a scrape is compressed once and read once; level 1 gets most
            // of the gain.
            gzip: gzip.then(|| GzEncoder::new(Vec::new(), Compression::fast())),
            open: true,
        }
    }

    /// Takes the text (leaving `text` empty, its buffer kept for the next chunk).
    fn push(&mut self, text: &mut String) {
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
        if let Some(gz) = self.gzip.take() {
            let tail = gz.finish().expect("writing into a Vec cannot fail");
            self.send(Bytes::from(tail));
        }
        self.open
    }
}

/// Does the client take gzip (`Accept-Encoding: gzip`, not `gzip;q=0`)? Prometheus asks for it.
fn accepts_gzip(headers: &HeaderMap) -> bool {
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
    use vantage_core::Config;

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
        m.apply(&Config::parse(&text, "scrape.toml").unwrap());
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
        let m = metrics(300);
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
        let m = metrics(300);
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
        let mut sink = Sink::new(tx, false);
        let mut text = "x".repeat(SCRAPE_CHUNK);
        sink.push(&mut text);
        assert!(text.is_empty(), "the text is taken all the same");
        assert!(!sink.open);
        assert!(!sink.finish(&mut "rest".to_string()));
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
