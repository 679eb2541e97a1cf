//! Records and ids: the plain data the layers hand each other (call records, legs, quality,
//! how a call ended, who called, voicemail messages, name rules). The bottom layer: it imports
//! nothing from the rest of the crate, so storage, SIP, media and the call layer can all use
//! it without depending on each other. Serde only, plus `utoipa` schema derives for the admin
//! API's generated document.

pub mod call;
pub mod names;
pub mod voicemail;
