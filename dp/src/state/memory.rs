//! A volatile [`StateStore`] for tests and the fleet benchmark, where thousands of agents
//! share one process and none needs to survive a restart.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DpState, StateError, StateStore};

#[derive(Debug, Default)]
pub struct MemoryStateStore {
    state: Mutex<DpState>,
    failing: AtomicBool,
}

impl MemoryStateStore {
    /// A store that starts out holding `state`, as if a previous run had saved it.
    pub fn with_state(state: DpState) -> Self {
        Self {
            state: Mutex::new(state),
            failing: AtomicBool::new(false),
        }
    }

    /// Makes every later `save` fail (or succeed again), to test what a full disk does.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// What was last saved.
    pub fn snapshot(&self) -> DpState {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStateStore {
    async fn load(&self) -> Result<DpState, StateError> {
        Ok(self.snapshot())
    }

    async fn save(&self, state: &DpState) -> Result<(), StateError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StateError::Unavailable("saving is switched off".into()));
        }
        *self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = state.clone();
        Ok(())
    }
}
