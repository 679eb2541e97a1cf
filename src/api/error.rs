//! RFC 9457 problem details: every API error is `application/problem+json` naming what is
//! wrong, and for validation errors every offending path.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One field at fault.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// Path of the value, e.g. `ivrs.main.routes.3`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// A problem document (RFC 9457).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// Fields at fault, for validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// Seconds for a Retry-After header (429, 503).
    #[serde(skip)]
    #[schema(ignore)]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem with `status`, a short `kind` slug and a detail.
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("https://switchyard.dev/problems/{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// Adds a Retry-After header.
    pub fn retry_after(mut self, secs: u64) -> Problem {
        self.retry_after = Some(secs);
        self
    }

    /// 404 that says nothing about other tenants' resources.
    pub fn not_found(what: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no such {what}"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

impl From<crate::tenant::TenantStoreError> for Problem {
    fn from(e: crate::tenant::TenantStoreError) -> Problem {
        use crate::tenant::TenantStoreError as E;
        match e {
            E::Invalid(v) => {
                let mut p = Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-tenant",
                    v.to_string(),
                );
                p.errors =
                    v.0.into_iter()
                        .map(|e| FieldError {
                            path: e.path,
                            message: e.message,
                        })
                        .collect();
                p
            }
            E::NotFound(_) => Problem::not_found("tenant"),
            E::Db(e) => {
                tracing::error!(error = %e, "store failure in admin API");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store-unavailable",
                    "the local store failed; try again",
                )
            }
        }
    }
}

impl From<crate::cluster::WriteError> for Problem {
    fn from(e: crate::cluster::WriteError) -> Problem {
        use crate::cluster::WriteError as E;
        match e {
            E::Store(e) => e.into(),
            E::Conflict => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "changed-elsewhere",
                "the tenant was changed through another node since this node read it; GET it again and retry",
            ),
            E::Unavailable(why) => {
                tracing::warn!(reason = %why, "tenant write refused: the cluster's configuration store is unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "config-source-unavailable",
                    "the cluster's configuration store (NATS) does not answer; nothing was changed, calls go on with the current configuration; try again",
                )
                .retry_after(5)
            }
        }
    }
}

impl From<crate::history::HistoryError> for Problem {
    fn from(e: crate::history::HistoryError) -> Problem {
        tracing::warn!(error = %e, "history store failure in admin API");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "history-unavailable",
            "the history store does not answer; nothing is lost (the node spools), try again",
        )
        .retry_after(5)
    }
}

impl From<crate::blob::BlobError> for Problem {
    fn from(e: crate::blob::BlobError) -> Problem {
        match e {
            crate::blob::BlobError::NotFound => Problem::not_found("audio"),
            other => {
                tracing::warn!(error = %other, "blob storage failure in admin API");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "blob-unavailable",
                    "blob storage does not answer; try again",
                )
                .retry_after(5)
            }
        }
    }
}
