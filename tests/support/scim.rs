//! A small SCIM client for tests, speaking as Entra does (`application/scim+json`, bearer token).

use reqwest::{Method, StatusCode};
use serde_json::Value;

pub struct Scim {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub body: Value,
}

impl Scim {
    pub fn new(base: &str, token: &str) -> Self {
        let http = reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().expect("http client");
        Scim { base: base.to_string(), token: token.to_string(), http }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&[u8]>) -> Reply {
        self.send_with(method, path, body, &[]).await
    }

    /// Sends a request with extra headers (`If-Match`, `If-None-Match`).
    pub async fn send_with(&self, method: Method, path: &str, body: Option<&[u8]>, headers: &[(&str, &str)]) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json; charset=utf-8");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        let response = request.send().await.expect("SCIM request");
        let status = response.status();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let content_type = header("content-type").unwrap_or_default();
        let location = header("location");
        let etag = header("etag");
        let bytes = response.bytes().await.expect("SCIM response body");
        let body =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("SCIM response is JSON") };
        Reply { status, content_type, location, etag, body }
    }

    /// Waits until the operator has loaded this token's tenant (GET /Users answers 200).
    pub async fn wait_until_usable(&self) {
        super::cluster::eventually("tenant usable", std::time::Duration::from_secs(120), || async {
            (self.get("/Users").await.status == 200).then_some(())
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string().as_bytes())).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(body.to_string().as_bytes())).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(Method::PUT, path, Some(body.to_string().as_bytes())).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None).await
    }
}

/// The body Entra sends to create a user (Microsoft's "Create User" example, with our domain).
pub fn entra_user(user_name: &str, external_id: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
        "externalId": external_id,
        "userName": user_name,
        "active": true,
        "addresses": null,
        "displayName": "Alice Wonder",
        "emails": [{"primary": true, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Alice Wonder", "familyName": "Wonder", "givenName": "Alice"},
        "roles": [],
    })
}

/// Asserts a SCIM error body with this status and `scimType`.
pub fn assert_scim_error(reply: &Reply, status: u16, scim_type: Option<&str>) {
    assert_eq!(reply.status.as_u16(), status, "unexpected status; body {}", reply.body);
    assert!(reply.content_type.starts_with("application/scim+json"), "content type {}", reply.content_type);
    assert_eq!(
        reply.body["schemas"],
        serde_json::json!(["urn:ietf:params:scim:api:messages:2.0:Error"]),
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], serde_json::json!(status.to_string()), "{}", reply.body);
    assert_eq!(reply.body["scimType"].as_str(), scim_type, "{}", reply.body);
    assert!(reply.body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", reply.body);
}
