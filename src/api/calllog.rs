//! Call logs and recordings of a tenant.
//!
//! Call logs: query by time range, number, user, direction and disposition, newest first, with
//! cursor pagination; one record by id; aggregates (calls per day, answer rate, average
//! duration and MOS, calls per user). Recordings: list, download, delete.
//!
//! Until the history and blob stores land these read what the node has locally (the call
//! record spool and the recordings folder), scanning it per request; the API shape is final.

use super::error::{FieldError, Problem};
use super::{authenticate, authorize, ApiState};
use crate::call::cdr::{CallRecord, CdrSpool, Direction, Disposition};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/v1/tenants/{tenant}/call-logs", get(list_call_logs))
        .route("/v1/tenants/{tenant}/call-logs/stats", get(call_stats))
        .route("/v1/tenants/{tenant}/call-logs/{id}", get(get_call_log))
        .route("/v1/tenants/{tenant}/recordings", get(list_recordings))
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
    /// `next_cursor` of the previous page: records after it in the list's order (any string
    /// is a position in that order; an empty one is the start).
    pub cursor: Option<String>,
}

/// One page of call logs.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallLogPage {
    /// Records, newest first.
    pub items: Vec<CallRecord>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Calls and answers on one day (UTC).
#[derive(Serialize, utoipa::ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Calls.
    pub calls: u64,
    /// Answered calls.
    pub answered: u64,
}

/// Calls made by one user.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserCount {
    /// Extension.
    pub user: String,
    /// Calls made.
    pub calls: u64,
}

/// Aggregates over the selected calls.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CallStats {
    /// Calls.
    pub calls: u64,
    /// Answered calls.
    pub answered: u64,
    /// Answered / calls (answer-seizure ratio), 0-1.
    pub answer_rate: f64,
    /// Average billed seconds of answered calls.
    pub average_duration_secs: f64,
    /// Average MOS of calls with media.
    pub average_mos: Option<f64>,
    /// Per day (UTC).
    pub per_day: Vec<DayCount>,
    /// Per calling user.
    pub per_user: Vec<UserCount>,
}

/// A call recording.
#[derive(Serialize, utoipa::ToSchema)]
pub struct RecordingInfo {
    /// File name (the id in the URL).
    pub name: String,
    /// Bytes.
    pub size_bytes: u64,
    /// Audio length (stereo 16-bit 8 kHz WAV).
    pub duration_ms: u64,
}

fn query_problem(e: QueryRejection) -> Problem {
    let mut p = Problem::new(StatusCode::BAD_REQUEST, "invalid-query", e.body_text());
    let text = e.body_text();
    // serde names the parameter at fault: "...: unknown variant `x` ... for `direction`".
    if let Some(field) = [
        "from",
        "to",
        "number",
        "user",
        "direction",
        "disposition",
        "limit",
        "cursor",
    ]
    .iter()
    .find(|f| text.contains(&format!("`{f}`")) || text.contains(&format!("{f}:")))
    {
        p.errors.push(FieldError {
            path: (*field).to_string(),
            message: text.clone(),
        });
    }
    p
}

fn invalid(field: &str, message: &str) -> Problem {
    let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-query", message);
    p.errors.push(FieldError {
        path: field.into(),
        message: message.into(),
    });
    p
}

/// Checks what the query types cannot say: unix times are not negative, 1 ≤ limit ≤ 500.
fn check(q: &CallLogQuery) -> Result<(), Problem> {
    for (name, v) in [("from", q.from), ("to", q.to)] {
        if v.is_some_and(|v| v < 0) {
            return Err(invalid(name, "must be a unix time (0 or more)"));
        }
    }
    if q.limit.is_some_and(|l| !(1..=500).contains(&l)) {
        return Err(invalid("limit", "must be 1-500"));
    }
    Ok(())
}

fn access(
    st: &ApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
    tenant: &str,
    write: bool,
) -> Result<(), Problem> {
    let p = authenticate(st, headers, peer.ip())?;
    authorize(&p, tenant, write)?;
    if st.store.snapshot().tenant(tenant).is_none() {
        return Err(Problem::not_found("tenant"));
    }
    Ok(())
}

/// The tenant's records matching `q` (time range, number, user, direction, disposition).
async fn matching(st: &ApiState, tenant: &str, q: &CallLogQuery) -> Vec<CallRecord> {
    let dir = st.services.cdr_dir.clone();
    let all = tokio::task::spawn_blocking(move || CdrSpool::read_all(&dir))
        .await
        .unwrap_or_default();
    all.into_iter()
        .filter(|r| r.tenant == tenant)
        .filter(|r| q.from.is_none_or(|f| r.start_unix as i64 >= f))
        .filter(|r| q.to.is_none_or(|t| (r.start_unix as i64) < t))
        .filter(|r| q.number.as_deref().is_none_or(|n| r.from == n || r.to == n))
        .filter(|r| {
            q.user
                .as_deref()
                .is_none_or(|u| r.from_user.as_deref() == Some(u))
        })
        .filter(|r| q.direction.is_none_or(|d| r.direction == d))
        .filter(|r| q.disposition.is_none_or(|d| r.disposition == d))
        .collect()
}

/// A record's position in the list's order (newest first): its start time, zero-padded, and
/// its id. The cursor is the position of the last record of a page.
fn sort_key(r: &CallRecord) -> String {
    format!("{:020}:{}", r.start_unix, r.id)
}

