//! Call logs and recordings of a tenant.
//!
//! Call logs: query by time range, number, user, direction and disposition, newest first, with
//! cursor pagination; one record by id; aggregates (calls per day, answer rate, average
//! duration and MOS, calls per user). Recordings: list, download, delete.
//!
//! Call logs and recording metadata come from the history store, with filters, aggregates
//! and pagination done in SQL; recording audio streams from the node's copy while it waits
//! in the spool, else from blob storage (Range requests work). A record reaches the history
//! store within milliseconds of the call's end while the store answers; while it does not,
//! these routes answer 503 and the spool keeps every record.

use super::audio::{self, AudioSource};
use super::error::Problem;
use super::page::{
    bad_cursor, check_limit, invalid, page_type, query_problem, PageParams, PageQuery,
};
use super::ApiState;
use super::Key;
use crate::blob::recording_key;
use crate::call::cdr::{CallRecord, Direction, Disposition};
use crate::history::{AuditEntry, CallCursor, CallFilter, CallStats, Recording};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/call-logs", get(list_call_logs))
        .route("/v1/tenants/{tenant}/call-logs/stats", get(call_stats))
        .route("/v1/tenants/{tenant}/call-logs/{id}", get(get_call_log))
        .route("/v1/tenants/{tenant}/recordings", get(list_recordings))
        .route("/v1/tenants/{tenant}/audit", get(audit_log))
        .route(
            "/v1/tenants/{tenant}/recordings/{name}",
            get(get_recording).delete(delete_recording),
        )
}

/// Call log filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CallLogQuery {
    /// Calls that started at or after this unix second.
    #[param(minimum = 0)]
    pub from: Option<i64>,
    /// Calls that started before this unix second.
    #[param(minimum = 0)]
    pub to: Option<i64>,
    /// Calls from or to this number or extension.
    pub number: Option<String>,
    /// Calls made by this user (extension).
    pub user: Option<String>,
    /// `inbound`, `outbound` or `internal`.
    pub direction: Option<Direction>,
    /// `answered`, `no_answer`, `busy`, `cancelled`, `rejected` or `failed`.
    pub disposition: Option<Disposition>,
    /// Page size, 1-500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (`START:ID`); empty is the first page.
    #[param(pattern = "^([0-9]{1,15}:.*)?$")]
    pub cursor: Option<String>,
}

page_type! {
    /// One page of recordings.
    RecordingPage of Recording,
    items: "Recordings, newest first.",
    cursor: "`next_cursor` of the previous page (`CREATED:NAME`); empty is the first page.",
    pattern: Some("^([0-9]{1,15}:.*)?$"),
}

page_type! {
    /// One page of call logs.
    CallLogPage of CallRecord,
    items: "Records, newest first.",
    cursor: "`next_cursor` of the previous page (`START:ID`); empty is the first page.",
    pattern: Some("^([0-9]{1,15}:.*)?$"),
}

/// The call log query's parameters.
const CALL_LOG_FIELDS: &[&str] = &[
    "from",
    "to",
    "number",
    "user",
    "direction",
    "disposition",
    "limit",
    "cursor",
];

/// Checks what the query types cannot say: unix times are not negative, 1 ≤ limit ≤ 500.
fn check(q: &CallLogQuery) -> Result<(), Problem> {
    for (name, v) in [("from", q.from), ("to", q.to)] {
        if v.is_some_and(|v| v < 0) {
            return Err(invalid(name, "must be a unix time (0 or more)"));
        }
    }
    check_limit(q.limit)
}

/// The cursor parameter: None for the first page, 422 when it is not one of ours.
fn cursor(c: Option<&str>) -> Result<Option<CallCursor>, Problem> {
    match c.filter(|c| !c.is_empty()) {
        None => Ok(None),
        Some(c) => CallCursor::decode(c)
            .filter(|c| c.start_unix < 1_000_000_000_000_000)
            .map(Some)
            .ok_or_else(bad_cursor),
    }
}

fn filter(q: &CallLogQuery) -> CallFilter {
    CallFilter {
        from: q.from,
        to: q.to,
        number: q.number.clone(),
        user: q.user.clone(),
        direction: q.direction,
        disposition: q.disposition,
    }
}

fn access(st: &ApiState, key: &Key, tenant: &str, write: bool) -> Result<(), Problem> {
    key.tenant(tenant, write)?;
    if st.store.snapshot().tenant(tenant).is_none() {
        return Err(Problem::not_found("tenant"));
    }
    Ok(())
}

