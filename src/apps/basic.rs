//! The small apps: echo test, looping prompt, ring test, hang-up, and the user and external
//! destinations.

use crate::call::control::{App, AppEvent, CallContext, DialOutcome, DialTarget, Verb};
use crate::media::Audio;
use crate::tenant::model::Target;
use std::time::Duration;

/// Echo test: answer and send the caller's audio back.
pub struct EchoApp;

impl App for EchoApp {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
        match ev {
            AppEvent::Start => vec![Verb::Ring, Verb::Answer, Verb::Echo],
            _ => vec![],
        }
    }
}

/// Plays one prompt in a loop until the caller hangs up (load tests, music on hold).
pub struct PromptLoopApp {
    prompt: String,
}

impl PromptLoopApp {
    /// Loops `prompt`.
    pub fn new(prompt: &str) -> PromptLoopApp {
        PromptLoopApp {
            prompt: prompt.to_string(),
        }
    }
}

impl App for PromptLoopApp {
    fn name(&self) -> &'static str {
        "prompt_loop"
    }
    fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
        match ev {
            AppEvent::Start => vec![
                Verb::Ring,
                Verb::Answer,
                Verb::Play {
                    audio: vec![Audio::Prompt(self.prompt.clone())],
                    repeat: true,
                    barge_in: false,
                },
            ],
            _ => vec![],
        }
    }
}

/// Rings and never answers (ringback and CANCEL test extension).
pub struct RingApp;

impl App for RingApp {
    fn name(&self) -> &'static str {
        "ring_test"
    }
    fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
        match ev {
            AppEvent::Start => vec![Verb::Ring],
            _ => vec![],
        }
    }
}

/// Ends the call: a 603 before answer, a BYE after (an IVR route to "hang up").
pub struct HangupApp;

impl App for HangupApp {
    fn name(&self) -> &'static str {
        "hangup"
    }
    fn on_event(&mut self, ev: AppEvent, _cx: &CallContext) -> Vec<Verb> {
        match ev {
            AppEvent::Start => vec![Verb::Reject {
                code: 603,
                reason: "Decline".into(),
            }],
            _ => vec![],
        }
    }
}

/// A call to a user: `forwarding.always` if set; otherwise every registered phone of the user
/// rings at once for the user's `ring_timeout_secs`, and the first to answer is bridged to the
/// caller. No answer goes to `forwarding.no_answer` or the user's mailbox; busy to
/// `forwarding.busy` or the mailbox; no registered phone to the mailbox (`480` without one).
pub struct UserApp {
    extension: String,
}

impl UserApp {
    /// Calls user `extension`.
    pub fn new(extension: &str) -> UserApp {
        UserApp {
            extension: extension.to_string(),
        }
    }
}

impl App for UserApp {
    fn name(&self) -> &'static str {
        "user"
    }
    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb> {
        let Some(user) = cx.tenant.user_by_extension(&self.extension) else {
            return vec![Verb::Reject {
                code: 404,
                reason: "Not Found".into(),
            }];
        };
        let forwarding = user.forwarding.clone().unwrap_or_default();
        let elsewhere = |first: Option<Target>, busy: bool, code: u16, reason: &str| {
            let mailbox = user
                .mailbox
                .clone()
                .map(|mailbox| Target::Voicemail { mailbox, busy });
            match first.or(mailbox) {
                Some(t) => vec![Verb::Route(t)],
                None => vec![Verb::Reject {
                    code,
                    reason: reason.to_string(),
                }],
            }
        };
        match ev {
            AppEvent::Start => match forwarding.always {
                Some(t) => vec![Verb::Route(t)],
                None => vec![Verb::dial(
                    vec![DialTarget::User(self.extension.clone())],
                    Duration::from_secs(u64::from(user.ring_timeout_secs)),
                )],
            },
            AppEvent::DialResult(DialOutcome::Answered) => vec![],
            AppEvent::DialResult(DialOutcome::NoAnswer) => elsewhere(
                forwarding.no_answer,
                false,
                480,
                "Temporarily Unavailable (no answer)",
            ),
            AppEvent::DialResult(DialOutcome::Busy) => {
                elsewhere(forwarding.busy, true, 486, "Busy Here")
            }
            AppEvent::DialResult(DialOutcome::Unavailable(_)) => {
                elsewhere(None, false, 480, "Temporarily Unavailable")
            }
            AppEvent::PeerHungUp => vec![Verb::hangup("called party hung up")],
            _ => vec![],
        }
    }
    fn trail(&self) -> Option<String> {
        Some(self.extension.clone())
    }
}

/// A call to a number outside the tenant. Only a number an outbound route allows may leave
/// (toll fraud is the attack that costs SIP operators money); anything else is refused with
/// 403 and logged.
pub struct ExternalApp {
    number: String,
}

impl ExternalApp {
    /// Dials `number`.
    pub fn new(number: &str, _cx: &CallContext) -> ExternalApp {
        ExternalApp {
            number: number.to_string(),
        }
    }
}

impl App for ExternalApp {
    fn name(&self) -> &'static str {
        "external"
    }
    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb> {
        match ev {
            AppEvent::Start => match cx.tenant.outbound_route_for(&self.number) {
                None => {
                    tracing::warn!(
                        tenant = %cx.tenant.id(),
                        caller = %cx.caller.number(),
                        number = %self.number,
                        "outbound call refused: no outbound route allows this number"
                    );
                    vec![Verb::Reject {
                        code: 403,
                        reason: "Forbidden (no outbound route)".into(),
                    }]
                }
                Some(plan) => {
                    tracing::info!(
                        tenant = %cx.tenant.id(),
                        number = %self.number,
                        trunk = %plan.trunk.id,
                        dial = %plan.dial,
                        "outbound call allowed"
                    );
                    vec![Verb::dial(
                        vec![DialTarget::Number(self.number.clone())],
                        Duration::from_secs(120),
                    )]
                }
            },
            AppEvent::DialResult(DialOutcome::Answered) => vec![],
            AppEvent::DialResult(DialOutcome::Busy) => vec![Verb::Reject {
                code: 486,
                reason: "Busy Here".into(),
            }],
            AppEvent::DialResult(DialOutcome::NoAnswer) => vec![Verb::Reject {
                code: 480,
                reason: "Temporarily Unavailable (no answer)".into(),
            }],
            AppEvent::DialResult(DialOutcome::Unavailable(code)) => vec![Verb::Reject {
                code: if (400..700).contains(&code) {
                    code
                } else {
                    502
                },
                reason: "Outbound call failed".into(),
            }],
            AppEvent::PeerHungUp => vec![Verb::hangup("called party hung up")],
            _ => vec![],
        }
    }
    fn trail(&self) -> Option<String> {
        Some(self.number.clone())
    }
}
