//! A tenant's own prompts: upload (`PUT` the audio: a WAV file in any common encoding, or raw
//! 8 kHz µ-law/A-law), converted once to the engine's format and stored on the node and in
//! blob storage; list with where each is used; download (Range requests work); delete,
//! refused while the tenant's document uses the prompt (the 409 lists every path).
//!
//! A new prompt is playable at once: name it in an IVR's `prompts` (bare name, no
//! `system/`), a mailbox `greeting` or a `prompt_loop` target.

use super::audio::{self, AudioSource};
use super::error::{FieldError, Problem};
use super::page::{page_type, PageParams, PageQuery, Paging};
use super::Key;
use super::{load_tenant, ApiState};
use crate::promptstore::{
    self, convert, references, PromptInfo, PromptStoreError, UploadFormat, MAX_UPLOAD_BYTES,
};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/prompts", get(list_prompts))
        .route(
            "/v1/tenants/{tenant}/prompts/{name}",
            get(get_prompt)
                .put(put_prompt)
                .delete(delete_prompt)
                // Audio is bigger than JSON documents: the upload limit is the prompt's own.
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
}

/// A prompt and where the tenant's document uses it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct PromptListItem {
    /// Name (what tenant documents use).
    pub name: String,
    /// Length.
    pub duration_ms: u64,
    /// Bytes of the stored 8 kHz mono 16-bit WAV.
    pub size_bytes: u64,
    /// Paths in the tenant document that name it (`ivrs.main.prompts.0`).
    pub used_by: Vec<String>,
}

page_type! {
    /// One page of prompts.
    PromptPage of PromptListItem,
    items: "Prompts, by name.",
    cursor: "`next_cursor` of the previous page (prompts after this name); empty is the first page.",
    pattern: None,
}

fn access(
    st: &ApiState,
    key: &Key,
    tenant: &str,
    write: bool,
) -> Result<crate::tenant::TenantConfig, Problem> {
    key.tenant(tenant, write)?;
    load_tenant(st, tenant)
}

fn problem(e: PromptStoreError) -> Problem {
    let field = |status: StatusCode, kind: &str, path: &str, msg: String| {
        let mut p = Problem::new(status, kind, msg.clone());
        p.errors.push(FieldError {
            path: path.into(),
            message: msg,
        });
        p
    };
    match e {
        PromptStoreError::NotFound => Problem::not_found("prompt"),
        PromptStoreError::BadName => field(
            StatusCode::NOT_FOUND,
            "not-found",
            "name",
            PromptStoreError::BadName.to_string(),
        ),
        PromptStoreError::BadAudio(m) => {
            field(StatusCode::UNPROCESSABLE_ENTITY, "invalid-audio", "body", m)
        }
        PromptStoreError::BadLength(m) => {
            field(StatusCode::UNPROCESSABLE_ENTITY, "invalid-audio", "body", m)
        }
        PromptStoreError::Io(e) => {
            tracing::error!(error = %e, "prompt store");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "prompt-store",
                "the prompt store is unavailable",
            )
        }
    }
}

