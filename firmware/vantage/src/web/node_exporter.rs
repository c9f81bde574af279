//! Settings → Local metrics: Debian's node exporter on the image, switched on or off
//! (`GET`/`PUT /api/node-exporter`). The daemon only writes the request; the image's root-run
//! helper applies it (crate::node_exporter). The guard's session and CSRF rule applies to the
//! PUT as to every other change.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::Web;
use super::error::{ApiError, ApiResult, JsonBody, typed};
use crate::node_exporter::NodeExporter;

pub const PATH: &str = "/api/node-exporter";

pub fn routes(r: axum::Router<Arc<Web>>) -> axum::Router<Arc<Web>> {
    use axum::routing::get;
    r.route(PATH, get(status).put(switch))
}

/// The setting's reader and request writer, the one thing these handlers use.
#[derive(Clone)]
struct Local(Arc<NodeExporter>);

impl FromRef<Arc<Web>> for Local {
    fn from_ref(web: &Arc<Web>) -> Self {
        Self(web.node_exporter.clone())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    enabled: bool,
}

async fn status(State(Local(ne)): State<Local>) -> Json<crate::node_exporter::Status> {
    Json(ne.status())
}

/// Writes the request and answers `202` with the status (its `pending` set): the helper
/// applies it within a second or two, and the page polls `GET` until it has.
async fn switch(State(Local(ne)): State<Local>, JsonBody(body): JsonBody) -> ApiResult {
    if !ne.available() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "the node exporter is not on this device: only the Vantage image ships it",
        ));
    }
    let Switch { enabled } = typed(body)?;
    ne.request(enabled)
        .map_err(|e| ApiError::internal("cannot write the node exporter request", e))?;
    tracing::info!(
        "node exporter: switching {} asked from the page",
        if enabled { "on" } else { "off" }
    );
    Ok((StatusCode::ACCEPTED, Json(ne.status())).into_response())
}
