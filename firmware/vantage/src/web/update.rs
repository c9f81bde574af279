//! Settings → Update: a bundle uploaded as the raw request body (`POST /api/update`), streamed
//! into the spool, its signature checked before the answer, then installed in the background
//! while the page polls `GET /api/update`. The guard's session and CSRF rule applies as to
//! every POST; the upload has a longer time limit than other requests (guard.rs).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use futures_core::Stream;
use serde::Serialize;

use super::Web;
use super::error::{ApiError, ApiResult};
use crate::metrics::update::ImageState;
use crate::update::spool::{SpoolError, SpoolFile};
use crate::update::{Status, Updater};

pub const PATH: &str = "/api/update";
/// The spool's name for an uploaded bundle.
const UPLOAD_NAME: &str = "upload.raucb";

pub fn routes(r: axum::Router<Arc<Web>>) -> axum::Router<Arc<Web>> {
    use axum::routing::get;
    r.route(PATH, get(status).post(upload))
}

/// The updater, the one thing these handlers use.
#[derive(Clone)]
struct Update(Arc<Updater>);

impl FromRef<Arc<Web>> for Update {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self(web.update.clone())
    }
}

/// `GET /api/update`: the update running or last run, and the image's A/B state.
#[derive(Serialize)]
struct Answer {
    #[serde(flatten)]
    status: Status,
    /// `null` off an A/B image.
    image: Option<ImageState>,
}

async fn status(State(Update(up)): State<Update>) -> Json<Answer> {
    Json(Answer {
        status: up.status(),
        image: up.image_state(),
    })
}

fn spool_error(e: SpoolError) -> ApiError {
    let status = match e {
        SpoolError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        SpoolError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
        SpoolError::Other(_) => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.to_string())
}

/// Streams the body into the spool; on any failure nothing stays there.
async fn receive(up: &Updater, body: Body, expected: Option<u64>) -> ApiResult<PathBuf> {
    let limits = up.limits();
    let mut file =
        SpoolFile::create(&up.spool, UPLOAD_NAME, expected, limits).map_err(spool_error)?;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
        let chunk = chunk
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("upload cut: {e}")))?;
        file.write(&chunk).map_err(spool_error)?;
        let n = file.written();
        up.update_status(|s| s.bytes = n);
    }
    if file.written() == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body is empty: send the bundle file as the request body",
        ));
    }
    file.finish(None)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// Marks the update failed when dropped (only on the way out of an abandoned upload).
struct CutUpload<'a>(&'a Updater);

impl Drop for CutUpload<'_> {
    fn drop(&mut self) {
        self.0
            .failed("the upload was cut before the whole bundle arrived");
    }
}

async fn upload(
    State(Update(updater)): State<Update>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let up = &updater;
    let expected = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(busy) = up.try_begin("upload") else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "an update is already running; wait for it to end",
        ));
    };
    // A client that goes away (or the time limit) drops this future mid-upload: the spool
    // file removes itself, and the status must not stay "receiving".
    let cut = CutUpload(up);
    let received = receive(up, body, expected).await;
    std::mem::forget(cut);
    let bundle = match received {
        Ok(p) => p,
        Err(e) => {
            up.failed(&e.error);
            return Err(e);
        }
    };
    // Checked before the answer, so a refused bundle is an error the page shows at once; in a
    // task of its own, so a client that leaves now neither stops it nor strands the bundle.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let up = up.clone();
    tokio::spawn(async move {
        let _busy = busy;
        let checked = up.check(&bundle, "the uploaded file").await;
        let trusted = checked.is_ok();
        let _ = tx.send(checked);
        if trusted {
            let _ = up.install(&bundle).await;
        }
    });
    match rx.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e)),
        Err(e) => return Err(ApiError::internal("the signature check stopped", e)),
    }
    Ok((StatusCode::ACCEPTED, Json(updater.status())).into_response())
}
