//! `grpc.health.v1.Health` and server reflection on the cluster listener, so that load
//! balancers, Kubernetes gRPC probes and `grpcurl`-style tools work against it.
//!
//! Health answers `Check` for the whole server (`""`) and for each licsync service: `SERVING`
//! while the control plane serves, `NOT_SERVING` once it has begun to drain, so a balancer
//! stops sending new data planes to a node that is going away. `Watch` answers
//! `UNIMPLEMENTED`: it is a stream an anonymous client could hold open for ever, and the gRPC
//! health protocol tells clients to treat `UNIMPLEMENTED` from `Watch` as "health checking
//! off", so nothing is lost. Like every call on the cluster port from a peer without a sync
//! stream, health and reflection calls are bounded in time ([`super::idle`]).

use licsync_common::proto::license_sync_server::LicenseSyncServer;
use licsync_common::proto::registration_server::RegistrationServer;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The names `Check` knows: the whole server and each licsync service.
fn known(service: &str) -> bool {
    service.is_empty()
        || service == <RegistrationServer<()> as NamedService>::NAME
        || service == <LicenseSyncServer<()> as NamedService>::NAME
}

/// Health of the cluster listener: serving until `draining` is cancelled.
pub struct ClusterHealth {
    draining: CancellationToken,
}

/// The health service, to add to the cluster router.
pub fn service(draining: CancellationToken) -> HealthServer<ClusterHealth> {
    HealthServer::new(ClusterHealth { draining })
}

#[tonic::async_trait]
impl Health for ClusterHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.get_ref().service.as_str();
        if !known(service) {
            return Err(Status::not_found(format!(
                "unknown service '{}'; ask for \"\" (the server), {:?} or {:?}",
                licsync_common::printable(service, 128),
                <RegistrationServer<()> as NamedService>::NAME,
                <LicenseSyncServer<()> as NamedService>::NAME,
            )));
        }
        let status = if self.draining.is_cancelled() {
            ServingStatus::NotServing
        } else {
            ServingStatus::Serving
        };
        Ok(Response::new(HealthCheckResponse {
            status: status.into(),
        }))
    }

    type WatchStream = futures::stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented(
            "Watch is not served on the cluster port; poll Check instead",
        ))
    }
}

/// gRPC server reflection (v1, and v1alpha for older tools) describing the licsync services
/// and health.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(licsync_common::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status(health: &ClusterHealth, service: &str) -> Result<i32, Status> {
        let request = Request::new(HealthCheckRequest {
            service: service.to_owned(),
        });
        Ok(health.check(request).await?.into_inner().status)
    }

    #[tokio::test]
    async fn serving_until_the_drain_starts_then_not_serving() {
        let draining = CancellationToken::new();
        let health = ClusterHealth {
            draining: draining.clone(),
        };
        assert_eq!(
            status(&health, "").await.unwrap(),
            ServingStatus::Serving as i32
        );
        draining.cancel();
        for service in ["", "licsync.v1.Registration", "licsync.v1.LicenseSync"] {
            assert_eq!(
                status(&health, service).await.unwrap(),
                ServingStatus::NotServing as i32
            );
        }
        let unknown = status(&health, "x\n").await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(
            unknown.message().contains("'x\\n'"),
            "{}",
            unknown.message()
        );
    }
}
