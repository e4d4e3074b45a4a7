//! The SCIM 2.0 protocol edge (RFC 7643/7644): HTTP routes, the filter and PATCH engines, the
//! discovery documents and the error model; it reads through the cache's indexes ([`crate::cache`]).
//! It writes `CleanmailUser` resources and never talks to a mailbox backend.

pub mod error;
pub mod filter;
pub mod group;
pub mod patch;
pub mod projection;
pub mod resource;
pub mod routes;
pub mod schemas;
pub mod user;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

pub use error::{ScimError, ScimType};
pub use routes::{ScimState, router};

/// The media type of every SCIM response (RFC 7644 §8.1).
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// A JSON body sent as `application/scim+json`.
pub struct ScimJson(pub serde_json::Value);

impl IntoResponse for ScimJson {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = body.into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
        response
    }
}
