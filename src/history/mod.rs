//! The history store: call records with their legs and RTP figures, voicemail and recording
//! metadata, and the audit log of admin changes — in SQL.
//!
//! One store type, [`HistoryStore`], speaks to both backends through `sqlx::Any`: SQLite under
//! `data_dir` (the default, `history.url = ""`) and PostgreSQL (`history.url =
//! "postgres://…"`). Both share one schema and one list of migrations ([`MIGRATIONS`]): the
//! SQL is the common subset (`BIGINT`, `DOUBLE PRECISION`, `TEXT`, `ON CONFLICT`, integer
//! division for day buckets, explicit casts so aggregates decode the same on both).
//!
//! Writes only ever arrive as [`HistoryOp`]s from the spool ([`crate::spool`]), applied in one
//! transaction per batch, and every op is idempotent (a call record's id is its key; voicemail
//! and recording rows are upserts; deletes of missing rows are no-ops), so a batch replayed
//! after a crash never duplicates anything. Every query names its tenant.
//!
//! The pool connects lazily and the migrations run on first use, so the server starts (and
//! takes calls) while the database is away; the spool keeps what it cannot write yet.

use crate::records::call::{CallRecord, Direction, Disposition};
use crate::records::voicemail::{Folder, Message};
use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, AssertSqlSafe, Row};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Errors of the history store.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The database refused or could not be reached.
    #[error("history store: {0}")]
    Db(#[from] sqlx::Error),
    /// The URL names no supported backend.
    #[error("history.url: {0}")]
    Url(String),
    /// The database was written by a newer Switchyard.
    #[error("history store schema version {found} is newer than this build's {known}")]
    NewerSchema {
        /// Version in the database.
        found: i64,
        /// Highest version this build knows.
        known: i64,
    },
    /// A stored record that does not decode.
    #[error("history store: bad stored record {id}: {error}")]
    Corrupt {
        /// Record id.
        id: String,
        /// Why.
        error: String,
    },
}

/// Which SQL engine is behind the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The schema, as numbered migrations; each is a list of statements run in one transaction.
pub const MIGRATIONS: &[(i64, &[&str])] = &[(
    1,
    &[
        "CREATE TABLE call_records (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            call_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            from_number TEXT NOT NULL,
            from_user TEXT,
            to_number TEXT NOT NULL,
            start_unix BIGINT NOT NULL,
            answer_unix BIGINT,
            end_unix BIGINT NOT NULL,
            duration_secs BIGINT NOT NULL,
            billed_secs BIGINT NOT NULL,
            disposition TEXT NOT NULL,
            ended_by TEXT NOT NULL,
            hangup_cause TEXT NOT NULL,
            sip_code BIGINT,
            app_path TEXT NOT NULL,
            voicemail TEXT,
            recording TEXT,
            packets_sent BIGINT,
            packets_received BIGINT,
            packets_lost BIGINT,
            jitter_ms DOUBLE PRECISION,
            mos DOUBLE PRECISION,
            body TEXT NOT NULL
        )",
        "CREATE INDEX call_records_tenant_time ON call_records (tenant, start_unix, id)",
        "CREATE INDEX call_records_tenant_from ON call_records (tenant, from_number, start_unix)",
        "CREATE INDEX call_records_tenant_to ON call_records (tenant, to_number, start_unix)",
        "CREATE INDEX call_records_tenant_user ON call_records (tenant, from_user, start_unix)",
        "CREATE TABLE call_legs (
            record_id TEXT NOT NULL,
            tenant TEXT NOT NULL,
            leg BIGINT NOT NULL,
            start_unix BIGINT NOT NULL,
            answer_unix BIGINT,
            end_unix BIGINT,
            ended_by TEXT,
            sip_code BIGINT,
            packets_sent BIGINT,
            packets_received BIGINT,
            packets_lost BIGINT,
            jitter_ms DOUBLE PRECISION,
            mos DOUBLE PRECISION,
            PRIMARY KEY (record_id, leg)
        )",
        "CREATE INDEX call_legs_tenant ON call_legs (tenant, record_id)",
        "CREATE TABLE voicemail_messages (
            tenant TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            id TEXT NOT NULL,
            caller TEXT NOT NULL,
            received_unix BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            folder TEXT NOT NULL,
            call BIGINT NOT NULL,
            blob_key TEXT NOT NULL,
            PRIMARY KEY (tenant, mailbox, id)
        )",
        "CREATE INDEX voicemail_tenant_time ON voicemail_messages (tenant, received_unix)",
        "CREATE TABLE recordings (
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            call_log TEXT,
            created_unix BIGINT NOT NULL,
            duration_ms BIGINT NOT NULL,
            size_bytes BIGINT NOT NULL,
            blob_key TEXT NOT NULL,
            PRIMARY KEY (tenant, name)
        )",
        "CREATE INDEX recordings_tenant_time ON recordings (tenant, created_unix)",
        "CREATE TABLE audit_log (
            id TEXT PRIMARY KEY,
            tenant TEXT NOT NULL,
            at_unix BIGINT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL,
            status BIGINT NOT NULL
        )",
        "CREATE INDEX audit_tenant_time ON audit_log (tenant, at_unix)",
    ],
)];

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// A call recording's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Recording {
    /// File name (the id in the URL).
    pub name: String,
    /// The call log (call record id) it belongs to.
    pub call_log: Option<String>,
    /// When the recording started, unix seconds.
    pub created_unix: u64,
    /// Audio length (stereo 16-bit 8 kHz WAV).
    pub duration_ms: u64,
    /// Bytes.
    pub size_bytes: u64,
}

