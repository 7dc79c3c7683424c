//! `POST /admin/reload` (see [`crate::lifecycle`]), and who may call admin routes.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::AppState;
use crate::http::error::ApiError;
use crate::lifecycle::ReloadReport;

/// Reloads the configuration: new and changed model versions are loaded, warmed up and
/// golden-checked beside the ones serving, then swapped in at once; requests already accepted
/// finish on the versions they started with. Any failure keeps every model as it was (409).
/// With access control on it needs the `admin` scope; with it off, only a direct loopback
/// client (no `Forwarded`/`X-Forwarded-For`) may call it.
#[utoipa::path(
    post,
    path = "/admin/reload",
    tag = "admin",
    responses(
        (status = 200, description = "Reloaded, or nothing changed", body = ReloadReport),
        (status = 403, description = "Not allowed", body = crate::http::error::ErrorBody),
        (status = 409, description = "Refused: the models served are unchanged", body = crate::http::error::ErrorBody),
        (status = 503, description = "Models still loading", body = crate::http::error::ErrorBody),
    )
)]
pub async fn reload_route(State(state): State<AppState>) -> Result<Json<ReloadReport>, ApiError> {
    Ok(Json(state.lifecycle().reload("api").await?))
}

/// Headers a proxy adds (nginx's `proxy_pass` adds none by default, so this is a second
/// line, not the first: behind a proxy, turn access control on).
const PROXY_HEADERS: [&str; 6] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip", "via"];

/// With access control off, admin routes answer only a direct loopback client: one that is
/// neither remote nor behind a proxy (which says so with one of [`PROXY_HEADERS`]).
/// With it on, the `admin` scope is checked instead (see `http::router`).
pub async fn local_only(request: Request, next: Next) -> Response {
    if !is_local(&request) {
        return ApiError::AdminNotLocal.into_response();
    }
    next.run(request).await
}

/// A direct loopback client: not remote, and not behind a proxy.
pub fn is_local(request: &Request) -> bool {
    let headers = request.headers();
    let proxied = PROXY_HEADERS.iter().any(|h| headers.contains_key(*h));
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>();
    let loopback = peer.is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback());
    loopback && !proxied
}
