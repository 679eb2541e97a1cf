//! Call apps, each written against the call-control API in [`crate::call::control`] and
//! nothing else: they see events, return verbs, and never touch SIP or RTP.
//!
//! - [`ivr`]: the tenant's menu graph — prompts, digit routes, sub-menus, retries on timeout or
//!   invalid input, time-of-day branches in the tenant's time zone, barge-in.
//! - [`voicemail`]: leaving a message (greeting, beep, record until `#`, silence or the
//!   mailbox's maximum) and the mailbox menu on `*97`/`*98` (PIN, counts, play, delete, save,
//!   record greeting).
//! - [`basic`]: echo test, looping prompt, ring test, hang-up, and the user (ring every phone,
//!   no answer/busy to forwarding or voicemail) and external destinations (outbound routes
//!   checked here: everything no route allows is refused with 403 and logged; allowed numbers
//!   are dialed through the route's trunk).
//!
//! Where voicemail and prompts are kept is storage ([`crate::mailstore`],
//! [`crate::promptstore`]), below the call layer.
//!
//! [`for_target`] is the one place that maps a routing [`Target`] to its app.

pub mod basic;
pub mod ivr;
pub mod voicemail;

use crate::call::control::{App, CallContext};
use crate::tenant::model::Target;

/// The app for a routing target.
pub fn for_target(target: &Target, cx: &CallContext) -> Box<dyn App> {
    match target {
        Target::Ivr { menu } => Box::new(ivr::IvrApp::new(menu)),
        Target::Voicemail { mailbox, busy } => Box::new(voicemail::DepositApp::new(
            mailbox,
            if *busy {
                voicemail::Greeting::Busy
            } else {
                voicemail::Greeting::Unavailable
            },
        )),
        Target::VoicemailMain { any_mailbox } => {
            Box::new(voicemail::MailboxMenuApp::new(*any_mailbox))
        }
        Target::Echo => Box::new(basic::EchoApp),
        Target::PromptLoop { prompt } => Box::new(basic::PromptLoopApp::new(prompt)),
        Target::RingTest => Box::new(basic::RingApp),
        Target::User { extension } => Box::new(basic::UserApp::new(extension)),
        Target::External { number } => Box::new(basic::ExternalApp::new(number, cx)),
        Target::Hangup | Target::Repeat => Box::new(basic::HangupApp),
    }
}

/// Prompts that say a number digit by digit (`system/digit-4`, `system/digit-2`).
pub fn say_digits(number: &str) -> Vec<String> {
    number
        .chars()
        .filter(char::is_ascii_digit)
        .map(|d| format!("system/digit-{d}"))
        .collect()
}

/// Prompts that say a count (0–99 digit by digit is enough for a mailbox).
pub fn say_count(n: usize) -> Vec<String> {
    say_digits(&n.to_string())
}

#[cfg(test)]
pub(crate) mod testing;
