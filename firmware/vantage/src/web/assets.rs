//! The page's files from `web/`, embedded gzipped (build.rs) so the daemon is one file and the
//! page a third of its size on a slow link.

use std::io::Read;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::read::GzDecoder;

const INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/index.html.gz"));
const APP_JS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/app.js.gz"));
const APP_CSS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/app.css.gz"));
const ICON: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/icon.svg.gz"));

/// A file as the client takes it: gzipped as stored, or inflated for a client without gzip.
fn asset(gz: &'static [u8], kind: &'static str, request: &HeaderMap) -> Response {
    let gzip = crate::scrape::accepts_gzip(request);
    let mut r = if gzip {
        gz.into_response()
    } else {
        let mut text = Vec::new();
        match GzDecoder::new(gz).read_to_end(&mut text) {
            Ok(_) => text.into_response(),
            Err(e) => {
                tracing::error!("an embedded page file does not inflate: {e}");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        }
    };
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Assets change with the binary; a short cache keeps upgrades visible.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn router() -> Router {
    Router::new()
        .route(
            "/",
            get(|h: HeaderMap| async move { asset(INDEX, "text/html; charset=utf-8", &h) }),
        )
        .route(
            "/app.js",
            get(|h: HeaderMap| async move { asset(APP_JS, "text/javascript; charset=utf-8", &h) }),
        )
        .route(
            "/app.css",
            get(|h: HeaderMap| async move { asset(APP_CSS, "text/css; charset=utf-8", &h) }),
        )
        .route(
            "/icon.svg",
            get(|h: HeaderMap| async move { asset(ICON, "image/svg+xml", &h) }),
        )
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, accept: Option<&str>) -> (Response, Vec<u8>) {
        let mut req = Request::builder().uri(path);
        if let Some(a) = accept {
            req = req.header(header::ACCEPT_ENCODING, a);
        }
        let resp = router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (Response::from_parts(parts, Body::empty()), bytes.to_vec())
    }

    /// Every file, gzipped or not, is the text of `web/` byte for byte.
    #[tokio::test]
    async fn each_file_is_served_as_written_with_or_without_gzip() {
        for (path, text, kind) in [
            ("/", include_str!("../../../../web/index.html"), "text/html"),
            (
                "/app.js",
                include_str!("../../../../web/app.js"),
                "text/javascript",
            ),
            (
                "/app.css",
                include_str!("../../../../web/app.css"),
                "text/css",
            ),
            (
                "/icon.svg",
                include_str!("../../../../web/icon.svg"),
                "image/svg+xml",
            ),
        ] {
            let (r, gz) = get(path, Some("gzip, deflate, br")).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip", "{path}");
            assert!(
                r.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(kind)
            );
            assert_eq!(r.headers()[header::VARY], "accept-encoding");
            let mut inflated = String::new();
            GzDecoder::new(&gz[..])
                .read_to_string(&mut inflated)
                .unwrap();
            assert_eq!(inflated, text, "{path} gzipped");
            assert!(
                gz.len() < text.len() || text.len() < 512,
                "{path}: {} bytes gzipped",
                gz.len()
            );

            for accept in [None, Some("gzip;q=0"), Some("identity")] {
                let (r, plain) = get(path, accept).await;
                assert_eq!(r.status(), StatusCode::OK, "{path} {accept:?}");
                assert!(
                    r.headers().get(header::CONTENT_ENCODING).is_none(),
                    "{path} {accept:?}"
                );
                assert_eq!(String::from_utf8(plain).unwrap(), text, "{path} {accept:?}");
            }
        }
    }
}
