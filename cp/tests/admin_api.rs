//! The Admin API as a client sees it: a real server on `127.0.0.1:0` over in-memory storage,
//! called with reqwest. Covers every row of SPEC §3's `/licenses` table, authentication,
//! registration tokens, the fleet, `/status`, health probes and the bootstrap token file.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use licsync_common::license::{SigningKey, TrustedKeys, sign_document};
use licsync_common::unix_now;
use licsync_cp::admin;
use licsync_cp::config::CpConfig;
use licsync_cp::licenses::Licenses;
use licsync_cp::model::DataPlaneRecord;
use licsync_cp::secrets;
use licsync_cp::state::ControlPlane;
use licsync_cp::store::{MemoryStore, Store};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

const FINGERPRINT: &str = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";

/// A running Admin API and what a test needs to drive it.
struct Api {
    base: String,
    token: String,
    client: reqwest::Client,
    cp: Arc<ControlPlane>,
    store: Arc<MemoryStore>,
    key: SigningKey,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Api {
    /// Starts a control plane over an empty memory store; the admin token is bootstrapped into
    /// a temporary data directory, as on a first start.
    async fn start() -> Self {
        let (key, _) = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::parse(&[key.public_key_base64()]).unwrap();
        let store = Arc::new(MemoryStore::new());
        let licenses = Licenses::load(store.clone(), trusted).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_file = admin::bootstrap_admin_token(store.as_ref(), dir.path())
            .await
            .unwrap()
            .expect("an empty store gets a bootstrap token");
        let token = std::fs::read_to_string(token_file).unwrap();
        let cp = Arc::new(ControlPlane::new(
            CpConfig::default(),
            store.clone(),
            Arc::new(licenses),
            String::new(),
            FINGERPRINT.into(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(admin::serve(listener, cp.clone(), async {
            let _ = rx.await;
        }));
        Self {
            base,
            token,
            client: reqwest::Client::new(),
            cp,
            store,
            key,
            dir,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// A request carrying the admin token as a bearer.
    fn call(&self, method: Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(&self.token)
    }

    fn anonymous(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.call(Method::GET, path)
    }

    /// A signed license document for `customer`.
    fn document(&self, customer: &str) -> String {
        document_signed_by(&self.key, customer)
    }

    async fn create(&self, customer: &str) -> Value {
        let (status, body) = send(
            self.call(Method::POST, "/licenses")
                .json(&json!({"payload": self.document(customer)})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// Signals shutdown and waits for the server, re-raising its panic or error.
    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(result) => result.expect("the Admin API serves until shutdown"),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => panic!("Admin API task failed: {e}"),
            }
        }
    }
}

fn payload(customer: &str) -> BTreeMap<String, String> {
    [
        ("customer", customer),
        ("license_key", "KEY-1"),
        ("license_creation_date", "2026-01-01"),
        ("license_expiration_date", "2030-12-31"),
        ("dataplanes", "3"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn document_signed_by(key: &SigningKey, customer: &str) -> String {
    sign_document(&payload(customer), key)
}

/// Sends and returns the status and the JSON body (`null` when empty).
async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

#[tokio::test]
async fn every_route_but_health_requires_a_known_token() {
    let api = Api::start().await;

    let (status, body) = send(api.anonymous(Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Authorization: Bearer <token>"),
        "{message}"
    );
    assert!(message.contains("Kong-Admin-Token"), "{message}");

    let (status, body) = send(
        api.anonymous(Method::GET, "/status")
            .bearer_auth("lsa_not-a-real-token"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid API token")
    );

    let (status, _) = send(
        api.anonymous(Method::POST, "/registration-tokens")
            .header("Kong-Admin-Token", "wrong"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = send(api.get("/licenses")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "next": null}));

    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .header("Kong-Admin-Token", &api.token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "Kong's header is accepted too");

    for path in ["/health/live", "/health/ready"] {
        let response = api.anonymous(Method::GET, path).send().await.unwrap();
        assert_ne!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let response = api
            .anonymous(Method::GET, path)
            .bearer_auth("lsa_not-a-real-token")
            .send()
            .await
            .unwrap();
        assert_ne!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with a stale token"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn the_token_is_checked_before_routing() {
    let api = Api::start().await;
    // Without a token, a wrong method or an unknown path is refused like any other request:
    // the answer must not depend on (or reveal) which routes exist.
    let requests = [
        (Method::PUT, "/licenses"),
        (Method::PATCH, "/licenses"),
        (Method::DELETE, "/licenses"),
        (Method::GET, "/nope"),
        (Method::POST, "/nope"),
        (Method::GET, "/health"),
        (Method::GET, "/health/live/"),
        (Method::GET, "/health/other"),
    ];
    for (method, path) in requests {
        let response = api.anonymous(method.clone(), path).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        assert_eq!(
            response.headers().get("www-authenticate").unwrap(),
            "Bearer",
            "{method} {path}"
        );
        assert!(
            response.headers().get("allow").is_none(),
            "{method} {path} reveals the route's methods"
        );
        let body: Value = response.json().await.unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("No API token found in request"),
            "{method} {path}: {message}"
        );

        let (status, body) = send(
            api.anonymous(method.clone(), path)
                .header("Kong-Admin-Token", "wrong"),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("Invalid API token"),
            "{method} {path}: {body}"
        );
    }

    // With a token, routing answers as before: JSON 404 and 405.
    let (status, body) = send(api.get("/nope")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, body) = send(api.call(Method::DELETE, "/licenses")).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "Method not allowed"})
        )
    );
    api.stop().await;
}

#[tokio::test]
async fn a_deleted_token_stops_working_at_once() {
    let api = Api::start().await;
    let (status, _) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::OK);
    for token in api.store.api_tokens().await.unwrap() {
        api.store.delete_api_token(token.id).await.unwrap();
    }
    let (status, _) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    api.stop().await;
}

#[tokio::test]
async fn health_probes_follow_readiness() {
    let api = Api::start().await;
    let (status, body) = send(api.anonymous(Method::GET, "/health/live")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));

    let (status, body) = send(api.anonymous(Method::GET, "/health/ready")).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "starting"})
        )
    );
    api.cp.set_ready(true);
    let (status, body) = send(api.anonymous(Method::GET, "/health/ready")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    api.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_json() {
    let api = Api::start().await;
    let (status, body) = send(api.get("/consumers")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = api.call(method.clone(), "/licenses").send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method}"
        );
        let allow = response.headers()["allow"].to_str().unwrap().to_owned();
        assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "Method not allowed"}), "{method}");
    }
    api.stop().await;
}

