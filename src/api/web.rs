//! Pages served beside the admin API, embedded in the binary (a browser loads nothing from
//! anywhere else):
//!
//! - `/phone`: the browser softphone (JsSIP over the server's SIP WebSocket, WebRTC audio);
//!   its script is bundled at build time (`web/build.sh`).
//! - `/console`: the web console, plain JavaScript over the admin API (sign in with a tenant
//!   key): users and registrations, IVR menus as an editable tree, voicemail playable in the
//!   page, call log with filters and quality, live calls, node health.

use super::ApiState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

const PHONE_HTML: &str = include_str!("../../web/phone/index.html");
const PHONE_JS: &str = include_str!("../../web/dist/phone.js");
const LICENSES: &str = include_str!("../../web/dist/THIRD-PARTY-LICENSES.txt");
const CONSOLE_HTML: &str = include_str!("../../web/console/index.html");
const CONSOLE_JS: &str = include_str!("../../web/console/console.js");
const CONSOLE_CSS: &str = include_str!("../../web/console/console.css");
/// The pages talk only to their own origin (and the phone to the SIP WebSocket).
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'";

/// Defaults the phone page fills its form with.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhoneDefaults {
    /// `ws://host:port` or `wss://host:port` of the SIP WebSocket listener (wss preferred).
    pub ws_url: Option<String>,
    /// SIP domain to register to (the public address: the default tenant answers it).
    pub domain: String,
}

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/phone", get(|| async { Redirect::permanent("/phone/") }))
        .route("/phone/", get(phone_page))
        .route("/phone/phone.js", get(phone_js))
        .route("/phone/config.json", get(phone_config))
        .route("/phone/licenses.txt", get(licenses))
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { html(CONSOLE_HTML) }))
        .route(
            "/console/console.js",
            get(|| async { page("text/javascript; charset=utf-8", CONSOLE_JS) }),
        )
        .route(
            "/console/console.css",
            get(|| async { page("text/css; charset=utf-8", CONSOLE_CSS) }),
        )
}

fn html(body: &'static str) -> Response {
    let mut r = page("text/html; charset=utf-8", body);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    r
}

fn page(ct: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, ct),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn phone_page() -> Response {
    html(PHONE_HTML)
}

async fn phone_js() -> Response {
    page("text/javascript; charset=utf-8", PHONE_JS)
}

async fn licenses() -> Response {
    page("text/plain; charset=utf-8", LICENSES)
}

async fn phone_config(State(st): State<Arc<ApiState>>) -> Json<PhoneDefaults> {
    Json(
        st.phone_defaults
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default(),
    )
}
