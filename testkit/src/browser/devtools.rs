//! What WebDriver itself does not offer, asked of chromedriver through its own endpoints: a
//! DevTools command (`goog/cdp/execute`: full-page screenshots, the accessibility tree) and the
//! performance log (`se/log`), which holds the page's network events, so a test sees every
//! request the page made and every response header it got.

use std::collections::HashMap;

use fantoccini::Client;
use fantoccini::wd::WebDriverCompatibleCommand;
use http::Method;
use serde_json::{Value, json};
use url::{ParseError, Url};

/// A Chrome DevTools Protocol command run in the session's page.
#[derive(Debug)]
struct Cdp {
    command: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        let body = json!({ "cmd": self.command, "params": self.params });
        (Method::POST, Some(body.to_string()))
    }
}

/// Reads (and empties) one of chromedriver's logs.
#[derive(Debug)]
struct ReadLog {
    kind: &'static str,
}

impl WebDriverCompatibleCommand for ReadLog {
    fn endpoint(&self, base: &Url, session: Option<&str>) -> Result<Url, ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "type": self.kind }).to_string()))
    }
}

/// Runs the DevTools `command` with `params`; panics with the command on failure.
pub async fn cdp(client: &Client, command: &'static str, params: Value) -> Value {
    client
        .issue_cmd(Cdp { command, params })
        .await
        .unwrap_or_else(|e| panic!("DevTools command {command} failed: {e}"))
}

/// One request the page made, with the response when one came.
#[derive(Debug, Clone)]
pub struct Request {
    pub url: String,
    pub method: String,
    /// DevTools' resource type: `Document`, `Script`, `Fetch`, `XHR`, `Image`, ...
    pub resource_type: String,
    /// The response's status, when one arrived.
    pub status: Option<u16>,
    /// The response's headers, names in lower case.
    pub headers: HashMap<String, String>,
    /// Why it failed, when it did (for example `net::ERR_NAME_NOT_RESOLVED`).
    pub error: Option<String>,
}

impl Request {
    /// The `scheme://host:port` the request went to.
    pub fn origin(&self) -> String {
        match Url::parse(&self.url) {
            Ok(url) => url.origin().ascii_serialization(),
            Err(_) => self.url.clone(),
        }
    }

    /// A request that leaves the browser (not `data:`, `blob:`, `about:` or `chrome:`).
    pub fn is_network(&self) -> bool {
        ["http://", "https://", "ws://", "wss://"]
            .iter()
            .any(|scheme| self.url.starts_with(scheme))
    }
}

/// The network requests logged since the last call, in order (the performance log is read
/// and emptied).
pub async fn requests(client: &Client) -> Vec<Request> {
    let entries = client
        .issue_cmd(ReadLog {
            kind: "performance",
        })
        .await
        .unwrap_or_else(|e| panic!("cannot read chromedriver's performance log: {e}"));
    let mut requests: Vec<Request> = Vec::new();
    // DevTools request id -> index of its latest hop (a redirect reuses the id; each hop is a
    // request of its own).
    let mut latest: HashMap<String, usize> = HashMap::new();
    for entry in entries.as_array().into_iter().flatten() {
        let Some(message) = entry["message"]
            .as_str()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
        else {
            continue;
        };
        let event = &message["message"];
        let params = &event["params"];
        let id = text(&params["requestId"]);
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                if let Some(request) = latest.get(&id).and_then(|&i| requests.get_mut(i)) {
                    respond(request, &params["redirectResponse"]);
                }
                latest.insert(id, requests.len());
                requests.push(Request {
                    url: text(&params["request"]["url"]),
                    method: text(&params["request"]["method"]),
                    resource_type: text(&params["type"]),
                    status: None,
                    headers: HashMap::new(),
                    error: None,
                });
            }
            "Network.responseReceived" => {
                if let Some(request) = latest.get(&id).and_then(|&i| requests.get_mut(i)) {
                    respond(request, &params["response"]);
                }
            }
            "Network.loadingFailed" => {
                if let Some(request) = latest.get(&id).and_then(|&i| requests.get_mut(i)) {
                    request.error = Some(text(&params["errorText"]));
                }
            }
            _ => {}
        }
    }
    requests
}

/// Records DevTools' `response` (status and headers) on `request`.
fn respond(request: &mut Request, response: &Value) {
    if response.is_null() {
        return;
    }
    request.status = response["status"].as_u64().and_then(|s| s.try_into().ok());
    request.headers = response["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, value)| (name.to_ascii_lowercase(), text(value)))
        .collect();
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