#[tokio::test]
async fn licenses_are_created_read_replaced_patched_and_deleted() {
    let api = Api::start().await;
    let document = api.document("Example Company, Inc");

    let (status, created) = send(
        api.call(Method::POST, "/licenses")
            .json(&json!({"payload": document})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_owned();
    Uuid::parse_str(&id).unwrap();
    assert_eq!(
        created["payload"],
        document.as_str(),
        "the document as submitted"
    );
    let created_at = created["created_at"].as_i64().unwrap();
    assert!((created_at - unix_now()).abs() < 60);
    assert_eq!(created["updated_at"], created["created_at"]);
    assert_eq!(
        created.as_object().unwrap().len(),
        4,
        "entity is id, payload, created_at, updated_at: {created}"
    );

    let (status, fetched) = send(api.get(&format!("/licenses/{id}"))).await;
    assert_eq!((status, &fetched), (StatusCode::OK, &created));

    let (status, listed) = send(api.get("/licenses")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!({"data": [created], "next": null}));

    let replacement = api.document("Example Company, Inc (renewed)");
    let (status, replaced) = send(
        api.call(Method::PUT, &format!("/licenses/{id}"))
            .json(&json!({"payload": replacement})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replaced["id"], id.as_str());
    assert_eq!(replaced["payload"], replacement.as_str());
    assert_eq!(replaced["created_at"], created_at, "PUT keeps created_at");
    assert!(replaced["updated_at"].as_i64().unwrap() >= created_at);

    let patched_doc = api.document("Example Company, Inc (patched)");
    let (status, patched) = send(
        api.call(Method::PATCH, &format!("/licenses/{id}"))
            .json(&json!({"payload": patched_doc})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["payload"], patched_doc.as_str());
    assert_eq!(patched["created_at"], created_at);
    assert_eq!(
        api.cp.licenses.current().revision,
        3,
        "three durable writes"
    );

    let (status, body) = send(api.call(Method::DELETE, &format!("/licenses/{id}"))).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = send(api.get(&format!("/licenses/{id}"))).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, _) = send(api.call(Method::DELETE, &format!("/licenses/{id}"))).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "deleting an unknown id is 204 too"
    );
    api.stop().await;
}

#[tokio::test]
async fn put_creates_under_the_given_id() {
    let api = Api::start().await;
    let id = Uuid::new_v4();
    let (status, body) = send(
        api.call(Method::PUT, &format!("/licenses/{id}"))
            .json(&json!({"payload": api.document("A")})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id.to_string());
    let (status, _) = send(api.get(&format!("/licenses/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    api.stop().await;
}

#[tokio::test]
async fn the_same_license_twice_is_a_conflict() {
    let api = Api::start().await;
    let document = api.document("A");
    let first = api.create("A").await;

    let (status, body) = send(
        api.call(Method::POST, "/licenses")
            .json(&json!({"payload": document})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        format!("UNIQUE violation detected on '{{payload=\"{document}\"}}'")
    );

    let (status, body) = send(
        api.call(Method::PUT, &format!("/licenses/{}", Uuid::new_v4()))
            .json(&json!({"payload": document})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "another license's payload on PUT"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("UNIQUE violation detected on '{payload=")
    );

    let (status, _) = send(
        api.call(
            Method::PUT,
            &format!("/licenses/{}", first["id"].as_str().unwrap()),
        )
        .json(&json!({"payload": document})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "re-putting a license under its own id is fine"
    );
    assert_eq!(api.cp.licenses.current().licenses.len(), 1);
    api.stop().await;
}

#[tokio::test]
async fn invalid_licenses_are_refused_with_kongs_texts() {
    let api = Api::start().await;
    let (untrusted, _) = SigningKey::generate().unwrap();
    let mut unsigned_customer = payload("A");
    unsigned_customer.remove("customer");
    let cases = [
        (
            document_signed_by(&untrusted, "A"),
            "Unable to validate license: validation failed",
        ),
        (
            "this is not json".to_owned(),
            "Unable to validate license: could not decode license json",
        ),
        (
            sign_document(&unsigned_customer, &api.key),
            "Unable to validate license: missing field 'customer'",
        ),
    ];
    for (document, message) in cases {
        let (status, body) = send(
            api.call(Method::POST, "/licenses")
                .json(&json!({"payload": document})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
        assert_eq!(
            body,
            json!({"message": message, "name": "schema violation", "code": 2,
                   "fields": {"payload": message}})
        );
    }

    let (status, body) = send(api.call(Method::POST, "/licenses").json(&json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "schema violation (payload: required field missing)"
    );
    assert_eq!(body["fields"], json!({"payload": "required field missing"}));

    let (status, body) = send(
        api.call(Method::POST, "/licenses")
            .header("content-type", "application/json")
            .body("{\"payload\": "),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            StatusCode::BAD_REQUEST,
            json!({"message": "Cannot parse JSON body"})
        )
    );

    let existing = api.create("B").await;
    let (status, body) = send(
        api.call(
            Method::PATCH,
            &format!("/licenses/{}", existing["id"].as_str().unwrap()),
        )
        .json(&json!({"payload": document_signed_by(&untrusted, "B")})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH validates too");
    assert_eq!(
        body["message"],
        "Unable to validate license: validation failed"
    );
    assert_eq!(
        api.cp.licenses.current().licenses.len(),
        1,
        "nothing invalid was stored"
    );
    api.stop().await;
}

#[tokio::test]
async fn ids_are_checked_the_way_kong_checks_them() {
    let api = Api::start().await;
    let (status, body) = send(api.get("/licenses/not-a-uuid")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, _) = send(api.get(&format!("/licenses/{}", Uuid::new_v4()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let invalid_id = json!({
        "message": "schema violation (id: expected a valid UUID)",
        "name": "schema violation",
        "fields": {"id": "expected a valid UUID"},
        "code": 2,
    });
    let (status, body) = send(
        api.call(Method::PUT, "/licenses/not-a-uuid")
            .json(&json!({"payload": api.document("A")})),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::BAD_REQUEST, &invalid_id));
    let (status, body) = send(api.call(Method::DELETE, "/licenses/not-a-uuid")).await;
    assert_eq!((status, &body), (StatusCode::BAD_REQUEST, &invalid_id));

    let unknown = Uuid::new_v4();
    let (status, body) = send(
        api.call(Method::PATCH, &format!("/licenses/{unknown}"))
            .json(&json!({"payload": api.document("A")})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["message"],
        format!("could not find the entity with primary key '{{id=\"{unknown}\"}}'")
    );
    api.stop().await;
}

#[tokio::test]
async fn payload_may_be_an_object_and_bodies_need_no_json_content_type() {
    let api = Api::start().await;

    let object: Value = serde_json::from_str(&api.document("Object Inc")).unwrap();
    let (status, body) = send(
        api.call(Method::POST, "/licenses")
            .json(&json!({"payload": object})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["payload"],
        serde_json::to_string(&object).unwrap(),
        "stored as its compact serialisation"
    );

    // `curl -d '{"payload": ...}'` sends a form content type with a JSON body.
    let (status, body) = send(
        api.call(Method::POST, "/licenses")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(json!({"payload": api.document("Curl Inc")}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Kong's documented `curl -d payload='{...}'` (a real form body) works too.
    let document = api.document("Form Inc");
    let form: String = document
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = send(
        api.call(Method::POST, "/licenses")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("payload={form}")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payload"], document.as_str());
    api.stop().await;
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let api = Api::start().await;
    let huge = format!(
        "{{\"payload\": \"{}\"}}",
        "x".repeat(2 * admin::MAX_BODY_BYTES)
    );
    let (status, body) = send(api.call(Method::POST, "/licenses").body(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("1048576 bytes"), "{message}");
    api.stop().await;
}

#[tokio::test]
async fn bodies_without_a_length_are_cut_at_the_limit_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = Api::start().await;
    let addr = api.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /licenses HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        api.token
    );
    let upload = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(3 * admin::MAX_BODY_BYTES / chunk.len()) {
            writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .await?;
            writer.write_all(&chunk).await?;
            writer.write_all(b"\r\n").await?;
        }
        writer.write_all(b"0\r\n\r\n").await
    });
    let mut response = Vec::new();
    let _ = reader.read_to_end(&mut response).await;
    let _ = upload.await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("1048576 bytes"), "{response}");
    api.stop().await;
}

#[tokio::test]
async fn listings_page_in_id_order_with_next_links() {
    let api = Api::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(api.create(&format!("Customer {n}")).await["id"].clone());
    }
    ids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));

    let mut seen = Vec::new();
    let mut path = "/licenses?size=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = send(api.get(&path)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|l| l["id"].clone()));
        pages += 1;
        match page["next"].as_str() {
            Some(next) => {
                assert!(
                    next.starts_with("/licenses?offset=") && next.ends_with("&size=2"),
                    "{next}"
                );
                path = next.to_owned();
            }
            None => break,
        }
    }
    assert_eq!((pages, seen), (3, ids));

    let (status, page) = send(api.get("/licenses?size=5")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["next"],
        Value::Null,
        "an exactly full last page has no next"
    );

    for query in ["size=0", "size=1001", "size=many"] {
        let (status, body) = send(api.get(&format!("/licenses?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("between 1 and 1000")
        );
    }
    let (status, body) = send(api.get("/licenses?offset=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a valid offset")
    );
    api.stop().await;
}

#[tokio::test]
async fn registration_tokens_are_shown_once_listed_without_secret_and_revocable() {
    let api = Api::start().await;
    let (status, created) = send(
        api.call(Method::POST, "/registration-tokens")
            .json(&json!({"name": "edge-eu-1"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("lsr_"), "{secret}");
    assert_eq!(created["name"], "edge-eu-1");
    assert_eq!(created["max_uses"], 1);
    assert_eq!(created["ca_cert_sha256"], FINGERPRINT);
    assert_eq!(created["cluster_url"], api.cp.cluster_url.as_str());
    let expires_in = created["expires_at"].as_i64().unwrap() - unix_now();
    assert!(
        (4 * 3600 - 60..=4 * 3600).contains(&expires_in),
        "{expires_in}"
    );

    let stored = api.store.registration_tokens().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].token_hash,
        secrets::hash(&secret),
        "stored hashed"
    );
    assert_ne!(stored[0].token_hash, secret);

    let response = api.get("/registration-tokens").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(
        !text.contains(&secret) && !text.contains(&stored[0].token_hash),
        "{text}"
    );
    let listed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(listed["next"], Value::Null);
    assert_eq!(
        listed["data"],
        json!([{"id": created["id"], "name": "edge-eu-1", "created_at": stored[0].created_at,
                "expires_at": created["expires_at"], "max_uses": 1, "uses": 0, "expired": false}])
    );

    let (status, custom) = send(
        api.call(Method::POST, "/registration-tokens")
            .json(&json!({"name": "fleet", "ttl": "30d", "max_uses": 50})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(custom["max_uses"], 50);
    assert!(custom["expires_at"].as_i64().unwrap() - unix_now() > 29 * 86_400);

    let (status, _) = send(api.call(
        Method::DELETE,
        &format!("/registration-tokens/{}", created["id"].as_str().unwrap()),
    ))
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, listed) = send(api.get("/registration-tokens")).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], custom["id"]);
    api.stop().await;
}

#[tokio::test]
async fn registration_token_limits_are_explained() {
    let api = Api::start().await;
    for (body, says) in [
        (json!({"ttl": "31d"}), "30d"),
        (json!({"ttl": "0s"}), "1s"),
        (json!({"ttl": "soon"}), "e.g."),
        (json!({"max_uses": 0}), "1 to 10000"),
        (json!({"max_uses": 10_001}), "1 to 10000"),
        (json!({"name": "n".repeat(129)}), "128"),
    ] {
        let (status, answer) =
            send(api.call(Method::POST, "/registration-tokens").json(&body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    assert!(api.store.registration_tokens().await.unwrap().is_empty());
    api.stop().await;
}

#[tokio::test]
async fn status_and_fleet_report_what_the_control_plane_knows() {
    let api = Api::start().await;
    api.create("A").await;
    let dataplane = DataPlaneRecord {
        id: Uuid::new_v4(),
        name: "edge-1".into(),
        hostname: "edge-1.example".into(),
        ip: "10.0.0.7".into(),
        version: "0.1.0".into(),
        registered_at: unix_now(),
        cert_serial: "01".into(),
        cert_expires_at: unix_now() + 86_400,
        last_seen: None,
        license_id: None,
        license_updated_at: None,
        revoked: false,
    };
    api.store.put_dataplane(&dataplane).await.unwrap();
    api.cp.dataplanes.stream_opened(dataplane.id, unix_now());

    let (status, body) = send(api.get("/status")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], licsync_common::VERSION);
    assert_eq!(body["storage"]["backend"], "memory");
    assert_eq!(body["dataplanes"], json!({"connected": 1, "registered": 1}));
    assert_eq!(body["revision"], 1);

    let (status, body) = send(api.get("/clustering/data-planes")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["next"], Value::Null);
    let listed = &body["data"][0];
    assert_eq!(listed["id"], dataplane.id.to_string());
    assert_eq!(listed["hostname"], "edge-1.example");
    assert_eq!(listed["connected"], true);

    let (status, one) = send(api.get(&format!("/clustering/data-planes/{}", dataplane.id))).await;
    assert_eq!((status, &one), (StatusCode::OK, listed));
    let (status, _) = send(api.get(&format!("/clustering/data-planes/{}", Uuid::new_v4()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    api.stop().await;
}

#[tokio::test]
async fn bootstrap_writes_a_private_working_token_once() {
    let api = Api::start().await;
    let path = api.dir.path().join(admin::ADMIN_TOKEN_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&path).unwrap();
    assert!(token.starts_with("lsa_"));

    let (status, _) = send(
        api.anonymous(Method::GET, "/licenses")
            .bearer_auth(token.trim()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "the file's token works as a bearer");

    let stored = api.store.api_tokens().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].name, admin::BOOTSTRAP_TOKEN_NAME);
    assert_eq!(
        stored[0].token_hash,
        secrets::hash(&token),
        "only the hash is stored"
    );

    let again = admin::bootstrap_admin_token(api.store.as_ref(), api.dir.path())
        .await
        .unwrap();
    assert_eq!(again, None, "a second start creates nothing");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        token,
        "and leaves the file alone"
    );
    assert_eq!(api.store.api_tokens().await.unwrap().len(), 1);
    api.stop().await;
}
