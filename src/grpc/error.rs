//! The one table from an error to a gRPC status: the same [`ApiError`] REST answers with,
//! read as a status code and the Open Inference Protocol's message.

use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::http::error::{v2_message, ApiError};
use crate::registry::RouteError;
use crate::service::PredictError;

/// The status code for an error; REST's status for the same error is `ApiError::status`.
pub fn code(e: &ApiError) -> Code {
    match e {
        ApiError::MalformedJson(_)
        | ApiError::InvalidPath(_)
        | ApiError::InvalidHeader(_)
        | ApiError::UnreadableBody(_)
        | ApiError::UnsupportedMediaType { .. }
        | ApiError::InvalidRequest { .. }
        | ApiError::Validation { .. }
        | ApiError::ModelRejected(_) => Code::InvalidArgument,
        // gRPC's own answer to a message over the receiver's limit.
        ApiError::PayloadTooLarge { .. } => Code::ResourceExhausted,
        ApiError::BodyTimeout { .. } | ApiError::Timeout { .. } => Code::DeadlineExceeded,
        ApiError::Route(RouteError::ModelNotFound(_) | RouteError::VersionNotFound { .. })
        | ApiError::RouteNotFound(_) => Code::NotFound,
        ApiError::MethodNotAllowed => Code::Unimplemented,
        ApiError::Unauthorized | ApiError::Unauthenticated { .. } => Code::Unauthenticated,
        ApiError::Forbidden(_) | ApiError::AdminNotLocal => Code::PermissionDenied,
        ApiError::ReloadFailed { .. } => Code::FailedPrecondition,
        // The caller's own quota: retrying elsewhere does not help.
        ApiError::RateLimited { .. } => Code::ResourceExhausted,
        // This instance cannot take it now; another may (UNAVAILABLE is what gRPC clients and
        // proxies retry).
        ApiError::NotReady
        | ApiError::Route(RouteError::ModelUnloaded(_))
        | ApiError::ModelsDown(_)
        | ApiError::Overloaded { .. }
        | ApiError::BodiesInFlight
        | ApiError::PredictionLogUnavailable
        | ApiError::ShuttingDown => Code::Unavailable,
        ApiError::Internal(_) => Code::Internal,
    }
}

/// The status for an error; an internal one is logged here, and its cause never sent. One to
/// retry later (REST's `Retry-After`) says when twice: as `google.rpc.RetryInfo` in the
/// status details, for applications, and as `grpc-retry-pushback-ms`, which gRPC libraries
/// with a retry policy wait for before they try again.
pub fn status(e: ApiError) -> Status {
    e.log_internal();
    let (code, message) = (code(&e), v2_message(&e.body()));
    match e.retry_after_seconds() {
        Some(seconds) if matches!(code, Code::Unavailable | Code::ResourceExhausted) => {
            let delay = Duration::from_secs(seconds.into());
            let mut metadata = MetadataMap::new();
            metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(delay.as_millis() as u64));
            Status::with_error_details_and_metadata(code, message, ErrorDetails::with_retry_info(Some(delay)), metadata)
        }
        _ => Status::new(code, message),
    }
}

impl From<PredictError> for Failed {
    fn from(e: PredictError) -> Self {
        Self(status(e.into()))
    }
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Self {
        Self(status(e))
    }
}

impl From<RouteError> for Failed {
    fn from(e: RouteError) -> Self {
        Self(status(e.into()))
    }
}

/// gRPC's name for a status code (as `grpc-status` carries it), for the metrics' `code` label.
pub fn code_name(code: u16) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES.get(usize::from(code)).copied().unwrap_or("UNKNOWN")
}

/// A status made by [`status`], so that `?` on any of the service's errors goes through the
/// table.
pub struct Failed(pub Status);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_codes_clients_expect() {
        let not_found = ApiError::Route(RouteError::ModelNotFound("m".into()));
        assert_eq!(code(&not_found), Code::NotFound);
        assert_eq!(code(&ApiError::Timeout { ms: 5 }), Code::DeadlineExceeded);
        assert_eq!(code(&ApiError::Overloaded { model: "m".into(), queued: 1, capacity: 1 }), Code::Unavailable);
        assert_eq!(code(&ApiError::Unauthenticated { message: "no", invalid: false }), Code::Unauthenticated);
        assert_eq!(code(&ApiError::Forbidden("predict")), Code::PermissionDenied);
        assert_eq!(code(&ApiError::InvalidRequest { message: "x".into(), details: vec![] }), Code::InvalidArgument);
        let internal = status(ApiError::Internal("secret cause".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret"), "{}", internal.message());
        let busy = status(ApiError::Overloaded { model: "m".into(), queued: 1, capacity: 1 });
        assert_eq!(busy.get_details_retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(1)));
        assert_eq!(busy.metadata().get("grpc-retry-pushback-ms").unwrap(), "1000");
        assert!(status(ApiError::Timeout { ms: 5 }).get_details_retry_info().is_none());
        assert_eq!(code_name(Code::NotFound as u16), "NOT_FOUND");
        assert_eq!(code_name(Code::Unauthenticated as u16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}
