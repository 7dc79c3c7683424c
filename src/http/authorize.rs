//! The scope each route needs, checked before its handler runs, and so before its body is read.
//! Installed only when auth is on: an open server has no such layer at all.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::Caller;
use crate::auth::{Authenticator, Failure, Principal, Scope};
use crate::http::error::ApiError;

/// The state of one route group's layer: what its routes need.
#[derive(Clone)]
pub struct Needs {
    pub state: AppState,
    pub scope: Scope,
    pub auth: Arc<Authenticator>,
}

pub async fn authorize(State(needs): State<Needs>, mut request: Request, next: Next) -> Response {
    match check(&needs, request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller.clone());
            let mut response = next.run(request).await;
            response.extensions_mut().insert(caller);
            response
        }
        Err((failure, caller)) => {
            needs.state.metrics().auth_failure(failure.reason());
            let mut response = to_error(failure).into_response();
            if let Some(caller) = caller {
                response.extensions_mut().insert(caller);
            }
            response
        }
    }
}

/// The caller, or why not (with who it was, once known).
pub fn check(needs: &Needs, headers: &HeaderMap) -> Result<Caller, (Failure, Option<Caller>)> {
    // `INFERD_METRICS_TOKEN` keeps working for scrapers when auth is on.
    if needs.scope == Scope::Metrics && super::scrape::token_sent(&needs.state, headers) {
        return Ok(Caller { name: "metrics-token".into(), kind: "metrics_token" });
    }
    let principal: Principal = needs.auth.authenticate(headers).map_err(|f| (f, None))?;
    let caller = Caller { name: principal.name.clone(), kind: principal.kind };
    if !principal.scopes.contains(needs.scope) {
        return Err((Failure::Forbidden(needs.scope), Some(caller)));
    }
    needs.auth.admit(&principal).map_err(|f| (f, Some(caller.clone())))?;
    Ok(caller)
}

pub fn to_error(failure: Failure) -> ApiError {
    match failure {
        Failure::Forbidden(scope) => ApiError::Forbidden(scope.as_str()),
        Failure::RateLimited { principal, retry_after } => ApiError::RateLimited {
            principal: principal.to_string(),
            retry_after_seconds: retry_after.as_secs_f64().ceil().max(1.0) as u32,
        },
        Failure::Missing | Failure::Malformed => {
            ApiError::Unauthenticated { message: failure.message(), invalid: false }
        }
        other => ApiError::Unauthenticated { message: other.message(), invalid: true },
    }
}
