//! Accessibility checks of the page a browser shows, the way an auditor would run them:
//! axe-core (Deque's rules engine behind Lighthouse and the browsers' own audits; vendored in
//! `testkit/assets/axe-core` with its licence, see the README there) run inside the page, and
//! Chromium's own accessibility tree (what a screen reader is given) for headings and labels.
//!
//! A violation of impact "serious" or "critical" fails the check; "minor" and "moderate" ones
//! are reported with it but do not.

use std::fmt;

use fantoccini::Client;
use serde_json::{Value, json};

use super::devtools::cdp;

/// axe-core 4.14.1, `axe.min.js` from the npm package `axe-core` (MPL-2.0).
const AXE: &str = include_str!("../../assets/axe-core/axe.min.js");

/// The impacts that fail the check.
const FAILING: [&str; 2] = ["serious", "critical"];

/// One rule the page breaks, with the elements that break it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// axe's rule id, e.g. `color-contrast`, `label`.
    pub rule: String,
    /// `minor`, `moderate`, `serious` or `critical`.
    pub impact: String,
    pub help: String,
    /// Where the rule is explained.
    pub help_url: String,
    /// For each offending element: its CSS selector, its HTML and axe's explanation.
    pub nodes: Vec<String>,
}

impl Violation {
    /// Whether this violation fails the check.
    pub fn fails(&self) -> bool {
        FAILING.contains(&self.impact.as_str())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "[{}] {}: {} ({})",
            self.impact, self.rule, self.help, self.help_url
        )?;
        for node in &self.nodes {
            writeln!(f, "    - {node}")?;
        }
        Ok(())
    }
}

/// Runs axe-core on the current page (injected once per document) and returns every
/// violation, of any impact.
pub async fn axe(client: &Client) -> Vec<Violation> {
    let loaded = client
        .execute("return typeof window.axe === 'object';", vec![])
        .await
        .unwrap_or_else(|e| panic!("cannot run a script in the page: {e}"));
    if loaded != Value::Bool(true) {
        // Run through WebDriver (DevTools), which the page's Content-Security-Policy does not
        // govern: the page itself never loads it.
        client
            .execute(&format!("{AXE}\nreturn true;"), vec![])
            .await
            .unwrap_or_else(|e| panic!("cannot inject axe-core into the page: {e}"));
    }
    let result = client
        .execute_async(
            r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ["violations"] })
  .then((r) => done(JSON.stringify(r.violations)))
  .catch((e) => done(JSON.stringify({ error: String(e) })));
"#,
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("axe-core did not finish: {e}"));
    let parsed: Value = result
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_else(|| panic!("axe-core answered something unexpected: {result}"));
    if let Some(error) = parsed.get("error") {
        panic!("axe-core failed in the page: {error}");
    }
    parsed
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| Violation {
            rule: text(&v["id"]),
            impact: text(&v["impact"]),
            help: text(&v["help"]),
            help_url: text(&v["helpUrl"]),
            nodes: v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    format!(
                        "{} {} — {}",
                        n["target"],
                        text(&n["html"]),
                        text(&n["failureSummary"]).replace('\n', " ")
                    )
                })
                .collect(),
        })
        .collect()
}

/// What Chromium's accessibility tree lacks: no heading at all, or a text field, combo box,
/// check box, button or link without an accessible name (a label a screen reader would read).
pub async fn tree_problems(client: &Client) -> Vec<String> {
    let tree = cdp(client, "Accessibility.getFullAXTree", json!({})).await;
    let nodes = tree["nodes"].as_array().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let role = |n: &Value| text(&n["role"]["value"]);
    let named = |n: &Value| !text(&n["name"]["value"]).trim().is_empty();
    let visible = |n: &Value| n["ignored"] != true;
    if !nodes.iter().any(|n| visible(n) && role(n) == "heading") {
        problems.push("the page has no heading".to_owned());
    }
    const NEEDS_NAME: [&str; 6] = [
        "textbox",
        "searchbox",
        "combobox",
        "checkbox",
        "button",
        "link",
    ];
    for node in nodes.iter().filter(|n| visible(n)) {
        let role = role(node);
        if NEEDS_NAME.contains(&role.as_str()) && !named(node) {
            problems.push(format!(
                "a {role} has no accessible name (DOM node {})",
                node["backendDOMNodeId"]
            ));
        }
    }
    problems
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