/// Length of a stereo 16-bit 8 kHz WAV (what call recordings are) of `size` bytes.
pub fn stereo_wav_ms(size: u64) -> u64 {
    size.saturating_sub(44) / 32
}

/// One admin change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Entry id.
    pub id: String,
    /// When, unix seconds.
    pub at_unix: u64,
    /// Who: `admin` or `key:ID`.
    pub actor: String,
    /// HTTP method.
    pub action: String,
    /// The API path changed.
    pub target: String,
    /// Response status.
    pub status: u16,
}

/// One idempotent write. See the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum HistoryOp {
    /// A finished call (inserted once; a replay is ignored).
    CallRecord(Box<CallRecord>),
    /// A voicemail message's metadata (insert or update).
    Voicemail {
        /// Tenant.
        tenant: String,
        /// The message.
        message: Message,
    },
    /// A voicemail message deleted.
    VoicemailDeleted {
        /// Tenant.
        tenant: String,
        /// Mailbox.
        mailbox: String,
        /// Message id.
        id: String,
    },
    /// A recording's metadata (insert or update).
    Recording {
        /// Tenant.
        tenant: String,
        /// The recording.
        recording: Recording,
    },
    /// A recording's stored size (and the length that follows from it), once its audio is in
    /// blob storage; changes nothing when the recording was deleted meanwhile.
    RecordingStored {
        /// Tenant.
        tenant: String,
        /// Name.
        name: String,
        /// Bytes stored.
        size_bytes: u64,
    },
    /// A recording deleted.
    RecordingDeleted {
        /// Tenant.
        tenant: String,
        /// Name.
        name: String,
    },
    /// An admin change.
    Audit {
        /// Tenant the change was made in (`-` for node-wide changes).
        tenant: String,
        /// The entry.
        entry: AuditEntry,
    },
    /// Call records older than `before_unix` expired (retention).
    CallsExpired {
        /// Tenant.
        tenant: String,
        /// Cut-off, unix seconds.
        before_unix: u64,
    },
    /// A tenant and everything it had, removed.
    TenantDeleted {
        /// Tenant.
        tenant: String,
    },
}

/// Call log filters (all optional).
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    /// Started at or after (unix seconds).
    pub from: Option<i64>,
    /// Started before.
    pub to: Option<i64>,
    /// From or to this number.
    pub number: Option<String>,
    /// Made by this user.
    pub user: Option<String>,
    /// Direction.
    pub direction: Option<Direction>,
    /// Disposition.
    pub disposition: Option<Disposition>,
}

/// Calls and answers on one day (UTC).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DayCount {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Calls.
    pub calls: u64,
    /// Answered calls.
    pub answered: u64,
}

