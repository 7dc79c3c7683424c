//! Why a prediction was not made, with no wire format in sight: each wire format maps these
//! to its own statuses (HTTP in `http::error`).

use crate::decode::DecodeError;
use crate::observe::Outcome;
use crate::registry::RouteError;

/// Why a request's payload could not be received.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("{}", media_type_message(.got))]
    UnsupportedMediaType { got: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    #[error("the request body was not received within {ms} ms")]
    Timeout { ms: u64 },
    /// The budget of bytes in flight stayed full until the deadline.
    #[error("too many request bodies are being received; retry shortly")]
    BudgetFull,
}

/// What a client sent the wrong content type reads: what to send instead, and how with curl,
/// whose `-d` sends a form encoding unless told otherwise.
pub fn media_type_message(got: &str) -> String {
    format!(
        "the body must be JSON, but its content-type is `{got}`: send `content-type: application/json` \
         (with curl: -H 'content-type: application/json'), or no content-type"
    )
}

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("models are still loading")]
    NotReady,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the queue of model '{model}' is full ({queued} of {capacity} rows waiting); retry shortly")]
    Overloaded { model: String, queued: usize, capacity: usize },
    #[error("{rows} instances can never fit the queue of model '{model}' ({capacity} rows)")]
    NeverFits { model: String, rows: usize, capacity: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("no working inference session for: {}", .0.join(", "))]
    ModelsDown(Vec<String>),
    #[error("the prediction took longer than the limit of {ms} ms")]
    Timeout { ms: u64 },
    /// Rows that pass the schema but that the graph refuses; ONNX Runtime's message, cut short.
    #[error("the model could not run on these instances: {0}")]
    ModelRejected(String),
    /// Lossless prediction logging could not take the prediction's lines before its deadline:
    /// it is not answered, so not lost.
    #[error("the prediction log is not keeping up (its disk or database is slow or not responding); retry shortly")]
    PredictionLogUnavailable,
    /// A fault of ours; the cause is logged by whoever answers, never sent.
    #[error("internal error")]
    Internal(String),
}

impl PredictError {
    /// The outcome the model's request metrics count it under: the client's fault, too much
    /// load (or not now), out of time, or ours.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Route(RouteError::ModelUnloaded(_)) => Outcome::Overloaded,
            Self::Route(_) | Self::Decode(_) | Self::NeverFits { .. } | Self::ModelRejected(_) => Outcome::Invalid,
            Self::Body(BodyError::BudgetFull) => Outcome::Overloaded,
            Self::Body(_) => Outcome::Invalid,
            Self::NotReady
            | Self::Overloaded { .. }
            | Self::ShuttingDown
            | Self::ModelsDown(_)
            | Self::PredictionLogUnavailable => Outcome::Overloaded,
            Self::Timeout { .. } => Outcome::Timeout,
            Self::Internal(_) => Outcome::Error,
        }
    }
}
