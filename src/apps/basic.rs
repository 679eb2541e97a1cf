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
            AppEvent::PeerHungUp => vec![Verb::hangup_after_peer()],
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
                    // A user's own caller ID beats the trunk's.
                    let caller_id = match &cx.caller {
                        crate::call::control::Caller::User(ext) => cx
                            .tenant
                            .user_by_extension(ext)
                            .and_then(|u| u.caller_id.clone()),
                        crate::call::control::Caller::Trunk { .. } => None,
                    };
                    vec![Verb::Dial {
                        targets: vec![DialTarget::Number(self.number.clone())],
                        ring_timeout: Duration::from_secs(120),
                        sequential: false,
                        caller_id,
                    }]
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
                // The provider's own authentication or timeouts are our problem, not the
                // caller's: a 401/407 passed on would make the phone prompt for a password.
                code: match code {
                    401 | 407 | 408 => 503,
                    c if (400..700).contains(&c) => c,
                    _ => 502,
                },
                reason: "Outbound call failed".into(),
            }],
            AppEvent::PeerHungUp => vec![Verb::hangup_after_peer()],
            _ => vec![],
        }
    }
    fn trail(&self) -> Option<String> {
        Some(self.number.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::{context, Script};

    fn tenant(user_cid: Option<&str>) -> serde_json::Value {
        let mut user = serde_json::json!({"extension": "100", "username": "100", "password": "x"});
        if let Some(c) = user_cid {
            user["caller_id"] = serde_json::json!(c);
        }
        serde_json::json!({
            "id": "t1", "name": "T1", "domains": ["t1.example"],
            "users": [user],
            "trunks": [{"id": "carrier", "address": "192.0.2.1:5060", "allowed_prefixes": ["+1"],
                        "caller_id": "+15550100"}],
            "outbound_routes": [{"prefix": "+1", "trunk": "carrier"}]
        })
    }

    #[test]
    fn external_calls_use_the_route_and_the_users_own_caller_id() {
        let cx = context(tenant(Some("+15559990000")));
        let mut s = Script::new(ExternalApp::new("+15551234567", &cx), cx);
        let v = s.event(AppEvent::Start);
        assert_eq!(
            v,
            vec![Verb::Dial {
                targets: vec![DialTarget::Number("+15551234567".into())],
                ring_timeout: Duration::from_secs(120),
                sequential: false,
                caller_id: Some("+15559990000".into()),
            }]
        );
        // Without one, the trunk's applies (chosen by the endpoint).
        let cx = context(tenant(None));
        let mut s = Script::new(ExternalApp::new("+15551234567", &cx), cx);
        assert!(matches!(
            &s.event(AppEvent::Start)[0],
            Verb::Dial {
                caller_id: None,
                ..
            }
        ));
        // Not allowed: 403.
        let cx = context(tenant(None));
        let mut s = Script::new(ExternalApp::new("+442071234567", &cx), cx);
        assert!(matches!(
            &s.event(AppEvent::Start)[0],
            Verb::Reject { code: 403, .. }
        ));
        // The provider's 407 is not passed to the caller.
        assert!(matches!(
            &s.event(AppEvent::DialResult(DialOutcome::Unavailable(407)))[0],
            Verb::Reject { code: 503, .. }
        ));
    }
}
