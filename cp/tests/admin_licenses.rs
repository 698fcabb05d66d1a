//! Every row of SPEC §3's `/licenses` table with Kong's status codes and message texts, body
//! limits and paging, against the whole control plane (the test kit's, `server::run` on
//! `127.0.0.1:0` with sled in a temp dir).

use licsync_common::unix_now;
use licsync_cp::admin;
use licsync_testkit::fixtures::payload;
use licsync_testkit::{ControlPlane, Events, Issuer, send};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// `POST /licenses` with a license for `customer`, asserting 201; the entity.
async fn create(api: &ControlPlane, customer: &str) -> Value {
    let (status, body) = send(
        api.request(Method::POST, "/licenses")
            .json(&json!({"payload": api.issuer.license(customer)})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// How many licenses the control plane holds (`GET /licenses`).
async fn stored(api: &ControlPlane) -> usize {
    let (status, body) = send(api.request(Method::GET, "/licenses?size=1000")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn licenses_are_created_read_replaced_patched_and_deleted() {
    let api = ControlPlane::start().await;
    let document = api.issuer.license("Example Company, Inc");

    let (status, created) = send(
        api.request(Method::POST, "/licenses")
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

    let (status, fetched) = send(api.request(Method::GET, &format!("/licenses/{id}"))).await;
    assert_eq!((status, &fetched), (StatusCode::OK, &created));

    let (status, listed) = send(api.request(Method::GET, "/licenses")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!({"data": [created], "next": null}));

    let replacement = api.issuer.license("Example Company, Inc (renewed)");
    let (status, replaced) = send(
        api.request(Method::PUT, &format!("/licenses/{id}"))
            .json(&json!({"payload": replacement})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replaced["id"], id.as_str());
    assert_eq!(replaced["payload"], replacement.as_str());
    assert_eq!(replaced["created_at"], created_at, "PUT keeps created_at");
    assert!(replaced["updated_at"].as_i64().unwrap() >= created_at);

    let patched_doc = api.issuer.license("Example Company, Inc (patched)");
    let (status, patched) = send(
        api.request(Method::PATCH, &format!("/licenses/{id}"))
            .json(&json!({"payload": patched_doc})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["payload"], patched_doc.as_str());
    assert_eq!(patched["created_at"], created_at);
    assert_eq!(api.revision().await, 3, "three durable writes");

    let (status, body) = send(api.request(Method::DELETE, &format!("/licenses/{id}"))).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body) = send(api.request(Method::GET, &format!("/licenses/{id}"))).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, _) = send(api.request(Method::DELETE, &format!("/licenses/{id}"))).await;
    assert_eq!(
        status,
        StatusCode::NO_CONTENT,
        "deleting an unknown id is 204 too"
    );
    api.shutdown().await;
}

#[tokio::test]
async fn put_creates_under_the_given_id() {
    let api = ControlPlane::start().await;
    let id = Uuid::new_v4();
    let (status, body) = send(
        api.request(Method::PUT, &format!("/licenses/{id}"))
            .json(&json!({"payload": api.issuer.license("A")})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["id"], id.to_string());
    let (status, _) = send(api.request(Method::GET, &format!("/licenses/{id}"))).await;
    assert_eq!(status, StatusCode::OK);
    api.shutdown().await;
}

#[tokio::test]
async fn the_same_license_twice_is_a_conflict() {
    let api = ControlPlane::start().await;
    let document = api.issuer.license("A");
    let first = create(&api, "A").await;

    let (status, body) = send(
        api.request(Method::POST, "/licenses")
            .json(&json!({"payload": document})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["message"],
        format!("UNIQUE violation detected on '{{payload=\"{document}\"}}'")
    );

    let (status, body) = send(
        api.request(Method::PUT, &format!("/licenses/{}", Uuid::new_v4()))
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
        api.request(
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
    assert_eq!(stored(&api).await, 1);
    api.shutdown().await;
}

#[tokio::test]
async fn invalid_licenses_are_refused_with_kongs_texts() {
    let (logs, _guard) = Events::capture();
    let api = ControlPlane::start().await;
    let untrusted = Issuer::new();
    let mut unsigned_customer = payload("A");
    unsigned_customer.remove("customer");
    let cases = [
        (
            untrusted.license("A"),
            "Unable to validate license: validation failed: the signature does not verify with the 1 trusted key",
        ),
        (
            "this is not json".to_owned(),
            "Unable to validate license: could not decode license json",
        ),
        (
            api.issuer.sign(&unsigned_customer),
            "Unable to validate license: missing field 'customer'",
        ),
    ];
    for (document, message) in cases {
        let (status, body) = send(
            api.request(Method::POST, "/licenses")
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

    let (status, body) = send(api.request(Method::POST, "/licenses").json(&json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "schema violation (payload: required field missing)"
    );
    assert_eq!(body["fields"], json!({"payload": "required field missing"}));

    let (status, body) = send(
        api.request(Method::POST, "/licenses")
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

    let existing = create(&api, "B").await;
    let (status, body) = send(
        api.request(
            Method::PATCH,
            &format!("/licenses/{}", existing["id"].as_str().unwrap()),
        )
        .json(&json!({"payload": untrusted.license("B")})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "PATCH validates too");
    assert_eq!(
        body["message"],
        "Unable to validate license: validation failed: the signature does not verify with the 1 trusted key"
    );
    // The operator of the control plane sees every refusal and its reason, not only the client.
    let rejected = logs.named("license.rejected");
    assert_eq!(rejected.len(), 4, "{}", logs.text());
    assert_eq!(rejected[0].level, tracing::Level::WARN, "{}", rejected[0]);
    assert!(
        rejected[0]
            .to_string()
            .contains("does not verify with the 1 trusted key"),
        "{}",
        rejected[0]
    );
    assert!(
        rejected[3].field("license.id") == existing["id"].as_str(),
        "{}",
        rejected[3]
    );
    assert_eq!(stored(&api).await, 1, "nothing invalid was stored");
    api.shutdown().await;
}

#[tokio::test]
async fn ids_are_checked_the_way_kong_checks_them() {
    let api = ControlPlane::start().await;
    let (status, body) = send(api.request(Method::GET, "/licenses/not-a-uuid")).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"message": "Not found"}))
    );
    let (status, _) =
        send(api.request(Method::GET, &format!("/licenses/{}", Uuid::new_v4()))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let invalid_id = json!({
        "message": "schema violation (id: expected a valid UUID)",
        "name": "schema violation",
        "fields": {"id": "expected a valid UUID"},
        "code": 2,
    });
    let (status, body) = send(
        api.request(Method::PUT, "/licenses/not-a-uuid")
            .json(&json!({"payload": api.issuer.license("A")})),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::BAD_REQUEST, &invalid_id));
    let (status, body) = send(api.request(Method::DELETE, "/licenses/not-a-uuid")).await;
    assert_eq!((status, &body), (StatusCode::BAD_REQUEST, &invalid_id));

    let unknown = Uuid::new_v4();
    let (status, body) = send(
        api.request(Method::PATCH, &format!("/licenses/{unknown}"))
            .json(&json!({"payload": api.issuer.license("A")})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["message"],
        format!("could not find the entity with primary key '{{id=\"{unknown}\"}}'")
    );
    api.shutdown().await;
}

#[tokio::test]
async fn payload_may_be_an_object_and_bodies_need_no_json_content_type() {
    let api = ControlPlane::start().await;

    let object: Value = serde_json::from_str(&api.issuer.license("Object Inc")).unwrap();
    let (status, body) = send(
        api.request(Method::POST, "/licenses")
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
        api.request(Method::POST, "/licenses")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(json!({"payload": api.issuer.license("Curl Inc")}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Kong's documented `curl -d payload='{...}'` (a real form body) works too.
    let document = api.issuer.license("Form Inc");
    let form: String = document
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = send(
        api.request(Method::POST, "/licenses")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("payload={form}")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["payload"], document.as_str());
    api.shutdown().await;
}

#[tokio::test]
async fn bodies_over_one_mebibyte_are_refused() {
    let api = ControlPlane::start().await;
    let huge = format!(
        "{{\"payload\": \"{}\"}}",
        "x".repeat(2 * admin::MAX_BODY_BYTES)
    );
    let (status, body) = send(api.request(Method::POST, "/licenses").body(huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("1048576 bytes"), "{message}");
    api.shutdown().await;
}

#[tokio::test]
async fn bodies_without_a_length_are_cut_at_the_limit_too() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let api = ControlPlane::start().await;
    let addr = api.config().admin.listen.to_string();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /licenses HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        api.admin_token()
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
    api.shutdown().await;
}

#[tokio::test]
async fn listings_page_in_id_order_with_next_links() {
    let api = ControlPlane::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(create(&api, &format!("Customer {n}")).await["id"].clone());
    }
    ids.sort_by(|a, b| a.as_str().cmp(&b.as_str()));

    let mut seen = Vec::new();
    let mut path = "/licenses?size=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = send(api.request(Method::GET, &path)).await;
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

    let (status, page) = send(api.request(Method::GET, "/licenses?size=5")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        page["next"],
        Value::Null,
        "an exactly full last page has no next"
    );

    for query in ["size=0", "size=1001", "size=many"] {
        let (status, body) = send(api.request(Method::GET, &format!("/licenses?{query}"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("between 1 and 1000")
        );
    }
    let (status, body) = send(api.request(Method::GET, "/licenses?offset=bogus")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a valid offset")
    );
    api.shutdown().await;
}

/// The probe's forgery: forged fields first, the genuinely signed ones after. A last-wins parser
/// verifies the signature over the genuine fields while a first-wins one (the gateway, say)
/// reads the forged ones; so the document is refused whatever the order.
#[tokio::test]
async fn a_document_that_repeats_a_key_is_refused_as_ambiguous() {
    let api = ControlPlane::start().await;
    let genuine = api.issuer.license("Small Co");
    let forged = genuine.replacen(
        "\"payload\":{",
        "\"payload\":{\"customer\":\"Mega Corp\",\"dataplanes\":\"100000\",\"license_expiration_date\":\"2999-12-31\",",
        1,
    );
    assert_ne!(forged, genuine);
    let message = "Unable to validate license: duplicate key 'customer'";
    let (status, body) = send(
        api.request(Method::POST, "/licenses")
            .json(&json!({"payload": forged})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["message"], message);
    let id = Uuid::new_v4();
    let (status, body) = send(
        api.request(Method::PUT, &format!("/licenses/{id}"))
            .json(&json!({"payload": forged})),
    )
    .await;
    assert_eq!(
        (status, body["message"].clone()),
        (StatusCode::BAD_REQUEST, json!(message))
    );

    // Sent as an object, the repetition is in the request body itself.
    let body_text = format!("{{\"payload\":{genuine},\"payload\":{genuine}}}");
    let (status, body) = send(api.request(Method::POST, "/licenses").body(body_text)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["message"],
        "Cannot parse JSON body: duplicate key 'payload'; send each field once"
    );
    assert_eq!(stored(&api).await, 0, "nothing was stored");
    api.shutdown().await;
}
