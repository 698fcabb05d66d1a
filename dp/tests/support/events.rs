//! The structured log events (`event = "..."`) that the data plane and the in-process control
//! plane emit, captured so a test can assert what crossed the wire when no state shows it (a
//! license that was *not* sent again looks, on disk, just like one that was).
//!
//! Capture is per thread: `#[tokio::test]` runs the test and every task it spawns on its one
//! thread, so tests running in parallel do not see each other's events. One global subscriber
//! routes each event to its thread's sink: per-thread (scoped) subscribers race with
//! `tracing`'s per-callsite interest cache when another test thread reaches a callsite first,
//! and then an event is occasionally not delivered at all.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Once};

use tracing::field::{Field, Visit};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// One captured event: its `event` name and its other fields, as text.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// The events captured so far, oldest first.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Captures INFO-and-above events on this thread until the guard is dropped.
    pub fn capture() -> (Self, Capture) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::registry()
                .with(LevelFilter::INFO)
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

struct Recorder;

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let Some(events) = SINK.with(|sink| sink.borrow().clone()) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(name) = fields.0.remove("event") {
            events.lock().push(Event {
                name,
                fields: fields.0,
            });
        }
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}
