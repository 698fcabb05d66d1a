//! The Admin API's description as a client reads it (`GET /openapi.json`), and the check that
//! an answer is one it describes: a status listed for the operation, a body valid against that
//! status's schema (JSON Schema 2020-12, with the `jsonschema` crate), and no field the schema
//! does not name. Shared by `openapi.rs` (chosen requests) and `openapi_props.rs` (generated
//! ones).

#![allow(dead_code)] // Each test crate uses part of it.

use std::collections::BTreeMap;

use licsync_testkit::ControlPlane;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

/// One described operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// The path template, `/licenses/{id}`.
    pub path: String,
    pub id: String,
    /// `viewer`, `operator`, `admin`; `None` for the calls that need no credential.
    pub role: Option<String>,
    /// Names of the query parameters.
    pub query: Vec<String>,
    /// The request body's schema, when it takes one.
    pub body: Option<Value>,
    operation: Value,
}

impl Operation {
    /// Whether `status` is listed for it.
    pub fn lists(&self, status: u16) -> bool {
        self.operation["responses"]
            .get(status.to_string())
            .is_some()
    }
}

/// The served description.
pub struct Description {
    pub doc: Value,
}

impl Description {
    /// `GET /openapi.json` without a credential, asserting an OpenAPI 3.1 JSON answer.
    pub async fn fetch(cp: &ControlPlane) -> Self {
        let response = cp
            .anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .expect("the Admin API answers");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(content_type, "application/json");
        let doc: Value = response.json().await.expect("the description is JSON");
        assert!(
            doc["openapi"].as_str().unwrap().starts_with("3.1"),
            "{}",
            doc["openapi"]
        );
        Self { doc }
    }

    /// Every operation, in the document's order.
    pub fn operations(&self) -> Vec<Operation> {
        let mut all = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let query = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect();
                let body = operation["requestBody"]["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|schema| self.body_schema(&Value::Object(schema.clone())));
                all.push(Operation {
                    method: method.to_uppercase().parse().unwrap(),
                    path: path.clone(),
                    id: operation["operationId"].as_str().unwrap().to_owned(),
                    role: operation["x-required-role"].as_str().map(str::to_owned),
                    query,
                    body,
                    operation: operation.clone(),
                });
            }
        }
        all
    }

    /// The object schema of a request body: through references, and past the `null` of an
    /// optional body (`oneOf: [null, object]`).
    fn body_schema(&self, schema: &Value) -> Value {
        let schema = self.resolve(schema);
        match schema["oneOf"].as_array() {
            Some(variants) => variants
                .iter()
                .map(|variant| self.resolve(variant))
                .find(|variant| variant["type"] != "null")
                .unwrap_or(schema)
                .clone(),
            None => schema.clone(),
        }
    }

    /// `value`, or what its `$ref` points to (in this document).
    pub fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local reference");
                self.resolve(self.doc.pointer(pointer).expect("the reference resolves"))
            }
            None => value,
        }
    }

    /// Panics unless `status` and `body` are an answer `op` describes; `what` names the
    /// request in the message.
    pub fn check(&self, op: &Operation, what: &str, status: StatusCode, body: &Value) {
        if let Err(contradiction) = self.verify(op, status, body) {
            panic!("{what}: {contradiction}");
        }
    }

    /// Whether `status` and `body` are an answer `op` describes, and if not, how not.
    pub fn verify(&self, op: &Operation, status: StatusCode, body: &Value) -> Result<(), String> {
        let (method, path) = (&op.method, &op.path);
        let Some(response) = op.operation["responses"].get(status.as_str()) else {
            let listed: Vec<&String> = op.operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            return Err(format!(
                "{method} {path} answered {status}, which its description does not list ({listed:?}): {body}"
            ));
        };
        let response = self.resolve(response);
        let Some(schema) = response["content"]["application/json"]["schema"].as_object() else {
            return match body {
                Value::Null => Ok(()),
                _ => Err(format!(
                    "{method} {path} answered {status} with a body, described without one: {body}"
                )),
            };
        };
        let schema = Value::Object(schema.clone());
        let errors = self.schema_errors(&schema, body);
        if !errors.is_empty() {
            return Err(format!(
                "{method} {path} answered {status} with a body its schema refuses: {errors:?}\nbody: {body}\nschema: {schema}"
            ));
        }
        let mut extra = Vec::new();
        self.undescribed_fields(&schema, body, "", &mut extra);
        if !extra.is_empty() {
            return Err(format!(
                "{method} {path} answered {status} with fields its schema does not describe: {extra:?}\nbody: {body}"
            ));
        }
        Ok(())
    }

    /// Why `instance` does not match `schema` (nothing when it does); references resolve
    /// against this document's components.
    fn schema_errors(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = schema.as_object().cloned().unwrap_or_default();
        root.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&Value::Object(root))
            .expect("the description's schemas compile");
        validator
            .iter_errors(instance)
            .map(|error| format!("{}: {error}", error.instance_path()))
            .collect()
    }

    /// Every member of `value` (recursively) that `schema` does not name: a field added to an
    /// answer without being described. Objects whose schema names no property are free-form.
    fn undescribed_fields(&self, schema: &Value, value: &Value, at: &str, out: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                let mut properties = Map::new();
                self.properties(schema, &mut properties);
                if properties.is_empty() {
                    return;
                }
                for (name, member) in fields {
                    match properties.get(name) {
                        Some(property) => {
                            self.undescribed_fields(property, member, &format!("{at}/{name}"), out)
                        }
                        None => out.push(format!("{at}/{name}")),
                    }
                }
            }
            Value::Array(items) => {
                let mut item_schemas = Vec::new();
                self.item_schemas(schema, &mut item_schemas);
                for (index, item) in items.iter().enumerate() {
                    for item_schema in &item_schemas {
                        self.undescribed_fields(item_schema, item, &format!("{at}/{index}"), out);
                    }
                }
            }
            _ => {}
        }
    }

    /// The properties `schema` names, through references and `allOf`/`oneOf`/`anyOf`.
    fn properties(&self, schema: &Value, into: &mut Map<String, Value>) {
        let schema = self.resolve(schema);
        if let Some(properties) = schema["properties"].as_object() {
            into.extend(properties.clone());
        }
        for combinator in ["allOf", "oneOf", "anyOf"] {
            for part in schema[combinator].as_array().into_iter().flatten() {
                self.properties(part, into);
            }
        }
    }

    fn item_schemas(&self, schema: &Value, into: &mut Vec<Value>) {
        let schema = self.resolve(schema);
        if let Some(items) = schema.get("items") {
            into.push(items.clone());
        }
        for combinator in ["allOf", "oneOf", "anyOf"] {
            for part in schema[combinator].as_array().into_iter().flatten() {
                self.item_schemas(part, into);
            }
        }
    }
}

/// `template` with each `{parameter}` replaced by `values[parameter]`.
pub fn fill(template: &str, values: &BTreeMap<&str, String>) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| segment.to_owned()),
                None => segment.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The answer's status and body (`Value::Null` when empty; a string when not JSON, which no
/// schema here accepts).
pub async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    licsync_testkit::send(request).await
}
