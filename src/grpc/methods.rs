//! The Open Inference Protocol's gRPC methods: each decodes its message, calls what REST's
//! `/v2` routes call (the predict service, the registry, the lifecycle), and encodes the
//! answer; errors go through `error.rs`'s table.

use std::time::Instant;

use axum::http::HeaderValue;
use tonic::Status;
use tower_http::request_id::RequestId;

use super::error::{self, Failed};
use super::proto::model_repository_parameter::ParameterChoice;
use super::proto::{self, grpc_inference_service_server::GrpcInferenceService};
use super::{grpc_timeout, infer, Started, GRPC_TIMEOUT};
use crate::auth::Caller;
use crate::http::call::{id_of, PIN_VERSION};
use crate::http::error::ApiError;
use crate::http::v2::model_metadata;
use crate::http::AppState;
use crate::lifecycle::LOADS_ONLY_CONFIGURED;
use crate::registry::RouteError;
use crate::service::{Deadline, Origin, Served, Target};

pub(super) struct Inference {
    pub(super) state: AppState,
}

impl Inference {
    /// The server's deadline, shortened (never lengthened) by the client's `grpc-timeout`.
    fn deadline<T>(&self, request: &tonic::Request<T>) -> Result<Deadline, Status> {
        let started = request.extensions().get::<Started>().map_or_else(Instant::now, |s| s.0);
        let deadline = Deadline::new(started, self.state.config.server.request_timeout());
        match request.metadata().get(GRPC_TIMEOUT.as_str()) {
            None => Ok(deadline),
            Some(value) => {
                let value = HeaderValue::from_bytes(value.as_bytes()).ok();
                let timeout = value.as_ref().and_then(grpc_timeout).ok_or_else(|| {
                    Status::invalid_argument("grpc-timeout must be up to 8 digits and a unit (H, M, S, m, u, n)")
                })?;
                Ok(deadline.shorten(timeout))
            }
        }
    }
}