/// A tenant's call logs, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs", params(("tenant" = String, Path), CallLogQuery),
    responses((status = 200, body = CallLogPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_call_logs(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<CallLogQuery>, QueryRejection>,
) -> Result<Json<CallLogPage>, Problem> {
    access(&st, &key, &tenant, false)?;
    let Query(q) = query.map_err(|e| query_problem(e, CALL_LOG_FIELDS))?;
    let limit = q.limit.unwrap_or(100);
    check(&q)?;
    let after = cursor(q.cursor.as_deref())?;
    let stores = st.stores()?;
    let mut items = stores
        .history
        .calls(&tenant, &filter(&q), after.as_ref(), limit + 1)
        .await?;
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items
            .last()
            .map(|r| CallCursor::after(r).encode())
            .unwrap_or_default()
    });
    Ok(Json(CallLogPage { items, next_cursor }))
}

/// One call log.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs/{id}", params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = CallRecord), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn get_call_log(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<CallRecord>, Problem> {
    access(&st, &key, &tenant, false)?;
    st.stores()?
        .history
        .call(&tenant, &id)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("call log"))
}

/// Aggregates over a tenant's calls (same filters as the list; `limit`/`cursor` are ignored).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs/stats", params(("tenant" = String, Path), CallLogQuery),
    responses((status = 200, body = CallStats), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn call_stats(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<CallLogQuery>, QueryRejection>,
) -> Result<Json<CallStats>, Problem> {
    access(&st, &key, &tenant, false)?;
    let Query(q) = query.map_err(|e| query_problem(e, CALL_LOG_FIELDS))?;
    check(&q)?;
    // Ignored here, but held to the same form as in the list.
    cursor(q.cursor.as_deref())?;
    Ok(Json(
        st.stores()?
            .history
            .call_stats(&tenant, &filter(&q))
            .await?,
    ))
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".wav")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A tenant's call recordings, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/recordings", params(("tenant" = String, Path), PageParams<RecordingPage>),
    responses((status = 200, body = RecordingPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_recordings(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<RecordingPage>, Problem> {
    access(&st, &key, &tenant, false)?;
    let q = PageQuery::from_query(query)?;
    let limit = q.limit.unwrap_or(100);
    let after = cursor(q.cursor.as_deref())?;
    let mut items = st
        .stores()?
        .history
        .recordings_page(&tenant, after.as_ref(), limit + 1)
        .await?;
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items
            .last()
            .map(|r| {
                CallCursor {
                    start_unix: r.created_unix as i64,
                    id: r.name.clone(),
                }
                .encode()
            })
            .unwrap_or_default()
    });
    Ok(Json(RecordingPage { items, next_cursor }))
}

/// A recording's audio (stereo WAV: the caller left, the other party right). Range requests
/// work (206, 416).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/recordings/{name}", params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 206, content_type = "audio/wav", body = Vec<u8>), (status = 401, body = Problem), (status = 404, body = Problem), (status = 416, body = Problem)))]
pub(super) async fn get_recording(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, Problem> {
    access(&st, &key, &tenant, false)?;
    if !safe_name(&name) {
        return Err(Problem::not_found("recording"));
    }
    let stores = st.stores()?;
    if stores.history.recording(&tenant, &name).await?.is_none() {
        return Err(Problem::not_found("recording"));
    }
    let src = AudioSource {
        local: Some(st.services.recordings_dir.join(&tenant).join(&name)),
        blob: Some((&stores.blobs, recording_key(&tenant, &name))),
    };
    audio::serve(&headers, &name, "recording", src).await
}

/// Delete a recording (metadata and audio).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/recordings/{name}", params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn delete_recording(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    access(&st, &key, &tenant, true)?;
    if !safe_name(&name) {
        return Err(Problem::not_found("recording"));
    }
    let stores = st.stores()?;
    if stores.history.recording(&tenant, &name).await?.is_none() {
        return Err(Problem::not_found("recording"));
    }
    let local = st.services.recordings_dir.join(&tenant).join(&name);
    stores.delete_recording(&tenant, &name, Some(local)).await;
    tracing::info!(%tenant, %name, "recording deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// Audit log paging.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Most entries, 1-500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// The newest audit entries.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries, newest first.
    pub items: Vec<AuditEntry>,
}

/// A tenant's audit log: every change made through the API under the tenant (who, what,
/// the outcome), newest first. A tenant's own keys may read it.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/audit", params(("tenant" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn audit_log(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<AuditPage>, Problem> {
    access(&st, &key, &tenant, false)?;
    let Query(q) = query.map_err(|e| query_problem(e, &["limit"]))?;
    check_limit(q.limit)?;
    let items = st
        .stores()?
        .history
        .audit(&tenant, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(AuditPage { items }))
}
