//! CORS (`[cors]`): the headers checked over plain HTTP here; a real browser in `browser`
//! (Chromium, so behind the `external-tools` feature).

use axum::http::HeaderMap;
use inferd::config::{Config, CorsConfig};
use serde_json::{json, Value};

use crate::helpers::{assert_error, schema_example, test_config, TestApp};

#[cfg(feature = "external-tools")]
mod browser;

/// An origin that is never the one a test's request or page comes from.
const OTHER_ORIGIN: &str = "http://127.0.0.1:1";
const APP_ORIGIN: &str = "http://127.0.0.1:8000";

fn cors(origins: &[&str]) -> CorsConfig {
    CorsConfig { allow_origins: origins.iter().map(|o| o.to_string()).collect(), ..Default::default() }
}

fn config_with(cors: Option<CorsConfig>) -> Config {
    let mut config = test_config();
    config.cors = cors;
    config.check().expect("valid config");
    config
}

/// Every value of a header, joined with ", ", lower-cased; "" when absent.
fn header_values(headers: &HeaderMap, name: &str) -> String {
    headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_ascii_lowercase()).collect::<Vec<_>>().join(", ")
}

fn listed(headers: &HeaderMap, name: &str) -> Vec<String> {
    header_values(headers, name).split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers.keys().map(|k| k.as_str().to_owned()).filter(|k| k.starts_with("access-control-")).collect()
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type,x-request-id")
        .send()
        .await
        .expect("request sent")
}