fn version(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

type Answer<T> = Result<tonic::Response<T>, Status>;

#[tonic::async_trait]
impl GrpcInferenceService for Inference {
    async fn server_live(&self, _: tonic::Request<proto::ServerLiveRequest>) -> Answer<proto::ServerLiveResponse> {
        Ok(tonic::Response::new(proto::ServerLiveResponse { live: true }))
    }

    /// Ready as `/ready` says; not ready is an answer (`ready: false`), as Triton gives it.
    async fn server_ready(&self, _: tonic::Request<proto::ServerReadyRequest>) -> Answer<proto::ServerReadyResponse> {
        let ready = self.state.predictor().ready().is_ok();
        Ok(tonic::Response::new(proto::ServerReadyResponse { ready }))
    }

    /// A model unloaded through the repository is not ready (`ready: false`, as Triton answers
    /// it); one not configured is NOT_FOUND.
    async fn model_ready(
        &self,
        request: tonic::Request<proto::ModelReadyRequest>,
    ) -> Answer<proto::ModelReadyResponse> {
        let request = request.into_inner();
        let ready = (|| -> Result<bool, Failed> {
            let registry = self.state.registry()?;
            match registry.get(&request.name, version(&request.version)) {
                Err(RouteError::ModelUnloaded(_)) => Ok(false),
                found => Ok(found?.is_ready()),
            }
        })()
        .map_err(|Failed(status)| status)?;
        Ok(tonic::Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: tonic::Request<proto::ServerMetadataRequest>,
    ) -> Answer<proto::ServerMetadataResponse> {
        Ok(tonic::Response::new(proto::ServerMetadataResponse {
            name: "inferd".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: vec!["model_repository".into()],
        }))
    }

    async fn model_metadata(
        &self,
        request: tonic::Request<proto::ModelMetadataRequest>,
    ) -> Answer<proto::ModelMetadataResponse> {
        let request = request.into_inner();
        let metadata = (|| -> Result<_, Failed> {
            let registry = self.state.registry()?;
            let batcher = registry.get(&request.name, version(&request.version))?;
            Ok(model_metadata(&registry, batcher, version(&request.version).is_none()))
        })()
        .map_err(|Failed(status)| status)?;
        let tensor = |t: crate::http::v2::TensorMetadata| proto::model_metadata_response::TensorMetadata {
            name: t.name,
            datatype: t.datatype,
            shape: t.shape,
        };
        Ok(tonic::Response::new(proto::ModelMetadataResponse {
            name: metadata.name,
            versions: metadata.versions,
            platform: metadata.platform,
            inputs: metadata.inputs.into_iter().map(tensor).collect(),
            outputs: metadata.outputs.into_iter().map(tensor).collect(),
        }))
    }

    async fn model_infer(
        &self,
        request: tonic::Request<proto::ModelInferRequest>,
    ) -> Answer<proto::ModelInferResponse> {
        let deadline = self.deadline(&request)?;
        let request_id = request.extensions().get::<RequestId>().cloned();
        let caller = request.extensions().get::<Caller>().cloned();
        let pin = request.metadata().get(PIN_VERSION.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let message = request.into_inner();
        let (name, model_version) = (message.model_name.clone(), message.model_version.clone());
        let target = match version(&model_version) {
            Some(version) => Target::Version { name: &name, version },
            None => Target::Model { name: &name, pin: pin.as_deref() },
        };
        let origin = Origin {
            request_id: request_id.as_ref().map(id_of).unwrap_or_default(),
            principal: caller.as_ref().map(|c| &c.name),
        };
        let served = self.state.predictor().predict(target, origin, deadline, infer::Message(message)).await;
        let (by, answered) = match served {
            Served::Unrouted(e) => return Err(Failed::from(e).0),
            Served::Routed { result: Err(e), .. } => return Err(Failed::from(e).0),
            Served::Routed { by, result: Ok(answered) } => (by, answered),
        };
        let mut response = tonic::Response::new(infer::answer(&by.spec, &answered.input.0, &answered.inferred));
        if let Ok(version) = by.spec.version.parse() {
            response.metadata_mut().insert("x-inferd-version", version);
        }
        // For the access log (see `call`).
        response.extensions_mut().insert(by);
        Ok(response)
    }

    async fn repository_index(
        &self,
        request: tonic::Request<proto::RepositoryIndexRequest>,
    ) -> Answer<proto::RepositoryIndexResponse> {
        let request = request.into_inner();
        let index = self.state.lifecycle().index(request.ready).map_err(|e| error::status(e.into()))?;
        let models = index
            .into_iter()
            .map(|m| proto::repository_index_response::ModelIndex {
                name: m.name,
                version: m.version,
                state: m.state.into(),
                reason: m.reason.unwrap_or_default().into(),
            })
            .collect();
        Ok(tonic::Response::new(proto::RepositoryIndexResponse { models }))
    }

    /// Loads a configured model, as REST's `/v2/repository/models/{name}/load`; a request that
    /// brings a config or files (tritonclient's `config` and `file:` parameters) is refused.
    async fn repository_model_load(
        &self,
        request: tonic::Request<proto::RepositoryModelLoadRequest>,
    ) -> Answer<proto::RepositoryModelLoadResponse> {
        let request = request.into_inner();
        if !request.parameters.is_empty() {
            return Err(error::status(ApiError::InvalidRequest {
                message: LOADS_ONLY_CONFIGURED.into(),
                details: vec![],
            }));
        }
        self.state.lifecycle().set_loaded(&request.model_name, true).await.map_err(|e| error::status(e.into()))?;
        Ok(tonic::Response::new(proto::RepositoryModelLoadResponse {}))
    }

    /// Unloads a configured model, as REST's `/v2/repository/models/{name}/unload`. Of the
    /// parameters, only `unload_dependents` (a bool, which tritonclient always sends) is known;
    /// inferd's models have no dependents.
    async fn repository_model_unload(
        &self,
        request: tonic::Request<proto::RepositoryModelUnloadRequest>,
    ) -> Answer<proto::RepositoryModelUnloadResponse> {
        let request = request.into_inner();
        for (name, value) in &request.parameters {
            let known =
                name == "unload_dependents" && matches!(value.parameter_choice, Some(ParameterChoice::BoolParam(_)));
            if !known {
                return Err(error::status(ApiError::InvalidRequest {
                    message: format!(
                        "unknown unload parameter '{}': only unload_dependents (a bool) is taken",
                        crate::error::clip(name)
                    ),
                    details: vec![],
                }));
            }
        }
        self.state.lifecycle().set_loaded(&request.model_name, false).await.map_err(|e| error::status(e.into()))?;
        Ok(tonic::Response::new(proto::RepositoryModelUnloadResponse {}))
    }
}
