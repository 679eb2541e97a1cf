//! The IVR: runs one menu of the tenant's graph. On entry, time-of-day branches (in the
//! tenant's time zone) may send the caller elsewhere; otherwise the menu's prompts play with
//! barge-in while digits are collected. A digit route hands the call on ([`Verb::Route`]: a
//! sub-menu is just another `IvrApp`); a timeout or an unknown digit replays the menu (after
//! the invalid prompt) until `max_retries` is used up, then `on_exhausted` takes the call.

use crate::call::control::{App, AppEvent, CallContext, GatherSpec, Verb};
use crate::tenant::model::{IvrMenu, Target, TimeBranch};
use std::time::Duration;

/// Where the menu stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// Prompts playing / digits being collected.
    Listening,
    /// The invalid prompt plays; the menu follows.
    Invalid,
    /// "Goodbye" plays; then the call ends.
    Goodbye,
}

/// One IVR menu. See the module documentation.
pub struct IvrApp {
    menu_id: String,
    state: State,
    retries: u32,
    /// Digits the caller chose in this menu, for the call record.
    chosen: Vec<String>,
}

impl IvrApp {
    /// Runs menu `menu_id` of the call's tenant.
    pub fn new(menu_id: &str) -> IvrApp {
        IvrApp {
            menu_id: menu_id.to_string(),
            state: State::Idle,
            retries: 0,
            chosen: Vec::new(),
        }
    }

    fn menu<'a>(&self, cx: &'a CallContext) -> Option<&'a IvrMenu> {
        cx.tenant.config.ivrs.get(&self.menu_id)
    }

    fn listen(&mut self, menu: &IvrMenu) -> Vec<Verb> {
        self.state = State::Listening;
        let longest = menu
            .routes
            .iter()
            .map(|r| r.digits.chars().count())
            .max()
            .unwrap_or(1)
            .max(1);
        let prompts: Vec<&str> = menu.prompts.iter().map(String::as_str).collect();
        vec![
            Verb::play(&prompts, true),
            Verb::Gather(GatherSpec {
                max_digits: longest,
                terminators: "#".into(),
                first_digit_timeout: Duration::from_secs(u64::from(menu.timeout_secs)),
                // Multi-digit routes ("42"): a short pause ends the entry.
                inter_digit_timeout: Duration::from_secs(2),
                overall_timeout: None,
                secret: false,
            }),
        ]
    }

    fn route(&mut self, target: Target) -> Vec<Verb> {
        match target {
            Target::Hangup => {
                self.state = State::Goodbye;
                vec![Verb::play(&["system/goodbye"], false)]
            }
            t => vec![Verb::Route(t)],
        }
    }

    /// A timeout or a wrong digit: replay, or give up after `max_retries`.
    fn retry(&mut self, menu: &IvrMenu, invalid: bool) -> Vec<Verb> {
        self.retries += 1;
        if self.retries > menu.max_retries {
            tracing::info!(menu = %self.menu_id, "IVR retries used up");
            return self.route(menu.on_exhausted.clone());
        }
        match (&menu.invalid_prompt, invalid) {
            (Some(p), true) => {
                self.state = State::Invalid;
                vec![Verb::play(&[p.as_str()], true)]
            }
            _ => self.listen(menu),
        }
    }
}

