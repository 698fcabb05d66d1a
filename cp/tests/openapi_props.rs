//! Generated requests against the whole control plane, checked against its OpenAPI
//! description (the property-based half of SPEC §10's `GET /openapi.json` check): for any
//! described operation, any caller (admin, operator, viewer, none, a wrong token or password),
//! any path parameter (an existing entity, a fresh UUID, any text), any query parameters and
//! any body (a JSON object with the described fields and arbitrary values, any JSON, any
//! bytes), the answer is never a 5xx, its status is listed for the operation and its body
//! matches that status's schema with no undescribed field. `PROPTEST_CASES` sets the number
//! of requests (default 256).

mod openapi_check;

use std::collections::BTreeMap;
use std::sync::Arc;

use licsync_testkit::ControlPlane;
use openapi_check::{Description, Operation, answer, fill};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

/// Who calls.
#[derive(Debug, Clone, Copy)]
enum Caller {
    Admin,
    Operator,
    Viewer,
    Nobody,
    UnknownToken,
    WrongPassword,
}

/// A path parameter.
#[derive(Debug, Clone)]
enum Param {
    /// What the test created for this route.
    Existing,
    Uuid(u128),
    Text(String),
}

/// A request body.
#[derive(Debug, Clone)]
enum Body {
    None,
    /// An object whose members are mostly the described fields.
    Fields(Vec<(Option<usize>, String, Value)>),
    Json(Value),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Case {
    operation: usize,
    caller: Caller,
    param: Param,
    query: Vec<(Option<usize>, String, String)>,
    body: Body,
}

fn caller() -> impl Strategy<Value = Caller> {
    prop_oneof![
        3 => Just(Caller::Admin),
        1 => Just(Caller::Operator),
        1 => Just(Caller::Viewer),
        1 => Just(Caller::Nobody),
        1 => Just(Caller::UnknownToken),
        1 => Just(Caller::WrongPassword),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..20_000).prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,24}".prop_map(Value::from),
        prop_oneof![
            Just("4h"),
            Just("30d"),
            Just("admin"),
            Just("viewer"),
            Just("read:servers"),
            Just("dataplane")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn case(operations: usize) -> impl Strategy<Value = Case> {
    let param = prop_oneof![
        2 => Just(Param::Existing),
        1 => any::<u128>().prop_map(Param::Uuid),
        // Not empty, `.` or `..`: those would name another path, not this operation's.
        1 => "\\PC{1,40}"
            .prop_filter("a path segment", |t| t != "." && t != "..")
            .prop_map(Param::Text),
    ];
    let query = prop::collection::vec(
        (
            prop::option::weighted(0.8, 0usize..8),
            "[a-z]{1,8}",
            prop_oneof!["\\PC{0,12}", "[0-9]{1,4}", Just("dataplane".to_owned())],
        ),
        0..3,
    );
    let body = prop_oneof![
        1 => Just(Body::None),
        4 => prop::collection::vec(
            (prop::option::weighted(0.85, 0usize..8), "[a-z_]{1,10}", json_value()),
            0..5
        )
        .prop_map(Body::Fields),
        1 => json_value().prop_map(Body::Json),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Body::Bytes),
    ];
    (0..operations, caller(), param, query, body).prop_map(
        |(operation, caller, param, query, body)| Case {
            operation,
            caller,
            param,
            query,
            body,
        },
    )
}

/// What the generated requests use: the tokens of each role and what exists.
struct Setup {
    operator: String,
    viewer: String,
    /// Per path template, the value of its parameter that names an existing entity.
    existing: BTreeMap<&'static str, String>,
}

async fn setup(cp: &ControlPlane) -> Setup {
    let token = |role: &'static str| async move {
        let (status, body) = cp
            .call(
                Method::POST,
                "/admin-tokens",
                Some(json!({"name": format!("props-{role}"), "role": role})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["token"].as_str().unwrap().to_owned()
    };
    let (operator, viewer) = (token("operator").await, token("viewer").await);
    let (status, license) = cp
        .call(
            Method::POST,
            "/licenses",
            Some(json!({ "payload": cp.issuer.license("Props Inc") })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{license}");
    let (_, registration) = cp
        .call(Method::POST, "/registration-tokens", Some(json!({})))
        .await;
    cp.create_admin_user("props-user", "props password, long enough")
        .await;
    let (app, _) = cp.create_app("props", &["read:servers"]).await;
    let dataplane = cp.register_dataplane(licsync_common::VERSION).await.id;
    let existing = BTreeMap::from([
        ("/licenses/{id}", license["id"].as_str().unwrap().to_owned()),
        (
            "/registration-tokens/{id}",
            registration["id"].as_str().unwrap().to_owned(),
        ),
        ("/users/{name}", "props-user".to_owned()),
        ("/connected-apps/{client_id}", app),
        ("/clustering/data-planes/{id}", dataplane),
    ]);
    Setup {
        operator,
        viewer,
        existing,
    }
}

/// The request `case` describes for `op`.
fn request(
    cp: &ControlPlane,
    setup: &Setup,
    op: &Operation,
    case: &Case,
) -> reqwest::RequestBuilder {
    let value = match &case.param {
        Param::Existing => setup
            .existing
            .get(op.path.as_str())
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        Param::Uuid(n) => uuid::Uuid::from_u128(*n).to_string(),
        Param::Text(text) => percent_encode(text),
    };
    let params = ["id", "name", "client_id"].map(|name| (name, value.clone()));
    let mut path = fill(&op.path, &BTreeMap::from(params));
    if path.is_empty() {
        path = "/".into();
    }
    let mut request = cp.anonymous(op.method.clone(), &path);
    request = match case.caller {
        Caller::Admin => request.bearer_auth(cp.admin_token()),
        Caller::Operator => request.bearer_auth(&setup.operator),
        Caller::Viewer => request.bearer_auth(&setup.viewer),
        Caller::Nobody => request,
        Caller::UnknownToken => request.bearer_auth("lsa_not-a-token"),
        Caller::WrongPassword => request.basic_auth("props-user", Some("wrong password")),
    };
    let query: Vec<(String, String)> = case
        .query
        .iter()
        .map(|(described, name, value)| {
            let name = match described {
                Some(i) if !op.query.is_empty() => op.query[i % op.query.len()].clone(),
                _ => name.clone(),
            };
            (name, value.clone())
        })
        .collect();
    if !query.is_empty() {
        request = request.query(&query);
    }
    let fields: Vec<String> = op
        .body
        .as_ref()
        .and_then(|schema| schema["properties"].as_object())
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default();
    match &case.body {
        Body::None => request,
        Body::Fields(members) => {
            let mut object = Map::new();
            for (described, name, value) in members {
                let name = match described {
                    Some(i) if !fields.is_empty() => fields[i % fields.len()].clone(),
                    _ => name.clone(),
                };
                object.insert(name, value.clone());
            }
            request.json(&Value::Object(object))
        }
        Body::Json(value) => request.json(value),
        Body::Bytes(bytes) => request.body(bytes.clone()),
    }
}

/// `text` as one path segment.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn generated_requests_get_only_described_answers_and_no_5xx() {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    );
    let cp = runtime.block_on(ControlPlane::start());
    let setup = runtime.block_on(setup(&cp));
    let description = runtime.block_on(Description::fetch(&cp));
    let operations = description.operations();
    let config = Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(operations.len()), |case| {
        let op = &operations[case.operation];
        let (status, body) = runtime.block_on(answer(request(&cp, &setup, op, &case)));
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            return Err(TestCaseError::fail(format!(
                "{} {}: {status} {body}",
                op.method, op.path
            )));
        }
        // Storage is up and local: a 503 here would be a bug too.
        prop_assert_ne!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{} {}: {}",
            op.method,
            op.path,
            body
        );
        description
            .verify(op, status, &body)
            .map_err(TestCaseError::fail)
    });
    runtime.block_on(cp.shutdown());
    if let Err(error) = result {
        panic!("{error}");
    }
}
