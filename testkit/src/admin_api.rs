//! The Admin API calls tests make on a [`ControlPlane`], as an operator would: with the
//! bootstrapped admin token, answers as status and JSON, and the common creations (licenses,
//! registration tokens, users, connected apps) asserted to succeed.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::ControlPlane;

/// Sends a request a test shaped itself; returns the status and the JSON body (`Value::Null`
/// when empty, a string when not JSON).
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("the Admin API answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// A registration token as `POST /registration-tokens` answers it.
pub struct RegistrationToken {
    pub secret: String,
    /// `sha256:HEX`, what `--ca-cert-hash` takes.
    pub ca_hash: String,
}

impl ControlPlane {
    /// A request to the Admin API carrying the admin token as a bearer, for a test that
    /// shapes it (headers, raw bodies) itself.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.anonymous(method, path).bearer_auth(self.admin_token())
    }

    /// A request to the Admin API without credentials.
    pub fn anonymous(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin_url()))
    }

    /// Calls the Admin API with the admin token; returns the status and the JSON body
    /// (`Value::Null` when empty, a string when not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    /// The SHA-256 fingerprint of the cluster CA (hex), as `ca_cert_sha256` carries it.
    pub fn ca_fingerprint(&self) -> String {
        let der = licsync_common::pki::first_certificate(&self.ca_pem(), "ca")
            .expect("the CA certificate parses");
        licsync_common::pki::sha256_hex(&der)
    }

    /// The cluster URL the control plane advertises (`cluster_url` of a registration token).
    pub async fn advertised_url(&self) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/registration-tokens",
                Some(json!({ "name": "url probe" })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["cluster_url"].as_str().unwrap().to_owned()
    }

    /// `POST /registration-tokens` for a token good for `max_uses` registrations.
    pub async fn registration_token(&self, max_uses: u32) -> RegistrationToken {
        let (status, body) = self
            .call(
                Method::POST,
                "/registration-tokens",
                Some(json!({ "name": "test", "max_uses": max_uses })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        RegistrationToken {
            secret: body["token"].as_str().unwrap().to_owned(),
            ca_hash: format!("sha256:{}", body["ca_cert_sha256"].as_str().unwrap()),
        }
    }

    /// `POST /users` for an admin user, who may renew data planes.
    pub async fn create_admin_user(&self, username: &str, password: &str) {
        let (status, body) = self
            .call(
                Method::POST,
                "/users",
                Some(json!({ "username": username, "password": password, "role": "admin" })),
            )
            .await;
        assert!(status.is_success(), "POST /users: {status} {body}");
    }

    /// `POST /connected-apps` with `scopes`; returns its client id and secret.
    pub async fn create_app(&self, name: &str, scopes: &[&str]) -> (String, String) {
        let (status, body) = self
            .call(
                Method::POST,
                "/connected-apps",
                Some(json!({ "name": name, "scopes": scopes })),
            )
            .await;
        assert!(status.is_success(), "POST /connected-apps: {status} {body}");
        let field = |name: &str| {
            body[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {body}"))
                .to_owned()
        };
        (field("client_id"), field("client_secret"))
    }

    /// `POST /licenses`; returns the new license's id.
    pub async fn create_license(&self, document: &str) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/licenses",
                Some(json!({ "payload": document })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn delete_license(&self, id: &str) {
        let (status, body) = self
            .call(Method::DELETE, &format!("/licenses/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }

    /// The revision of the current license set (`GET /status`).
    pub async fn revision(&self) -> u64 {
        let (status, body) = self.call(Method::GET, "/status", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["revision"].as_u64().unwrap()
    }

    /// `GET /clustering/data-planes/{id}`, asserting it exists.
    pub async fn dataplane(&self, id: &str) -> Value {
        match self.find_dataplane(id).await {
            Some(body) => body,
            None => panic!("GET /clustering/data-planes/{id}: 404"),
        }
    }

    /// `GET /clustering/data-planes/{id}`, `None` on 404.
    pub async fn find_dataplane(&self, id: &str) -> Option<Value> {
        let (status, body) = self
            .call(Method::GET, &format!("/clustering/data-planes/{id}"), None)
            .await;
        match status {
            StatusCode::OK => Some(body),
            StatusCode::NOT_FOUND => None,
            other => panic!("GET /clustering/data-planes/{id}: {other} {body}"),
        }
    }

    /// `GET /clustering/data-planes`.
    pub async fn dataplanes(&self) -> Vec<Value> {
        let (status, body) = self
            .call(Method::GET, "/clustering/data-planes", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].as_array().unwrap().clone()
    }
}
