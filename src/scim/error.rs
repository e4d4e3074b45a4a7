//! SCIM error responses (RFC 7644 §3.12). Every failure at the HTTP edge becomes one of these, so a
//! client always gets `urn:ietf:params:scim:api:messages:2.0:Error` with the right status and `scimType`.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The `scimType` values of RFC 7644 Table 9 that this server emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScimType {
    InvalidFilter,
    TooMany,
    Uniqueness,
    Mutability,
    InvalidSyntax,
    InvalidPath,
    NoTarget,
    InvalidValue,
    InvalidVers,
}

impl ScimType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
        }
    }
}

/// An error as the SCIM client sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {scim_type:?}: {detail}")]
pub struct ScimError {
    pub status: StatusCode,
    pub scim_type: Option<ScimType>,
    pub detail: String,
}

impl ScimError {
    pub fn new(status: StatusCode, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError { status, scim_type, detail: detail.into() }
    }
    pub fn bad_request(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some(scim_type), detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, None, "a valid bearer token is required")
    }
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Some(ScimType::Uniqueness), detail)
    }
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, None, detail)
    }
    /// An `If-Match` precondition that does not hold (RFC 7644 §3.14).
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, None, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, None, detail)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let Some(scim_type) = self.scim_type {
            body["scimType"] = json!(scim_type.as_str());
        }
        body
    }
}

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let mut response = (self.status, super::ScimJson(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"SCIM\""));
        }
        response
    }
}

impl From<super::patch::PatchError> for ScimError {
    fn from(error: super::patch::PatchError) -> Self {
        use super::patch::PatchError;
        let scim_type = match &error {
            PatchError::InvalidPath(_) => ScimType::InvalidPath,
            PatchError::NoTarget(_) => ScimType::NoTarget,
            PatchError::InvalidValue(_) => ScimType::InvalidValue,
            PatchError::InvalidSyntax(_) => ScimType::InvalidSyntax,
            PatchError::Mutability(_) => ScimType::Mutability,
        };
        ScimError::bad_request(scim_type, error.to_string())
    }
}

impl From<super::filter::FilterError> for ScimError {
    fn from(error: super::filter::FilterError) -> Self {
        ScimError::bad_request(ScimType::InvalidFilter, error.to_string())
    }
}

/// Turns any error response that is not yet a SCIM error (axum's own rejections of a malformed
/// path or query string, an oversized body, …) into one, so a client never sees plain text.
pub async fn ensure_scim_error_body(response: Response) -> Response {
    let status = response.status();
    let is_scim = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(super::SCIM_CONTENT_TYPE));
    if !(status.is_client_error() || status.is_server_error()) || is_scim {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let detail = String::from_utf8_lossy(&body).trim().to_string();
    let detail = if detail.is_empty() { status.canonical_reason().unwrap_or("error").to_string() } else { detail };
    let scim_type = (status == StatusCode::BAD_REQUEST).then_some(ScimType::InvalidSyntax);
    ScimError::new(status, scim_type, detail).into_response()
}
