//! A voicemail message as every store keeps it: its metadata and folder.

use serde::{Deserialize, Serialize};

/// Shortest message kept: anything shorter was a hang-up at the beep.
pub const MIN_MESSAGE_MS: u64 = 500;

/// Caller of a message whose metadata was lost (recovered from its audio alone).
pub const UNKNOWN_CALLER: &str = "unknown";

/// New or saved (heard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Folder {
    /// Not yet heard.
    New,
    /// Heard or saved.
    Saved,
}

/// One message's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Message {
    /// Message id (unique in its mailbox).
    pub id: String,
    /// Mailbox.
    pub mailbox: String,
    /// Caller's number or extension.
    pub caller: String,
    /// When it was left, unix seconds.
    pub received_unix: u64,
    /// Audio length.
    pub duration_ms: u64,
    /// New or saved.
    pub folder: Folder,
    /// The call that left it (endpoint call id).
    pub call: u64,
}
