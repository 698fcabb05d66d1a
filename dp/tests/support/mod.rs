//! What the data-plane tests share beyond the test kit (`licsync_testkit`): the agent
//! in-process or as a process ([`agent`], [`usage_agent`]), and registering a data plane with
//! a kit control plane the way an operator would (`registration create`, [`Enroll`]).
#![allow(dead_code, unused_imports)]

pub mod agent;
pub mod usage_agent;

use std::path::Path;

use licsync_dp::registration::create::create;
use licsync_dp::registration::{CaSource, CreateOptions, RegistrationFile};
pub use licsync_testkit::{
    ControlPlane, ControlPlaneBuilder, Event, Events, GUARD, Issuer, eventually, wait_for,
};

/// Registration through `licsync_dp`'s own `registration create`, which the kit (built without
/// the agent) cannot offer.
#[allow(async_fn_in_trait)]
pub trait Enroll {
    /// `registration create` options for this control plane.
    fn create_options(&self, token: &str, ca: CaSource, dir: &Path) -> CreateOptions;

    /// Registers a data plane as an operator would (a fresh token, `--ca-cert-hash`) into
    /// `dir/registration.yaml`, and returns the file.
    async fn register(&self, dir: &Path) -> RegistrationFile;
}

impl Enroll for ControlPlane {
    fn create_options(&self, token: &str, ca: CaSource, dir: &Path) -> CreateOptions {
        CreateOptions {
            token: token.to_owned(),
            server: self.url(),
            ca,
            name: Some("edge-7".into()),
            output_directory: dir.to_owned(),
            timeout: GUARD,
        }
    }

    async fn register(&self, dir: &Path) -> RegistrationFile {
        let token = self.registration_token(1).await;
        let path = create(self.create_options(&token.secret, CaSource::Hash(token.ca_hash), dir))
            .await
            .unwrap();
        RegistrationFile::load(&path).unwrap()
    }
}

pub fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}
