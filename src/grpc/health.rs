//! gRPC's standard health service (`grpc.health.v1.Health`), which Kubernetes' gRPC probes,
//! grpcurl and load balancers call: SERVING when `/ready` would answer 200, NOT_SERVING when
//! it would not (models loading or down, or shutting down). It knows the whole server (`""`)
//! and `inference.GRPCInferenceService`, which serve together.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use tonic::Status;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::http::AppState;

/// The service names known: the whole server, and the inference service.
const SERVICES: [&str; 2] = ["", "inference.GRPCInferenceService"];

/// How often a watch looks again for a change.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub(super) struct Probe {
    pub(super) state: AppState,
}

impl Probe {
    fn status(&self, service: &str) -> ServingStatus {
        if !SERVICES.contains(&service) {
            ServingStatus::ServiceUnknown
        } else if self.state.predictor().ready().is_ok() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    }
}

fn answer(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status.into() }
}

type Watch = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for Probe {
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        match self.status(&request.get_ref().service) {
            ServingStatus::ServiceUnknown => Err(Status::not_found(format!(
                "unknown service '{}': this server knows \"\" and inference.GRPCInferenceService",
                crate::error::clip(&request.get_ref().service)
            ))),
            status => Ok(tonic::Response::new(answer(status))),
        }
    }

    type WatchStream = Watch;

    /// The status now, then each change. A draining server sends NOT_SERVING and ends the
    /// stream (OK), so that a watch never holds a shutdown past its grace period; the client
    /// watches again elsewhere, as the protocol tells it to.
    async fn watch(&self, request: tonic::Request<HealthCheckRequest>) -> Result<tonic::Response<Watch>, Status> {
        let service = request.into_inner().service;
        let probe = Probe { state: self.state.clone() };
        let stream = futures::stream::unfold(Some((probe, service, None)), |step| async move {
            let (probe, service, last) = step?;
            let mut status = probe.status(&service);
            if last.is_some() {
                // Sent already: wait for a change, or for the server to drain.
                while Some(status) == last && !probe.state.is_draining() {
                    tokio::time::sleep(WATCH_EVERY).await;
                    status = probe.status(&service);
                }
            }
            let next = (!probe.state.is_draining()).then_some((probe, service, Some(status)));
            Some((Ok(answer(status)), next))
        });
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}