/// Calls made by one user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserCount {
    /// Extension.
    pub user: String,
    /// Calls made.
    pub calls: u64,
}

/// Aggregates over the selected calls, computed by the database.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// A position in the call log's order (newest first): start time and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCursor {
    /// Start, unix seconds.
    pub start_unix: i64,
    /// Record id.
    pub id: String,
}

impl CallCursor {
    /// The cursor after `r`.
    pub fn after(r: &CallRecord) -> CallCursor {
        CallCursor {
            start_unix: r.start_unix as i64,
            id: r.id.clone(),
        }
    }

    /// Text form: `START:ID`.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.start_unix, self.id)
    }

    /// Parses the text form; None when it is not one.
    pub fn decode(s: &str) -> Option<CallCursor> {
        let (start, id) = s.split_once(':')?;
        Some(CallCursor {
            start_unix: start.parse().ok().filter(|v: &i64| *v >= 0)?,
            id: id.to_string(),
        })
    }
}

/// A value bound to a query.
enum Arg {
    I(i64),
    S(String),
}

/// A WHERE clause built from a filter, with `$n` placeholders numbered in order of appearance
/// (SQLite numbers `$n` by first appearance, PostgreSQL by n: keeping them in order makes
/// both agree).
struct Where {
    sql: String,
    args: Vec<Arg>,
}

impl Where {
    fn tenant(tenant: &str) -> Where {
        Where {
            sql: "tenant = $1".into(),
            args: vec![Arg::S(tenant.into())],
        }
    }

    fn next(&self) -> usize {
        self.args.len() + 1
    }

    fn and(&mut self, clause: &str, args: Vec<Arg>) {
        // `clause` uses `?` for each argument; they are numbered here.
        let mut out = String::new();
        let mut n = self.next();
        for ch in clause.chars() {
            if ch == '?' {
                out.push_str(&format!("${n}"));
                n += 1;
            } else {
                out.push(ch);
            }
        }
        self.sql.push_str(" AND ");
        self.sql.push_str(&out);
        self.args.extend(args);
    }

    fn filter(tenant: &str, f: &CallFilter) -> Where {
        let mut w = Where::tenant(tenant);
        if let Some(v) = f.from {
            w.and("start_unix >= ?", vec![Arg::I(v)]);
        }
        if let Some(v) = f.to {
            w.and("start_unix < ?", vec![Arg::I(v)]);
        }
        if let Some(n) = &f.number {
            w.and(
                "(from_number = ? OR to_number = ?)",
                vec![Arg::S(n.clone()), Arg::S(n.clone())],
            );
        }
        if let Some(u) = &f.user {
            w.and("from_user = ?", vec![Arg::S(u.clone())]);
        }
        if let Some(d) = f.direction {
            w.and("direction = ?", vec![Arg::S(enum_text(&d))]);
        }
        if let Some(d) = f.disposition {
            w.and("disposition = ?", vec![Arg::S(enum_text(&d))]);
        }
        w
    }

    /// The query for `sql` (built only from this module's constants and numbers: every value
    /// is bound, never spliced) with the clause's arguments bound.
    fn query(
        &self,
        sql: String,
    ) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for a in &self.args {
            q = match a {
                Arg::I(v) => q.bind(*v),
                Arg::S(v) => q.bind(v.clone()),
            };
        }
        q
    }
}

/// The snake_case name serde gives a unit enum variant.
fn enum_text<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn opt_i(v: Option<u64>) -> Option<i64> {
    v.map(|v| v as i64)
}

/// The history store. See the module documentation.
pub struct HistoryStore {
    pool: AnyPool,
    backend: Backend,
    migrated: OnceCell<()>,
    url_for_logs: String,
}

impl std::fmt::Debug for HistoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryStore")
            .field("url", &self.url_for_logs)
            .finish()
    }
}

