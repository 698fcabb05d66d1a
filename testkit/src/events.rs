//! Structured log events (`event = "..."`), the way a log pipeline reads them: one JSON object
//! per line, with the event's fields flattened to the top level. [`Events`] holds the lines of
//! one test, whether they come from `tracing` in this process ([`Events::capture`]) or from a
//! child process's `log.format = "json"` output ([`Events::record_line`]), so a test asserts
//! what an operator would read in the log, and waits for it instead of sleeping.
//!
//! In-process capture is per thread: `#[tokio::test]` runs the test and every task it spawns
//! (the control plane and the agent included) on its one thread, so tests running in parallel
//! do not see each other's events. One global subscriber routes each event to its thread's
//! sink: per-thread (scoped) subscribers race with `tracing`'s per-callsite interest cache when
//! another test thread reaches a callsite first, and an event is then occasionally not
//! delivered at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::Duration;

use serde_json::{Map, Value, json};
use tracing::field::{Field, Visit};
use tracing::span;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One log line: its `event` name (empty when it has none), level and other fields, as text;
/// indexing (`event["revision"]`) reads the JSON line as written, numbers as numbers.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub level: tracing::Level,
    pub fields: BTreeMap<String, String>,
    line: Value,
}

impl Event {
    /// The field `name` as text: strings as written, numbers and booleans as JSON prints them.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The event a JSON log line holds (`{"raw": line}` for a line that was not JSON).
    pub fn from_json(line: &Value) -> Self {
        let mut fields = BTreeMap::new();
        if let Value::Object(members) = line {
            for (key, value) in members {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                fields.insert(key.clone(), text);
            }
        }
        let name = fields.remove("event").unwrap_or_default();
        let level = fields
            .get("level")
            .and_then(|l| tracing::Level::from_str(l).ok())
            .unwrap_or(tracing::Level::INFO);
        Self {
            name,
            level,
            fields,
            line: line.clone(),
        }
    }

    /// The JSON line this event was read from.
    pub fn json(&self) -> &Value {
        &self.line
    }
}

impl std::ops::Index<&str> for Event {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.line[key]
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.line.fmt(f)
    }
}

/// The log lines captured so far, oldest first.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Captures this thread's DEBUG-and-above events and spans until the guard is dropped.
    pub fn capture() -> (Self, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::registry()
                .with(LevelFilter::DEBUG)
                .with(Recorder);
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in a test binary");
        });
        let events = Self::default();
        SINK.with(|sink| *sink.borrow_mut() = Some(events.clone()));
        (events, Capture(()))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Event>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one JSON log line.
    pub fn record(&self, line: Value) {
        let event = Event::from_json(&line);
        self.lock().push(event);
    }

    /// Adds one line of a process's log: JSON, or `{"raw": line}` for anything else.
    pub fn record_line(&self, line: &str) {
        self.record(serde_json::from_str(line).unwrap_or_else(|_| json!({ "raw": line })));
    }

    /// Every line, as JSON.
    pub fn lines(&self) -> Vec<Value> {
        self.lock().iter().map(|e| e.line.clone()).collect()
    }

    /// The whole log as text, one JSON object a line, for assertion messages and for
    /// checking that a secret never reached it.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for event in self.lock().iter() {
            text.push_str(&event.line.to_string());
            text.push('\n');
        }
        text
    }

    /// A position to pass to [`Events::since`].
    pub fn mark(&self) -> usize {
        self.lock().len()
    }

    /// The events named `name` captured after `mark`.
    pub fn since(&self, mark: usize, name: &str) -> Vec<Event> {
        self.lock()
            .iter()
            .skip(mark)
            .filter(|e| e.name == name)
            .cloned()
            .collect()
    }

    /// Every event named `name`.
    pub fn named(&self, name: &str) -> Vec<Event> {
        self.since(0, name)
    }

    /// Waits until an event named `name` satisfies `pred`, and returns the first that does;
    /// fails the test with the whole log after `timeout`.
    pub async fn wait_for_event(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait_for_event_since(0, name, timeout, pred).await
    }

    /// [`Events::wait_for_event`] among the events captured after `mark`: the next occurrence,
    /// not one logged before (a reconnection, say, when the first connection is in the log).
    pub async fn wait_for_event_since(
        &self,
        mark: usize,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        crate::eventually_explained(
            &format!("the event {name}"),
            timeout,
            || async { self.since(mark, name).into_iter().find(|e| pred(e)) },
            || format!("log:\n{}", self.text()),
        )
        .await
    }
}

thread_local! {
    /// Where this thread's events go while a [`Capture`] lives.
    static SINK: RefCell<Option<Events>> = const { RefCell::new(None) };
}

/// Ends this thread's capture when dropped.
pub struct Capture(());

impl Drop for Capture {
    fn drop(&mut self) {
        SINK.with(|sink| *sink.borrow_mut() = None);
    }
}

/// Writes each event (and each new span, so its fields are in [`Events::text`] too) as the
/// JSON line the binaries' `log.format = "json"` would print.
struct Recorder;

impl Recorder {
    fn sink() -> Option<Events> {
        SINK.with(|sink| sink.borrow().clone())
    }
}

impl<S> Layer<S> for Recorder
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _id: &span::Id, _ctx: Context<'_, S>) {
        let Some(events) = Self::sink() else {
            return;
        };
        let mut fields = Fields::new(attrs.metadata());
        fields
            .0
            .insert("span".into(), attrs.metadata().name().into());
        attrs.record(&mut fields);
        events.record(Value::Object(fields.0));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let Some(events) = Self::sink() else {
            return;
        };
        let Some(metadata) = ctx.metadata(id) else {
            return;
        };
        let mut fields = Fields::new(metadata);
        fields.0.insert("span".into(), metadata.name().into());
        values.record(&mut fields);
        events.record(Value::Object(fields.0));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let Some(events) = Self::sink() else {
            return;
        };
        let mut fields = Fields::new(event.metadata());
        event.record(&mut fields);
        events.record(Value::Object(fields.0));
    }
}

/// A line's members: level and target, then the fields as recorded.
struct Fields(Map<String, Value>);

impl Fields {
    fn new(metadata: &tracing::Metadata<'_>) -> Self {
        let mut members = Map::new();
        members.insert("level".into(), metadata.level().as_str().into());
        members.insert("target".into(), metadata.target().into());
        Self(members)
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}").into());
    }
}
