//! Voicemail messages of a tenant's mailboxes: list (new/saved, caller, time, duration),
//! download the audio, move to new/saved, delete. Every change NOTIFYs the mailbox's phones
//! (message waiting) within a second.

use super::audio::{self, AudioSource};
use super::error::Problem;
use super::page::{page_type, PageParams, PageQuery, Paging};
use super::Key;
use super::{body_problem, ApiState};
use crate::blob::voicemail_key;
use crate::mailstore::{Folder, MailStoreError, Message};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages",
            get(list_messages),
        )
        .route(
            "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}",
            get(get_message).put(update_message).delete(delete_message),
        )
        .route(
            "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}/audio",
            get(message_audio),
        )
}

page_type! {
    /// One page of a mailbox's messages.
    MessagePage of Message,
    items: "Messages, oldest first (by `received_unix`, then id).",
    cursor: "`next_cursor` of the previous page: `RECEIVED:ID`, the `received_unix` and id of the last message it holds (messages after it, oldest first); empty is the first page.",
    pattern: Some("^([0-9]{1,15}:.*)?$"),
}

/// A change to a message.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageUpdate {
    /// Move the message to `new` or `saved`.
    pub folder: Folder,
}

/// Checks the key and that the mailbox exists in the tenant (another tenant's: 404).
fn mailbox_access(
    st: &ApiState,
    key: &Key,
    tenant: &str,
    mailbox: &str,
    write: bool,
) -> Result<(), Problem> {
    key.tenant(tenant, write)?;
    let known = st
        .store
        .snapshot()
        .tenant(tenant)
        .is_some_and(|t| t.config.mailboxes.iter().any(|m| m.id == mailbox));
    if known {
        Ok(())
    } else {
        Err(Problem::not_found("mailbox"))
    }
}

fn store_problem(e: MailStoreError) -> Problem {
    match e {
        MailStoreError::NotFound => Problem::not_found("message"),
        other => {
            tracing::error!(error = %other, "voicemail store");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "voicemail-store",
                "the voicemail store is unavailable",
            )
        }
    }
}

/// A mailbox's messages, oldest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages", params(("tenant" = String, Path), ("mailbox" = String, Path), PageParams<MessagePage>),
    responses((status = 200, body = MessagePage), (status = 401, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub(super) async fn list_messages(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, mailbox)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<MessagePage>, Problem> {
    mailbox_access(&st, &key, &tenant, &mailbox, false)?;
    let paging = Paging::from_query(query)?;
    let list = st
        .services
        .mail
        .list(&tenant, &mailbox)
        .map_err(store_problem)?;
    let (items, next_cursor) = paging.page(list, |m| (m.received_unix, m.id.clone()));
    Ok(Json(MessagePage { items, next_cursor }))
}

fn find(st: &ApiState, tenant: &str, mailbox: &str, id: &str) -> Result<Message, Problem> {
    st.services
        .mail
        .list(tenant, mailbox)
        .map_err(store_problem)?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| Problem::not_found("message"))
}

/// One message.
#[utoipa::path(get, path = "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}", params(("tenant" = String, Path), ("mailbox" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = Message), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn get_message(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, mailbox, id)): Path<(String, String, String)>,
) -> Result<Json<Message>, Problem> {
    mailbox_access(&st, &key, &tenant, &mailbox, false)?;
    Ok(Json(find(&st, &tenant, &mailbox, &id)?))
}

/// Move a message to `new` or `saved` (marks it unheard or heard).
#[utoipa::path(put, path = "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}", params(("tenant" = String, Path), ("mailbox" = String, Path), ("id" = String, Path)),
    request_body = MessageUpdate,
    responses((status = 200, body = Message), (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn update_message(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, mailbox, id)): Path<(String, String, String)>,
    body: Result<Json<MessageUpdate>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Message>, Problem> {
    mailbox_access(&st, &key, &tenant, &mailbox, true)?;
    let Json(u) = body.map_err(body_problem)?;
    find(&st, &tenant, &mailbox, &id)?;
    let m = st
        .services
        .mail
        .direct()
        .set_folder(&tenant, &mailbox, &id, u.folder)
        .map_err(store_problem)?;
    Ok(Json(m))
}

/// Delete a message (audio and metadata).
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}", params(("tenant" = String, Path), ("mailbox" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub(super) async fn delete_message(
    State(st): State<Arc<ApiState>>,
    key: Key,
    Path((tenant, mailbox, id)): Path<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    mailbox_access(&st, &key, &tenant, &mailbox, true)?;
    find(&st, &tenant, &mailbox, &id)?;
    st.services
        .mail
        .direct()
        .delete(&tenant, &mailbox, &id)
        .map_err(store_problem)?;
    tracing::info!(%tenant, %mailbox, %id, "voicemail deleted through the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// The message's audio (16-bit 8 kHz mono WAV). Range requests work (206, 416).
#[utoipa::path(get, path = "/v1/tenants/{tenant}/mailboxes/{mailbox}/messages/{id}/audio", params(("tenant" = String, Path), ("mailbox" = String, Path), ("id" = String, Path)),
    responses((status = 200, content_type = "audio/wav", body = Vec<u8>), (status = 206, content_type = "audio/wav", body = Vec<u8>), (status = 401, body = Problem), (status = 404, body = Problem), (status = 416, body = Problem)))]
pub(super) async fn message_audio(
    State(st): State<Arc<ApiState>>,
    key: Key,
    headers: HeaderMap,
    Path((tenant, mailbox, id)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    mailbox_access(&st, &key, &tenant, &mailbox, false)?;
    find(&st, &tenant, &mailbox, &id)?;
    let local = st
        .services
        .mail
        .audio_path(&tenant, &mailbox, &id)
        .map_err(store_problem)?;
    let src = AudioSource {
        local: Some(local),
        blob: st
            .services
            .stores
            .as_ref()
            .map(|s| (&s.blobs, voicemail_key(&tenant, &mailbox, &id))),
    };
    audio::serve(&headers, &format!("{id}.wav"), "message", src).await
}
