//! The API's error answer and its JSON request body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::config_file::FieldError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub(super) status: StatusCode,
    pub(super) error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) errors: Vec<FieldError>,
    #[serde(skip)]
    pub(super) retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub(super) fn fields(
        status: StatusCode,
        error: impl Into<String>,
        errors: Vec<FieldError>,
    ) -> Self {
        Self {
            errors,
            ..Self::new(status, error)
        }
    }

    pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what}; see the device log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(&self)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        r
    }
}

pub(super) type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON request body: `application/json`, at most [`MAX_BODY`] bytes, valid JSON.
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the body as application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(status, format!("the body is larger than {MAX_BODY} bytes"))
            } else {
                ApiError::new(status, e.body_text())
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid JSON: {e}"),
            )
        })
    }
}

pub(super) fn typed<T: serde::de::DeserializeOwned>(v: Value) -> ApiResult<T> {
    serde_json::from_value(v).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("{e}")))
}