impl App for IvrApp {
    fn name(&self) -> &'static str {
        "ivr"
    }

    fn trail(&self) -> Option<String> {
        if self.chosen.is_empty() {
            Some(self.menu_id.clone())
        } else {
            Some(format!("{}:{}", self.menu_id, self.chosen.join(",")))
        }
    }

    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb> {
        let Some(menu) = self.menu(cx).cloned() else {
            tracing::warn!(menu = %self.menu_id, "IVR menu missing from the tenant");
            return vec![Verb::hangup("IVR menu missing")];
        };
        match (self.state, ev) {
            (State::Idle, AppEvent::Start) => {
                if let Some(b) = menu
                    .schedule
                    .iter()
                    .find(|b| branch_matches(b, &cx.tenant.config.timezone, cx.unix_now))
                {
                    tracing::info!(menu = %self.menu_id, start = %b.start, end = %b.end, "IVR time branch taken");
                    return self.route(b.target.clone());
                }
                let mut v = vec![Verb::Answer];
                v.extend(self.listen(&menu));
                v
            }
            (State::Invalid, AppEvent::PlaybackDone { .. }) => self.listen(&menu),
            (State::Goodbye, AppEvent::PlaybackDone { .. }) => vec![Verb::hangup("IVR hang-up")],
            (State::Invalid, AppEvent::Digit(_)) => {
                // Pressed during the invalid prompt: start the menu again at once.
                self.listen(&menu)
            }
            (State::Listening, AppEvent::Gathered { digits, end }) => {
                if digits.is_empty() {
                    tracing::info!(menu = %self.menu_id, ?end, "IVR: no input");
                    return self.retry(&menu, false);
                }
                let Some(r) = menu.routes.iter().find(|r| r.digits == digits) else {
                    tracing::info!(menu = %self.menu_id, %digits, "IVR: invalid choice");
                    return self.retry(&menu, true);
                };
                tracing::info!(menu = %self.menu_id, %digits, target = ?r.target, "IVR choice");
                self.chosen.push(digits.clone());
                match &r.target {
                    Target::Repeat => {
                        self.retries = 0;
                        self.listen(&menu)
                    }
                    t => self.route(t.clone()),
                }
            }
            _ => vec![],
        }
    }
}

/// True when `unix` falls in the branch, in time zone `tz` (UTC when the name is unknown).
pub fn branch_matches(b: &TimeBranch, tz: &str, unix: u64) -> bool {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(ts) = jiff::Timestamp::from_second(unix as i64) else {
        return false;
    };
    let local = ts.to_zoned(zone);
    let day = match local.weekday() {
        jiff::civil::Weekday::Monday => "mon",
        jiff::civil::Weekday::Tuesday => "tue",
        jiff::civil::Weekday::Wednesday => "wed",
        jiff::civil::Weekday::Thursday => "thu",
        jiff::civil::Weekday::Friday => "fri",
        jiff::civil::Weekday::Saturday => "sat",
        jiff::civil::Weekday::Sunday => "sun",
    };
    if !b.days.is_empty() && !b.days.iter().any(|d| d.eq_ignore_ascii_case(day)) {
        return false;
    }
    let minute = i32::from(local.hour()) * 60 + i32::from(local.minute());
    let (Some(start), Some(end)) = (hhmm(&b.start), hhmm(&b.end)) else {
        return false;
    };
    if start <= end {
        (start..end).contains(&minute)
    } else {
        // Across midnight (18:00–08:00).
        minute >= start || minute < end
    }
}