/// The URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl HistoryStore {
    /// A store for `url` (`sqlite://PATH` or `postgres://…`). Nothing is connected yet.
    pub fn open(url: &str, max_connections: u32) -> Result<HistoryStore, HistoryError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(HistoryError::Url(format!(
                "{} is neither sqlite:// nor postgres://",
                redact_url(url)
            )));
        };
        let url = if backend == Backend::Sqlite && !url.contains("mode=") {
            // Create the file on first use.
            format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
        } else {
            url.to_string()
        };
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time; more connections only queue on its lock.
            .max_connections(if backend == Backend::Sqlite {
                1
            } else {
                max_connections.max(1)
            })
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&url)?;
        Ok(HistoryStore {
            pool,
            backend,
            migrated: OnceCell::new(),
            url_for_logs: redact_url(&url),
        })
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connects and migrates if that has not happened yet.
    pub async fn ready(&self) -> Result<(), HistoryError> {
        self.migrated
            .get_or_try_init(|| async { self.migrate().await })
            .await
            .map(|_| ())
    }

    /// The schema version stored in the database (0 when empty).
    pub async fn stored_version(&self) -> Result<i64, HistoryError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS switchyard_schema (version BIGINT PRIMARY KEY, applied_unix BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM switchyard_schema",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("v")?)
    }

    async fn migrate(&self) -> Result<(), HistoryError> {
        if self.backend == Backend::Sqlite {
            // WAL: readers (the admin API) do not wait for the spool's writes.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&self.pool)
                .await?;
        }
        // One transaction for the whole migration. On PostgreSQL it first takes a lock every
        // node asks for: nodes of a cluster starting together on one database migrate once,
        // the others wait and find the schema done (DDL is transactional there).
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7936512417)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS switchyard_schema (version BIGINT PRIMARY KEY, applied_unix BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        let current: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM switchyard_schema",
        )
        .fetch_one(&mut *tx)
        .await?
        .try_get("v")?;
        let known = schema_version();
        if current > known {
            return Err(HistoryError::NewerSchema {
                found: current,
                known,
            });
        }
        let mut applied = Vec::new();
        for (version, statements) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            for s in statements.iter() {
                sqlx::query(*s).execute(&mut *tx).await?;
            }
            sqlx::query("INSERT INTO switchyard_schema (version, applied_unix) VALUES ($1, $2)")
                .bind(*version)
                .bind(unix_now() as i64)
                .execute(&mut *tx)
                .await?;
            applied.push(*version);
        }
        tx.commit().await?;
        for version in applied {
            tracing::info!(version, url = %self.url_for_logs, "history schema migrated");
        }
        Ok(())
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), HistoryError> {
        self.ready().await?;
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Applies a batch of ops in one transaction.
    pub async fn apply(&self, ops: &[HistoryOp]) -> Result<(), HistoryError> {
        self.ready().await?;
        let mut tx = self.pool.begin().await?;
        for op in ops {
            apply_one(&mut tx, op).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// A page of a tenant's call records, newest first, after `cursor`.
    pub async fn calls(
        &self,
        tenant: &str,
        f: &CallFilter,
        cursor: Option<&CallCursor>,
        limit: u32,
    ) -> Result<Vec<CallRecord>, HistoryError> {
        self.ready().await?;
        let mut w = Where::filter(tenant, f);
        if let Some(c) = cursor {
            w.and(
                "(start_unix < ? OR (start_unix = ? AND id < ?))",
                vec![
                    Arg::I(c.start_unix),
                    Arg::I(c.start_unix),
                    Arg::S(c.id.clone()),
                ],
            );
        }
        let sql = format!(
            "SELECT id, body FROM call_records WHERE {} ORDER BY start_unix DESC, id DESC LIMIT {}",
            w.sql,
            limit.clamp(1, 1000)
        );
        let rows = w.query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(decode_record).collect()
    }

    /// One call record of a tenant.
    pub async fn call(&self, tenant: &str, id: &str) -> Result<Option<CallRecord>, HistoryError> {
        self.ready().await?;
        let row = sqlx::query("SELECT id, body FROM call_records WHERE tenant = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode_record).transpose()
    }

    /// Aggregates over a tenant's calls matching `f`.
    pub async fn call_stats(
        &self,
        tenant: &str,
        f: &CallFilter,
    ) -> Result<CallStats, HistoryError> {
        self.ready().await?;
        let w = Where::filter(tenant, f);
        let totals = format!(
            "SELECT CAST(COUNT(*) AS BIGINT) AS calls,
                    CAST(COALESCE(SUM(CASE WHEN disposition = 'answered' THEN 1 ELSE 0 END), 0) AS BIGINT) AS answered,
                    CAST(AVG(CASE WHEN disposition = 'answered' THEN billed_secs END) AS DOUBLE PRECISION) AS avg_billed,
                    CAST(AVG(mos) AS DOUBLE PRECISION) AS avg_mos
             FROM call_records WHERE {}",
            w.sql
        );
        let row = w.query(totals).fetch_one(&self.pool).await?;
        let calls = row.try_get::<i64, _>("calls")?.max(0) as u64;
        let answered = row.try_get::<i64, _>("answered")?.max(0) as u64;
        let avg_billed: Option<f64> = row.try_get("avg_billed")?;
        let avg_mos: Option<f64> = row.try_get("avg_mos")?;

        let days_sql = format!(
            "SELECT CAST(start_unix / 86400 AS BIGINT) AS day,
                    CAST(COUNT(*) AS BIGINT) AS calls,
                    CAST(COALESCE(SUM(CASE WHEN disposition = 'answered' THEN 1 ELSE 0 END), 0) AS BIGINT) AS answered
             FROM call_records WHERE {} GROUP BY start_unix / 86400 ORDER BY day",
            w.sql
        );
        let mut per_day = Vec::new();
        for r in w.query(days_sql).fetch_all(&self.pool).await? {
            let day: i64 = r.try_get("day")?;
            per_day.push(DayCount {
                day: jiff::Timestamp::from_second(day * 86400)
                    .map(|t| t.strftime("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                calls: r.try_get::<i64, _>("calls")?.max(0) as u64,
                answered: r.try_get::<i64, _>("answered")?.max(0) as u64,
            });
        }
        let users_sql = format!(
            "SELECT from_user, CAST(COUNT(*) AS BIGINT) AS calls FROM call_records
             WHERE {} AND from_user IS NOT NULL GROUP BY from_user ORDER BY from_user",
            w.sql
        );
        let mut per_user = Vec::new();
        for r in w.query(users_sql).fetch_all(&self.pool).await? {
            per_user.push(UserCount {
                user: r.try_get("from_user")?,
                calls: r.try_get::<i64, _>("calls")?.max(0) as u64,
            });
        }
        Ok(CallStats {
            calls,
            answered,
            answer_rate: if calls == 0 {
                0.0
            } else {
                answered as f64 / calls as f64
            },
            average_duration_secs: avg_billed.unwrap_or(0.0),
            average_mos: avg_mos.map(|m| (m * 100.0).round() / 100.0),
            per_day,
            per_user,
        })
    }

    /// A page of a tenant's recordings, newest first, after `cursor` (creation time, name).
    pub async fn recordings_page(
        &self,
        tenant: &str,
        cursor: Option<&CallCursor>,
        limit: u32,
    ) -> Result<Vec<Recording>, HistoryError> {
        self.ready().await?;
        let mut w = Where::tenant(tenant);
        if let Some(c) = cursor {
            w.and(
                "(created_unix < ? OR (created_unix = ? AND name < ?))",
                vec![
                    Arg::I(c.start_unix),
                    Arg::I(c.start_unix),
                    Arg::S(c.id.clone()),
                ],
            );
        }
        let sql = format!(
            "SELECT name, call_log, created_unix, duration_ms, size_bytes FROM recordings
             WHERE {} ORDER BY created_unix DESC, name DESC LIMIT {}",
            w.sql,
            limit.clamp(1, 1000)
        );
        let rows = w.query(sql).fetch_all(&self.pool).await?;
        rows.iter().map(decode_recording).collect()
    }

    /// A tenant's recordings, newest first.
    pub async fn recordings(&self, tenant: &str) -> Result<Vec<Recording>, HistoryError> {
        self.ready().await?;
        let rows = sqlx::query(
            "SELECT name, call_log, created_unix, duration_ms, size_bytes FROM recordings
             WHERE tenant = $1 ORDER BY created_unix DESC, name DESC",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_recording).collect()
    }

    /// One recording of a tenant.
    pub async fn recording(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Recording>, HistoryError> {
        self.ready().await?;
        let row = sqlx::query(
            "SELECT name, call_log, created_unix, duration_ms, size_bytes FROM recordings
             WHERE tenant = $1 AND name = $2",
        )
        .bind(tenant.to_string())
        .bind(name.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(decode_recording).transpose()
    }

    /// A tenant's recordings created before `before_unix` (for retention).
    pub async fn recordings_before(
        &self,
        tenant: &str,
        before_unix: u64,
    ) -> Result<Vec<Recording>, HistoryError> {
        self.ready().await?;
        let rows = sqlx::query(
            "SELECT name, call_log, created_unix, duration_ms, size_bytes FROM recordings
             WHERE tenant = $1 AND created_unix < $2",
        )
        .bind(tenant.to_string())
        .bind(before_unix as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode_recording).collect()
    }

    /// A tenant's voicemail messages as the history store has them (all mailboxes).
    pub async fn voicemail(&self, tenant: &str) -> Result<Vec<Message>, HistoryError> {
        self.ready().await?;
        let rows = sqlx::query(
            "SELECT mailbox, id, caller, received_unix, duration_ms, folder, call FROM voicemail_messages
             WHERE tenant = $1 ORDER BY received_unix, id",
        )
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(Message {
                mailbox: r.try_get("mailbox")?,
                id: r.try_get("id")?,
                caller: r.try_get("caller")?,
                received_unix: r.try_get::<i64, _>("received_unix")?.max(0) as u64,
                duration_ms: r.try_get::<i64, _>("duration_ms")?.max(0) as u64,
                folder: if r.try_get::<String, _>("folder")? == "saved" {
                    Folder::Saved
                } else {
                    Folder::New
                },
                call: r.try_get::<i64, _>("call")?.max(0) as u64,
            });
        }
        Ok(out)
    }

    /// A tenant's audit log, newest first.
    pub async fn audit(&self, tenant: &str, limit: u32) -> Result<Vec<AuditEntry>, HistoryError> {
        self.ready().await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, at_unix, actor, action, target, status FROM audit_log
             WHERE tenant = $1 ORDER BY at_unix DESC, id DESC LIMIT {}",
            limit.clamp(1, 1000)
        )))
        .bind(tenant.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            out.push(AuditEntry {
                id: r.try_get("id")?,
                at_unix: r.try_get::<i64, _>("at_unix")?.max(0) as u64,
                actor: r.try_get("actor")?,
                action: r.try_get("action")?,
                target: r.try_get("target")?,
                status: r.try_get::<i64, _>("status")?.clamp(0, 999) as u16,
            });
        }
        Ok(out)
    }

    /// Rows per table for one tenant (tests and the backup summary).
    pub async fn counts(&self, tenant: &str) -> Result<[u64; 4], HistoryError> {
        self.ready().await?;
        let mut out = [0u64; 4];
        for (i, t) in [
            "call_records",
            "voicemail_messages",
            "recordings",
            "audit_log",
        ]
        .iter()
        .enumerate()
        {
            let r = sqlx::query(AssertSqlSafe(format!(
                "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM {t} WHERE tenant = $1"
            )))
            .bind(tenant.to_string())
            .fetch_one(&self.pool)
            .await?;
            out[i] = r.try_get::<i64, _>("n")?.max(0) as u64;
        }
        Ok(out)
    }

    /// Copies the SQLite database to `dest` (a consistent snapshot, `VACUUM INTO`).
    pub async fn snapshot_sqlite(&self, dest: &std::path::Path) -> Result<(), HistoryError> {
        self.ready().await?;
        if self.backend != Backend::Sqlite {
            return Err(HistoryError::Url(
                "only a SQLite history can be copied".into(),
            ));
        }
        sqlx::query("VACUUM INTO $1")
            .bind(dest.to_string_lossy().into_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn apply_one(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    op: &HistoryOp,
) -> Result<(), HistoryError> {
    match op {
        HistoryOp::CallRecord(r) => {
            let body = serde_json::to_string(r).map_err(|e| HistoryError::Corrupt {
                id: r.id.clone(),
                error: e.to_string(),
            })?;
            let q = r.quality.as_ref();
            let inserted = sqlx::query(
                "INSERT INTO call_records (id, tenant, call_id, direction, from_number, from_user,
                    to_number, start_unix, answer_unix, end_unix, duration_secs, billed_secs,
                    disposition, ended_by, hangup_cause, sip_code, app_path, voicemail, recording,
                    packets_sent, packets_received, packets_lost, jitter_ms, mos, body)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                    $17, $18, $19, $20, $21, $22, $23, $24, $25)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(r.id.clone())
            .bind(r.tenant.clone())
            .bind(r.call_id.clone())
            .bind(enum_text(&r.direction))
            .bind(r.from.clone())
            .bind(r.from_user.clone())
            .bind(r.to.clone())
            .bind(r.start_unix as i64)
            .bind(opt_i(r.answer_unix))
            .bind(r.end_unix as i64)
            .bind(r.duration_secs as i64)
            .bind(r.billed_secs as i64)
            .bind(enum_text(&r.disposition))
            .bind(enum_text(&r.ended_by))
            .bind(r.hangup_cause.as_str())
            .bind(r.sip_code.map(i64::from))
            .bind(r.path.clone())
            .bind(r.voicemail.clone())
            .bind(r.recording.clone())
            .bind(q.map(|q| q.packets_sent as i64))
            .bind(q.map(|q| q.packets_received as i64))
            .bind(q.map(|q| q.packets_lost as i64))
            .bind(q.map(|q| q.jitter_ms))
            .bind(q.map(|q| q.mos))
            .bind(body)
            .execute(&mut **tx)
            .await?;
            if inserted.rows_affected() == 0 {
                // A replay after a crash: the record and its legs are there already.
                return Ok(());
            }
            for l in &r.legs {
                let q = l.quality.as_ref();
                sqlx::query(
                    "INSERT INTO call_legs (record_id, tenant, leg, start_unix, answer_unix, end_unix,
                        ended_by, sip_code, packets_sent, packets_received, packets_lost, jitter_ms, mos)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (record_id, leg) DO NOTHING",
                )
                .bind(r.id.clone())
                .bind(r.tenant.clone())
                .bind(l.leg as i64)
                .bind(l.start_unix as i64)
                .bind(opt_i(l.answer_unix))
                .bind(opt_i(l.end_unix))
                .bind(l.ended_by.map(|b| enum_text(&b)))
                .bind(l.sip_code.map(i64::from))
                .bind(q.map(|q| q.packets_sent as i64))
                .bind(q.map(|q| q.packets_received as i64))
                .bind(q.map(|q| q.packets_lost as i64))
                .bind(q.map(|q| q.jitter_ms))
                .bind(q.map(|q| q.mos))
                .execute(&mut **tx)
                .await?;
            }
        }
        HistoryOp::Voicemail { tenant, message: m } => {
            sqlx::query(
                "INSERT INTO voicemail_messages (tenant, mailbox, id, caller, received_unix,
                    duration_ms, folder, call, blob_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (tenant, mailbox, id) DO UPDATE SET folder = excluded.folder,
                    duration_ms = excluded.duration_ms",
            )
            .bind(tenant.clone())
            .bind(m.mailbox.clone())
            .bind(m.id.clone())
            .bind(m.caller.clone())
            .bind(m.received_unix as i64)
            .bind(m.duration_ms as i64)
            .bind(enum_text(&m.folder))
            .bind(m.call as i64)
            .bind(crate::blob::voicemail_key(tenant, &m.mailbox, &m.id))
            .execute(&mut **tx)
            .await?;
        }
        HistoryOp::VoicemailDeleted {
            tenant,
            mailbox,
            id,
        } => {
            sqlx::query(
                "DELETE FROM voicemail_messages WHERE tenant = $1 AND mailbox = $2 AND id = $3",
            )
            .bind(tenant.clone())
            .bind(mailbox.clone())
            .bind(id.clone())
            .execute(&mut **tx)
            .await?;
        }
        HistoryOp::Recording {
            tenant,
            recording: r,
        } => {
            sqlx::query(
                "INSERT INTO recordings (tenant, name, call_log, created_unix, duration_ms, size_bytes, blob_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (tenant, name) DO UPDATE SET duration_ms = excluded.duration_ms,
                    size_bytes = excluded.size_bytes, call_log = excluded.call_log",
            )
            .bind(tenant.clone())
            .bind(r.name.clone())
            .bind(r.call_log.clone())
            .bind(r.created_unix as i64)
            .bind(r.duration_ms as i64)
            .bind(r.size_bytes as i64)
            .bind(crate::blob::recording_key(tenant, &r.name))
            .execute(&mut **tx)
            .await?;
        }
        HistoryOp::RecordingStored {
            tenant,
            name,
            size_bytes,
        } => {
            sqlx::query(
                "UPDATE recordings SET size_bytes = $1, duration_ms = $2 WHERE tenant = $3 AND name = $4",
            )
            .bind(*size_bytes as i64)
            .bind(stereo_wav_ms(*size_bytes) as i64)
            .bind(tenant.clone())
            .bind(name.clone())
            .execute(&mut **tx)
            .await?;
        }
        HistoryOp::RecordingDeleted { tenant, name } => {
            sqlx::query("DELETE FROM recordings WHERE tenant = $1 AND name = $2")
                .bind(tenant.clone())
                .bind(name.clone())
                .execute(&mut **tx)
                .await?;
        }
        HistoryOp::Audit { tenant, entry: e } => {
            sqlx::query(
                "INSERT INTO audit_log (id, tenant, at_unix, actor, action, target, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.id.clone())
            .bind(tenant.clone())
            .bind(e.at_unix as i64)
            .bind(e.actor.clone())
            .bind(e.action.clone())
            .bind(e.target.clone())
            .bind(i64::from(e.status))
            .execute(&mut **tx)
            .await?;
        }
        HistoryOp::CallsExpired {
            tenant,
            before_unix,
        } => {
            let cut = *before_unix as i64;
            sqlx::query(
                "DELETE FROM call_legs WHERE tenant = $1 AND record_id IN
                    (SELECT id FROM call_records WHERE tenant = $2 AND start_unix < $3)",
            )
            .bind(tenant.clone())
            .bind(tenant.clone())
            .bind(cut)
            .execute(&mut **tx)
            .await?;
            let n = sqlx::query("DELETE FROM call_records WHERE tenant = $1 AND start_unix < $2")
                .bind(tenant.clone())
                .bind(cut)
                .execute(&mut **tx)
                .await?
                .rows_affected();
            if n > 0 {
                tracing::info!(%tenant, removed = n, before_unix, "expired call records removed");
            }
        }
        HistoryOp::TenantDeleted { tenant } => {
            for t in [
                "call_legs",
                "call_records",
                "voicemail_messages",
                "recordings",
                "audit_log",
            ] {
                sqlx::query(AssertSqlSafe(format!("DELETE FROM {t} WHERE tenant = $1")))
                    .bind(tenant.clone())
                    .execute(&mut **tx)
                    .await?;
            }
            tracing::info!(%tenant, "tenant's history removed");
        }
    }
    Ok(())
}

fn decode_record(row: &AnyRow) -> Result<CallRecord, HistoryError> {
    let id: String = row.try_get("id")?;
    let body: String = row.try_get("body")?;
    serde_json::from_str(&body).map_err(|e| HistoryError::Corrupt {
        id,
        error: e.to_string(),
    })
}

fn decode_recording(r: &AnyRow) -> Result<Recording, HistoryError> {
    Ok(Recording {
        name: r.try_get("name")?,
        call_log: r.try_get("call_log")?,
        created_unix: r.try_get::<i64, _>("created_unix")?.max(0) as u64,
        duration_ms: r.try_get::<i64, _>("duration_ms")?.max(0) as u64,
        size_bytes: r.try_get::<i64, _>("size_bytes")?.max(0) as u64,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests;
