//! A tenant's live call events as Server-Sent Events (`GET /v1/tenants/{tenant}/events`):
//! each call's `started`, `answered`, `app`, `digit` and `ended`, for dashboards and CRMs. Read
//! with the tenant's key (read-only is enough) or the admin key; one tenant's stream never
//! carries another's calls. At most 16 streams per tenant (429 beyond). A stream that falls
//! more than 1,024 events behind gets a `lagged` event with the number missed, then goes
//! on. A comment line every 15 s keeps proxies from closing an idle stream.

use super::error::Problem;
use super::{ApiState, Key};
use crate::call::events::{Next, StreamRefused, Subscription};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new().route("/v1/tenants/{tenant}/events", get(call_events))
}

/// Follow a tenant's calls as they happen (Server-Sent Events). Each event is named for what
/// happened (`started`, `answered`, `app`, `digit`, `ended`; `lagged` when the reader fell behind,
/// its data the number of events missed) and carries a `CallNotice` as JSON. Digits are left
/// out while an app collects a PIN.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/events", params(("tenant" = String, Path)),
    responses(
        (status = 200, description = "An endless `text/event-stream`; each event's data is a CallNotice", content_type = "text/event-stream", body = crate::call::events::CallNotice),
        (status = 401, body = Problem), (status = 404, body = Problem), (status = 429, body = Problem)))]
pub(super) async fn call_events(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path(tenant): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    key.tenant(&tenant, false)?;
    if st.store.get(&tenant)?.is_none() {
        return Err(Problem::not_found("tenant"));
    }
    let sub = st
        .services
        .events
        .subscribe(&tenant)
        .map_err(|e: StreamRefused| {
            Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                e.to_string(),
            )
            .retry_after(60)
        })?;
    Ok(Sse::new(events(sub)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The subscription's notices as SSE events, numbered from 1.
fn events(sub: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((sub, 0u64), |(mut sub, n)| async move {
        let event = match sub.next().await {
            Next::Notice(notice) => Event::default()
                .event(notice.event.as_str())
                .json_data(&*notice)
                .unwrap_or_else(|_| Event::default().comment("unserialisable event")),
            Next::Lagged(missed) => Event::default().event("lagged").data(missed.to_string()),
            Next::Closed => return None,
        };
        Some((Ok(event.id((n + 1).to_string())), (sub, n + 1)))
    })
}