fn hhmm(s: &str) -> Option<i32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=24).contains(&h) && (0..60).contains(&m)).then_some(h * 60 + m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::{context, Script};
    use crate::call::control::GatherEnd;
    use crate::tenant::model::DigitRoute;

    fn tenant_json() -> serde_json::Value {
        serde_json::json!({
            "id": "t1", "name": "T1", "domains": ["t1.example"], "timezone": "Europe/Paris",
            "users": [{"extension": "100", "username": "100", "password": "x", "mailbox": "100"}],
            "mailboxes": [{"id": "100", "owner": "100", "pin": "1234"}],
            "ivrs": {
                "main": {
                    "prompts": ["system/welcome"],
                    "routes": [
                        {"digits": "1", "target": {"type": "user", "extension": "100"}},
                        {"digits": "2", "target": {"type": "ivr", "menu": "sales"}},
                        {"digits": "0", "target": {"type": "repeat"}},
                        {"digits": "9", "target": {"type": "hangup"}}
                    ],
                    "timeout_secs": 4, "max_retries": 1,
                    "invalid_prompt": "system/invalid",
                    "on_exhausted": {"type": "voicemail", "mailbox": "100"}
                },
                "sales": {"prompts": ["system/extension"], "routes": [
                    {"digits": "1", "target": {"type": "echo"}}
                ]}
            }
        })
    }

    #[test]
    fn menu_plays_with_barge_in_and_routes_a_digit() {
        let cx = context(tenant_json());
        let mut app = IvrApp::new("main");
        let v = app.on_event(AppEvent::Start, &cx);
        assert_eq!(v[0], Verb::Answer);
        assert_eq!(v[1], Verb::play(&["system/welcome"], true));
        assert!(matches!(&v[2], Verb::Gather(g) if g.max_digits == 1
            && g.first_digit_timeout == Duration::from_secs(4)));
        let v = app.on_event(gathered("2"), &cx);
        assert_eq!(
            v,
            vec![Verb::Route(Target::Ivr {
                menu: "sales".into()
            })]
        );
        assert_eq!(app.trail().as_deref(), Some("main:2"));
    }

    #[test]
    fn invalid_then_timeout_uses_retries_then_exhausted_target() {
        let cx = context(tenant_json());
        let mut s = Script::new(IvrApp::new("main"), cx);
        s.event(AppEvent::Start);
        let v = s.event(gathered("7"));
        assert_eq!(v, vec![Verb::play(&["system/invalid"], true)]);
        let v = s.event(AppEvent::PlaybackDone { interrupted: false });
        assert_eq!(v[0], Verb::play(&["system/welcome"], true));
        // Second failure: max_retries = 1 is used up.
        let v = s.event(AppEvent::Gathered {
            digits: String::new(),
            end: GatherEnd::Timeout,
        });
        assert_eq!(
            v,
            vec![Verb::Route(Target::Voicemail {
                mailbox: "100".into(),
                busy: false
            })]
        );
    }

    #[test]
    fn repeat_resets_retries_and_hangup_says_goodbye() {
        let cx = context(tenant_json());
        let mut s = Script::new(IvrApp::new("main"), cx);
        s.event(AppEvent::Start);
        s.event(gathered("5"));
        s.event(AppEvent::PlaybackDone { interrupted: false });
        let v = s.event(gathered("0"));
        assert_eq!(v[0], Verb::play(&["system/welcome"], true));
        let v = s.event(gathered("9"));
        assert_eq!(v, vec![Verb::play(&["system/goodbye"], false)]);
        let v = s.event(AppEvent::PlaybackDone { interrupted: false });
        assert_eq!(v, vec![Verb::hangup("IVR hang-up")]);
    }

    #[test]
    fn time_branches_follow_the_tenant_time_zone() {
        let b = TimeBranch {
            days: vec!["mon".into(), "tue".into()],
            start: "09:00".into(),
            end: "17:00".into(),
            target: Target::Echo,
        };
        // 2026-11-23 (a Monday) 08:30 UTC is 09:30 in Paris (UTC+1 in winter).
        let monday_0830_utc = 1_795_422_600;
        assert!(branch_matches(&b, "Europe/Paris", monday_0830_utc));
        assert!(!branch_matches(&b, "UTC", monday_0830_utc));
        // Sunday is not listed.
        assert!(!branch_matches(
            &b,
            "Europe/Paris",
            monday_0830_utc - 86_400
        ));
        let night = TimeBranch {
            days: vec![],
            start: "18:00".into(),
            end: "08:00".into(),
            target: Target::Echo,
        };
        assert!(branch_matches(&night, "UTC", monday_0830_utc - 3 * 3600));
        assert!(!branch_matches(&night, "UTC", monday_0830_utc + 3600));
        let _ = DigitRoute {
            digits: "1".into(),
            target: Target::Echo,
        };
    }

    fn gathered(d: &str) -> AppEvent {
        AppEvent::Gathered {
            digits: d.into(),
            end: GatherEnd::MaxDigits,
        }
    }
}