/// A tenant's call logs, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs", params(("tenant" = String, Path), CallLogQuery),
    responses((status = 200, body = CallLogPage), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_call_logs(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<CallLogQuery>, QueryRejection>,
) -> Result<Json<CallLogPage>, Problem> {
    access(&st, &headers, peer, &tenant, false)?;
    let Query(q) = query.map_err(query_problem)?;
    let limit = q.limit.unwrap_or(100);
    check(&q)?;
    let after = q.cursor.clone().filter(|c| !c.is_empty());
    let mut recs = matching(&st, &tenant, &q).await;
    recs.sort_by_key(|r| std::cmp::Reverse(sort_key(r)));
    let mut items: Vec<CallRecord> = recs
        .into_iter()
        .filter(|r| after.as_ref().is_none_or(|c| sort_key(r) < *c))
        .take(limit as usize + 1)
        .collect();
    let next_cursor = (items.len() > limit as usize).then(|| {
        items.truncate(limit as usize);
        items.last().map(sort_key).unwrap_or_default()
    });
    Ok(Json(CallLogPage { items, next_cursor }))
}

/// One call log.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs/{id}", params(("tenant" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = CallRecord), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn get_call_log(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Json<CallRecord>, Problem> {
    access(&st, &headers, peer, &tenant, false)?;
    matching(&st, &tenant, &CallLogQuery::default())
        .await
        .into_iter()
        .find(|r| r.id == id)
        .map(Json)
        .ok_or_else(|| Problem::not_found("call log"))
}

/// Aggregates over a tenant's calls (same filters as the list; `limit`/`cursor` are ignored).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/call-logs/stats", params(("tenant" = String, Path), CallLogQuery),
    responses((status = 200, body = CallStats), (status = 400, body = Problem), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn call_stats(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<CallLogQuery>, QueryRejection>,
) -> Result<Json<CallStats>, Problem> {
    access(&st, &headers, peer, &tenant, false)?;
    let Query(q) = query.map_err(query_problem)?;
    check(&q)?;
    let recs = matching(&st, &tenant, &q).await;
    let calls = recs.len() as u64;
    let answered: Vec<&CallRecord> = recs
        .iter()
        .filter(|r| r.disposition == Disposition::Answered)
        .collect();
    let mos: Vec<f64> = recs
        .iter()
        .filter_map(|r| r.quality.as_ref())
        .map(|q| q.mos)
        .collect();
    let mut days: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut users: BTreeMap<String, u64> = BTreeMap::new();
    for r in &recs {
        let day = jiff::Timestamp::from_second(r.start_unix as i64)
            .map(|t| t.strftime("%Y-%m-%d").to_string())
            .unwrap_or_default();
        let e = days.entry(day).or_default();
        e.0 += 1;
        e.1 += u64::from(r.disposition == Disposition::Answered);
        if let Some(u) = &r.from_user {
            *users.entry(u.clone()).or_default() += 1;
        }
    }
    Ok(Json(CallStats {
        calls,
        answered: answered.len() as u64,
        answer_rate: if calls == 0 {
            0.0
        } else {
            answered.len() as f64 / calls as f64
        },
        average_duration_secs: if answered.is_empty() {
            0.0
        } else {
            answered.iter().map(|r| r.billed_secs as f64).sum::<f64>() / answered.len() as f64
        },
        average_mos: (!mos.is_empty()).then(|| mos.iter().sum::<f64>() / mos.len() as f64),
        per_day: days
            .into_iter()
            .map(|(day, (calls, answered))| DayCount {
                day,
                calls,
                answered,
            })
            .collect(),
        per_user: users
            .into_iter()
            .map(|(user, calls)| UserCount { user, calls })
            .collect(),
    }))
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.ends_with(".wav")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A tenant's call recordings.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/recordings", params(("tenant" = String, Path)),
    responses((status = 200, body = [RecordingInfo]), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn list_recordings(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Vec<RecordingInfo>>, Problem> {
    access(&st, &headers, peer, &tenant, false)?;
    let dir = st.services.recordings_dir.join(&tenant);
    let list = tokio::task::spawn_blocking(move || {
        let mut out: Vec<RecordingInfo> = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let size = e.metadata().ok()?.len();
                        safe_name(&name).then(|| RecordingInfo {
                            name,
                            size_bytes: size,
                            duration_ms: size.saturating_sub(44) / 32,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    })
    .await
    .unwrap_or_default();
    Ok(Json(list))
}

/// A recording's audio (stereo WAV).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/recordings/{name}", params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn get_recording(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Response, Problem> {
    access(&st, &headers, peer, &tenant, false)?;
    if !safe_name(&name) {
        return Err(Problem::not_found("recording"));
    }
    let path = st.services.recordings_dir.join(&tenant).join(&name);
    let bytes = tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| Problem::not_found("recording"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "audio/wav".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Delete a recording.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/recordings/{name}", params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn delete_recording(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    access(&st, &headers, peer, &tenant, true)?;
    if !safe_name(&name) {
        return Err(Problem::not_found("recording"));
    }
    let path = st.services.recordings_dir.join(&tenant).join(&name);
    std::fs::remove_file(path).map_err(|_| Problem::not_found("recording"))?;
    tracing::info!(%tenant, %name, "recording deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}
