//! Pages served beside the admin API: the browser softphone at `/phone` (JsSIP over the
//! server's SIP WebSocket, WebRTC audio). Its script is bundled at build time
//! (`web/build.sh`) and embedded in the binary: a browser loads nothing from anywhere else.

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
    let mut r = page("text/html; charset=utf-8", PHONE_HTML);
    // The page talks only to its own origin and the SIP WebSocket.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: mediastream:; style-src 'self' 'unsafe-inline'",
        ),
    );
    r
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