/// A tenant's prompts, by name, with where each is used.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/prompts", params(("tenant" = String, Path), PageParams<PromptPage>),
    responses((status = 200, body = PromptPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_prompts(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<PromptPage>, Problem> {
    let cfg = access(&st, &key, &tenant, false)?;
    let paging = Paging::from_query(query)?;
    let list = st.services.prompts.list(&tenant).map_err(problem)?;
    let (list, next_cursor) = paging.page(list, |p| p.name.clone());
    let items = list
        .into_iter()
        .map(|p| PromptListItem {
            used_by: references(&cfg, &p.name),
            name: p.name,
            duration_ms: p.duration_ms,
            size_bytes: p.size_bytes,
        })
        .collect();
    Ok(Json(PromptPage { items, next_cursor }))
}

/// Upload a prompt (creates or replaces it). The body is the audio: `audio/wav` (PCM 8-32
/// bit, float, µ-law or A-law; any rate from 4 kHz; mono or stereo, mixed down), or raw
/// 8 kHz `audio/basic` / `audio/PCMU` (µ-law) or `audio/PCMA` (A-law); at most 20 MiB and
/// 600 s, at least 100 ms. Stored as 8 kHz mono 16-bit PCM.
#[utoipa::path(put, path = "/v1/tenants/{tenant}/prompts/{name}",
    params(("tenant" = String, Path), ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")),
    request_body(content((Vec<u8> = "audio/wav"), (Vec<u8> = "audio/basic"), (Vec<u8> = "audio/PCMA"))),
    responses((status = 200, body = PromptInfo, description = "Replaced"), (status = 201, body = PromptInfo, description = "Created"),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 413, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn put_prompt(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    access(&st, &key, &tenant, true)?;
    if !promptstore::valid_name(&name) {
        return Err(problem(PromptStoreError::BadName));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(format) = UploadFormat::from_content_type(ct) else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-audio-type",
            "send audio/wav, audio/basic (8 kHz µ-law) or audio/PCMA (8 kHz A-law)",
        ));
    };
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("prompts may be up to {MAX_UPLOAD_BYTES} bytes"),
            )
        } else {
            Problem::new(StatusCode::BAD_REQUEST, "invalid-body", e.body_text())
        }
    })?;
    // In a cluster an upload that the other nodes would not hear of is refused up front.
    if let Some(shared) = st.shared_prompts() {
        shared.check_available().await?;
    }
    // Decoding and resampling a long file is CPU work: off the async threads.
    let wav = tokio::task::spawn_blocking(move || convert(&body, format))
        .await
        .map_err(|_| {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "prompt-store",
                "conversion failed",
            )
        })?
        .map_err(problem)?;
    let (info, replaced) = st
        .services
        .prompts
        .put(&tenant, &name, &wav)
        .map_err(problem)?;
    tracing::info!(%tenant, prompt = %name, duration_ms = info.duration_ms, replaced, "prompt uploaded");
    if let Some(shared) = st.shared_prompts() {
        shared.uploaded(&tenant, &name).await?;
    }
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(info)).into_response())
}

/// A prompt's audio (8 kHz mono 16-bit WAV). Range requests work (206, 416).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/prompts/{name}",
    params(("tenant" = String, Path), ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 206, content_type = "audio/wav", body = Vec<u8>), (status = 401, body = Problem), (status = 404, body = Problem), (status = 416, body = Problem)))]
pub(super) async fn get_prompt(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, Problem> {
    access(&st, &key, &tenant, false)?;
    // The node's copy is the prompt (every node fetches what it lacks from blob storage): a
    // deleted prompt whose blob delete still waits in the spool is gone.
    let local = st.services.prompts.path(&tenant, &name).map_err(problem)?;
    let src = AudioSource {
        local: Some(local),
        blob: None,
    };
    audio::serve(&headers, &format!("{name}.wav"), "prompt", src).await
}

/// Delete a prompt; refused (409, with every path that names it) while the tenant's document
/// uses it.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/prompts/{name}",
    params(("tenant" = String, Path), ("name" = String, Path, pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(super) async fn delete_prompt(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let cfg = access(&st, &key, &tenant, true)?;
    st.services.prompts.get(&tenant, &name).map_err(problem)?;
    let used = references(&cfg, &name);
    if !used.is_empty() {
        let mut p = Problem::new(
            StatusCode::CONFLICT,
            "prompt-in-use",
            format!("prompt {name} is used by {}", used.join(", ")),
        );
        p.errors = used
            .into_iter()
            .map(|path| FieldError {
                path,
                message: format!("uses prompt {name}"),
            })
            .collect();
        return Err(p);
    }
    if let Some(shared) = st.shared_prompts() {
        shared.check_available().await?;
    }
    st.services
        .prompts
        .delete(&tenant, &name)
        .map_err(problem)?;
    tracing::info!(%tenant, prompt = %name, "prompt deleted");
    if let Some(shared) = st.shared_prompts() {
        shared.deleted(&tenant, &name).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
