//! gRPC health checking and server reflection on the cluster listener, as a load balancer or
//! `grpcurl` uses them: over TLS, without a client certificate.

use futures::StreamExt;
use licsync_testkit::ControlPlane;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn health_check_answers_for_the_server_and_each_service() {
    let cp = ControlPlane::start().await;
    let mut health = HealthClient::new(cp.connect(None).await);
    for service in ["", "licsync.v1.Registration", "licsync.v1.LicenseSync"] {
        let answer = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(answer.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("licsync.v1.LicenseSync"),
        "{unknown:?}"
    );

    // Watch would be a stream an anonymous client holds open: refused in the way the health
    // protocol tells clients to read as "no health checking".
    let watch = health.watch(check("")).await.unwrap_err();
    assert_eq!(watch.code(), Code::Unimplemented);
    cp.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_the_services_and_describes_them() {
    let cp = ControlPlane::start().await;
    let mut reflection = ServerReflectionClient::new(cp.connect(None).await);
    let requests = futures::stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "licsync.v1.LicenseSync".into(),
            )),
        },
    ]);
    let mut answers = reflection
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected the list of services");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "licsync.v1.Registration",
        "licsync.v1.LicenseSync",
        "grpc.health.v1.Health",
    ] {
        assert!(names.iter().any(|n| n == expected), "{names:?}");
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) =
        answers.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected the file describing LicenseSync");
    };
    assert!(!files.file_descriptor_proto.is_empty());
    cp.shutdown().await;
}