async fn post_from(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .post(app.url("/predict"))
        .header("origin", origin)
        .json(&json!({"instances": [schema_example("house_price")]}))
        .send()
        .await
        .expect("request sent")
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_204_with_the_cors_headers() {
    let mut cors = cors(&[OTHER_ORIGIN, APP_ORIGIN]);
    cors.max_age_seconds = 120;
    let app = TestApp::spawn_with(config_with(Some(cors))).await;
    for path in ["/predict", "/models/house_price/predict", "/v2/models/house_price/infer"] {
        let response = preflight(&app, path, APP_ORIGIN).await;
        assert_eq!(response.status(), 204, "{path}: a preflight is answered 204");
        let h = response.headers();
        assert_eq!(header_values(h, "access-control-allow-origin"), APP_ORIGIN.to_ascii_lowercase(), "{path}: {h:?}");
        let methods = listed(h, "access-control-allow-methods");
        assert!(methods.contains(&"post".into()) && methods.contains(&"get".into()), "{path}: {h:?}");
        let allowed = listed(h, "access-control-allow-headers");
        for name in ["content-type", "x-request-id", "x-api-key", "authorization"] {
            assert!(allowed.contains(&name.into()), "{path}: {name} is allowed by default: {h:?}");
        }
        assert_eq!(header_values(h, "access-control-max-age"), "120", "{path}: max_age_seconds: {h:?}");
        assert!(listed(h, "vary").contains(&"origin".into()), "{path}: vary: origin: {h:?}");
        assert!(h.get("access-control-allow-credentials").is_none(), "{path}: credentials not allowed: {h:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers_at_all() {
    let app = TestApp::spawn_with(config_with(Some(cors(&[APP_ORIGIN])))).await;
    for origin in [OTHER_ORIGIN, "http://127.0.0.1:8000.evil.example", "null", "http://localhost:8000"] {
        let response = preflight(&app, "/predict", origin).await;
        assert_eq!(response.status(), 204, "{origin}: the preflight is still answered 204 (the browser then blocks)");
        assert_eq!(cors_headers(response.headers()), Vec::<String>::new(), "{origin}: {:?}", response.headers());

        let response = post_from(&app, origin).await;
        assert_eq!(response.status(), 200, "{origin}: the call itself is served (CORS is the browser's to enforce)");
        assert_eq!(cors_headers(response.headers()), Vec::<String>::new(), "{origin}: {:?}", response.headers());
    }
    app.stop().await;
}

#[tokio::test]
async fn answers_to_an_allowed_origin_carry_allow_origin_and_expose_headers() {
    let app = TestApp::spawn_with(config_with(Some(cors(&[APP_ORIGIN])))).await;
    let response = post_from(&app, APP_ORIGIN).await;
    assert_eq!(response.status(), 200);
    let h = response.headers().clone();
    assert_eq!(header_values(&h, "access-control-allow-origin"), APP_ORIGIN, "{h:?}");
    let exposed = listed(&h, "access-control-expose-headers");
    assert!(exposed.contains(&"x-request-id".into()) && exposed.contains(&"retry-after".into()), "{h:?}");
    assert!(listed(&h, "vary").contains(&"origin".into()), "{h:?}");
    let body: Value = response.json().await.unwrap();
    assert!(body["predictions"][0]["price"].as_f64().is_some(), "{body}");

    // Error answers too, so that a page can read them.
    let response = app
        .client
        .post(app.url("/predict"))
        .header("origin", APP_ORIGIN)
        .json(&json!({"instances": [{"lotsize": -1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        header_values(response.headers(), "access-control-allow-origin"),
        APP_ORIGIN,
        "{:?}",
        response.headers()
    );
    assert_error(response, 422, "validation_error").await;

    // Every route's answers, not only the predict routes'.
    let response = app.client.get(app.url("/health")).header("origin", APP_ORIGIN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        header_values(response.headers(), "access-control-allow-origin"),
        APP_ORIGIN,
        "{:?}",
        response.headers()
    );
    app.stop().await;
}

#[tokio::test]
async fn without_a_cors_table_nothing_changes() {
    let app = TestApp::spawn_with(config_with(None)).await;
    let response = preflight(&app, "/predict", APP_ORIGIN).await;
    assert_error(response, 405, "method_not_allowed").await;
    let response = post_from(&app, APP_ORIGIN).await;
    assert_eq!(response.status(), 200);
    assert_eq!(cors_headers(response.headers()), Vec::<String>::new(), "{:?}", response.headers());
    app.stop().await;
}

#[tokio::test]
async fn any_origin_is_answered_with_a_star() {
    let app = TestApp::spawn_with(config_with(Some(cors(&["*"])))).await;
    let response = preflight(&app, "/predict", "http://anything.example:3000").await;
    assert_eq!(response.status(), 204);
    assert_eq!(header_values(response.headers(), "access-control-allow-origin"), "*", "{:?}", response.headers());
    let response = post_from(&app, "http://anything.example:3000").await;
    assert_eq!(response.status(), 200);
    assert_eq!(header_values(response.headers(), "access-control-allow-origin"), "*", "{:?}", response.headers());
    app.stop().await;
}

#[test]
fn any_origin_with_credentials_is_refused_at_start() {
    let mut config = test_config();
    config.cors = Some(CorsConfig { allow_credentials: true, ..cors(&["*"]) });
    let error = config.check().expect_err("[\"*\"] with allow_credentials is refused").to_string();
    assert!(error.contains("allow_credentials") && error.contains("cors"), "{error}");

    config.cors = Some(CorsConfig { allow_credentials: true, ..cors(&[APP_ORIGIN]) });
    config.check().expect("listed origins may allow credentials");

    // The same from runtime.toml.
    let base = std::fs::read_to_string(crate::helpers::repo().join("runtime.toml")).unwrap();
    let load = |credentials: bool| {
        let text = format!("{base}\n[cors]\nallow_origins = [\"*\"]\nallow_credentials = {credentials}\n");
        Config::from_toml(&text, &crate::helpers::repo()).and_then(|c| c.check().map(|()| c))
    };
    let config = load(false).expect("[cors] with allow_origins = [\"*\"] alone is valid");
    assert!(config.cors.as_ref().is_some_and(|c| c.any_origin() && c.max_age_seconds == 600));
    let error = load(true).expect_err("[\"*\"] with allow_credentials is refused").to_string();
    assert!(error.contains("allow_credentials"), "{error}");
}
