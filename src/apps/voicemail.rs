//! Voicemail: leaving a message ([`DepositApp`]) and listening to them ([`MailboxMenuApp`]).
//!
//! Deposit: the mailbox's recorded greeting, else its configured prompt, else the system
//! greeting naming the extension; then the beep; then the caller is recorded until `#`,
//! five seconds of silence or the mailbox's maximum length. A message shorter than half a
//! second (a caller who hung up at the beep) is discarded. The message is kept even when the
//! caller hangs up while recording — the usual way a message ends.
//!
//! Mailbox menu (`*97` for one's own mailbox, `*98` for any mailbox number): PIN (three tries),
//! "you have N new messages, M saved messages", then `1` to listen and `3` to record the
//! greeting. Each message plays with its date and caller, then `7` deletes it, `9` saves it,
//! `#` goes to the next one (a played new message becomes saved). Every change of the counts is
//! reported to [`Services`](crate::call::Services) so phones get a message-waiting NOTIFY.

use super::{say_count, say_digits};
use crate::call::control::{App, AppEvent, CallContext, Caller, GatherSpec, RecordTarget, Verb};
use crate::mailstore::{Folder, Message};
use crate::media::leg::RecordStop;
use crate::media::Audio;
use crate::tenant::model::verify_pin;
use std::time::Duration;

use crate::records::voicemail::MIN_MESSAGE_MS;
/// Silence that ends a message.
const MESSAGE_SILENCE: Duration = Duration::from_secs(5);

/// Which system greeting plays when the mailbox has none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// "The person you are calling is not available."
    Unavailable,
    /// "The person you are calling is busy."
    Busy,
}

#[derive(Debug, Clone, PartialEq)]
enum DepositState {
    Start,
    Greeting,
    Recording { id: String },
    Goodbye,
    Done,
}

/// Leaves a message in one mailbox. See the module documentation.
pub struct DepositApp {
    mailbox: String,
    greeting: Greeting,
    state: DepositState,
    started_unix: u64,
}

impl DepositApp {
    /// A deposit into `mailbox`.
    pub fn new(mailbox: &str, greeting: Greeting) -> DepositApp {
        DepositApp {
            mailbox: mailbox.to_string(),
            greeting,
            state: DepositState::Start,
            started_unix: 0,
        }
    }

    fn greeting_audio(&self, cx: &CallContext) -> Vec<Audio> {
        let mut out = Vec::new();
        let own = Some(&cx.services.mail)
            .filter(|m| m.has_greeting(cx.tenant.id(), &self.mailbox))
            .and_then(|m| m.greeting_path(cx.tenant.id(), &self.mailbox).ok());
        let configured = cx
            .tenant
            .config
            .mailboxes
            .iter()
            .find(|m| m.id == self.mailbox)
            .and_then(|m| m.greeting.clone());
        match (own, configured) {
            (Some(p), _) => out.push(Audio::File(p)),
            (None, Some(prompt)) => out.push(Audio::Prompt(prompt)),
            (None, None) => {
                out.push(Audio::Prompt("system/extension".into()));
                out.extend(say_digits(&self.mailbox).into_iter().map(Audio::Prompt));
                out.push(Audio::Prompt(
                    match self.greeting {
                        Greeting::Unavailable => "system/unavailable",
                        Greeting::Busy => "system/busy",
                    }
                    .into(),
                ));
            }
        }
        out.push(Audio::Prompt("system/leave-message".into()));
        out.push(Audio::Prompt("system/beep".into()));
        out
    }
}

impl App for DepositApp {
    fn name(&self) -> &'static str {
        "voicemail"
    }

    fn trail(&self) -> Option<String> {
        Some(self.mailbox.clone())
    }

    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb> {
        let mailbox = cx
            .tenant
            .config
            .mailboxes
            .iter()
            .find(|m| m.id == self.mailbox);
        let Some(mailbox) = mailbox else {
            tracing::warn!(mailbox = %self.mailbox, "voicemail: no such mailbox");
            return vec![Verb::hangup("no such mailbox")];
        };
        match (&self.state, ev) {
            (DepositState::Start, AppEvent::Start) => {
                tracing::info!(mailbox = %self.mailbox, greeting = ?self.greeting, "voicemail greeting");
                self.state = DepositState::Greeting;
                self.started_unix = cx.unix_now;
                vec![
                    Verb::Answer,
                    Verb::Play {
                        audio: self.greeting_audio(cx),
                        repeat: false,
                        // A key press skips the greeting; recording starts after it.
                        barge_in: true,
                    },
                ]
            }
            (DepositState::Greeting, AppEvent::PlaybackDone { .. }) => {
                let Ok(id) = cx.services.mail.new_message_id(
                    cx.tenant.id(),
                    &self.mailbox,
                    cx.unix_now,
                    cx.call,
                ) else {
                    tracing::error!(mailbox = %self.mailbox, "voicemail: no message id for this mailbox");
                    return vec![Verb::hangup("voicemail store unavailable")];
                };
                self.state = DepositState::Recording { id: id.clone() };
                vec![Verb::Record {
                    into: RecordTarget::Message {
                        mailbox: self.mailbox.clone(),
                        id,
                    },
                    stop_digits: "#".into(),
                    max_length: Duration::from_secs(u64::from(mailbox.max_message_secs)),
                    max_silence: Some(MESSAGE_SILENCE),
                }]
            }
            (
                DepositState::Recording { id },
                AppEvent::Recorded {
                    duration_ms,
                    reason,
                    ..
                },
            ) => {
                let id = id.clone();
                self.state = DepositState::Goodbye;
                // Hung up once the goodbye has played.
                let mut verbs = vec![Verb::play(&["system/goodbye"], false)];
                if duration_ms < MIN_MESSAGE_MS {
                    tracing::info!(mailbox = %self.mailbox, duration_ms, "voicemail too short: discarded");
                    let _ = cx
                        .services
                        .mail
                        .discard_recording(cx.tenant.id(), &self.mailbox, &id);
                    return verbs;
                }
                let msg = Message {
                    id,
                    mailbox: self.mailbox.clone(),
                    caller: cx.caller.number().to_string(),
                    received_unix: self.started_unix,
                    duration_ms,
                    folder: Folder::New,
                    call: cx.call,
                };
                match cx.services.mail.commit(cx.tenant.id(), &msg) {
                    Ok(()) => {
                        // Message waiting follows once the store has it on disk.
                        tracing::info!(mailbox = %self.mailbox, id = %msg.id, duration_ms, ?reason, "voicemail left");
                        cx.services
                            .voicemail_left(cx.call, format!("{}/{}", self.mailbox, msg.id));
                    }
                    Err(e) => {
                        tracing::error!(mailbox = %self.mailbox, error = %e, "voicemail: cannot store the message");
                        verbs = vec![Verb::hangup("voicemail store unavailable")];
                    }
                }
                if reason == RecordStop::Stopped {
                    self.state = DepositState::Done;
                }
                verbs
            }
            (DepositState::Goodbye, AppEvent::PlaybackDone { .. }) => {
                self.state = DepositState::Done;
                vec![Verb::hangup("voicemail left")]
            }
            _ => vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum MenuState {
    Start,
    AskMailbox,
    AskPin { mailbox: String, tries: u32 },
    MainMenu { mailbox: String, tries: u32 },
    Playing { mailbox: String, index: usize },
    Deleted { mailbox: String, index: usize },
    Saved { mailbox: String, index: usize },
    GreetingPrompt { mailbox: String },
    RecordingGreeting { mailbox: String },
    Goodbye,
}

/// The mailbox menu. See the module documentation.
pub struct MailboxMenuApp {
    any_mailbox: bool,
    state: MenuState,
    /// Messages as listed when listening started (new first, then saved).
    messages: Vec<Message>,
}

const PIN_TRIES: u32 = 3;

impl MailboxMenuApp {
    /// `any_mailbox`: ask for the mailbox number (`*98`) instead of using the caller's.
    pub fn new(any_mailbox: bool) -> MailboxMenuApp {
        MailboxMenuApp {
            any_mailbox,
            state: MenuState::Start,
            messages: Vec::new(),
        }
    }

    fn ask_pin(&mut self, mailbox: String, tries: u32) -> Vec<Verb> {
        self.state = MenuState::AskPin { mailbox, tries };
        vec![
            Verb::play(&["system/enter-pin"], true),
            Verb::Gather(GatherSpec::until_pound(12, Duration::from_secs(10)).secret()),
        ]
    }

    fn main_menu(&mut self, cx: &CallContext, mailbox: String, tries: u32) -> Vec<Verb> {
        let c = cx.services.mail.counts(cx.tenant.id(), &mailbox);
        let mut p: Vec<String> = Vec::new();
        if c.new + c.saved == 0 {
            p.push("system/no-messages".into());
        } else {
            p.push("system/you-have".into());
            p.extend(say_count(c.new));
            p.push(if c.new == 1 {
                "system/new-message".into()
            } else {
                "system/new-messages".into()
            });
            p.extend(say_count(c.saved));
            p.push("system/saved-messages".into());
        }
        p.push("system/mailbox-menu".into());
        self.state = MenuState::MainMenu { mailbox, tries };
        vec![
            Verb::Play {
                audio: p.into_iter().map(Audio::Prompt).collect(),
                repeat: false,
                barge_in: true,
            },
            Verb::Gather(GatherSpec::one_digit(Duration::from_secs(8))),
        ]
    }

    fn play_message(&mut self, cx: &CallContext, mailbox: String, index: usize) -> Vec<Verb> {
        let Some(m) = self.messages.get(index).cloned() else {
            self.state = MenuState::Goodbye;
            return vec![Verb::play(&["system/goodbye"], false)];
        };
        let Ok(file) = cx.services.mail.audio_path(cx.tenant.id(), &mailbox, &m.id) else {
            // Deleted meanwhile (through the admin API): go on with the next one.
            return self.play_message(cx, mailbox, index + 1);
        };
        let mut audio = vec![Audio::Prompt("system/received".into())];
        audio.extend(say_date(&cx.tenant.config.timezone, m.received_unix));
        audio.push(Audio::Prompt("system/from".into()));
        audio.extend(say_digits(&m.caller).into_iter().map(Audio::Prompt));
        audio.push(Audio::File(file));
        audio.push(Audio::Prompt("system/message-menu".into()));
        if m.folder == Folder::New {
            // Heard now: it is no longer new.
            if let Err(e) =
                cx.services
                    .mail
                    .set_folder(cx.tenant.id(), &mailbox, &m.id, Folder::Saved)
            {
                tracing::warn!(%mailbox, id = %m.id, error = %e, "voicemail: not marked heard");
            }
        }
        self.state = MenuState::Playing { mailbox, index };
        vec![
            Verb::Play {
                audio,
                repeat: false,
                barge_in: true,
            },
            Verb::Gather(GatherSpec::one_digit(Duration::from_secs(10))),
        ]
    }
}

/// Prompts for a message's date: month digits, day digits, hour and minutes (the system
/// prompts have digits, not words for months).
fn say_date(tz: &str, unix: u64) -> Vec<Audio> {
    let zone = jiff::tz::TimeZone::get(tz).unwrap_or(jiff::tz::TimeZone::UTC);
    let Ok(ts) = jiff::Timestamp::from_second(unix as i64) else {
        return vec![];
    };
    let z = ts.to_zoned(zone);
    let text = format!(
        "{:02}{:02}{:02}{:02}",
        z.month(),
        z.day(),
        z.hour(),
        z.minute()
    );
    say_digits(&text).into_iter().map(Audio::Prompt).collect()
}

impl App for MailboxMenuApp {
    fn name(&self) -> &'static str {
        "voicemail_menu"
    }

    fn trail(&self) -> Option<String> {
        match &self.state {
            MenuState::AskPin { mailbox, .. }
            | MenuState::MainMenu { mailbox, .. }
            | MenuState::Playing { mailbox, .. }
            | MenuState::Deleted { mailbox, .. }
            | MenuState::Saved { mailbox, .. }
            | MenuState::GreetingPrompt { mailbox }
            | MenuState::RecordingGreeting { mailbox } => Some(mailbox.clone()),
            _ => None,
        }
    }

    fn on_event(&mut self, ev: AppEvent, cx: &CallContext) -> Vec<Verb> {
        let tenant = cx.tenant.id().to_string();
        match (self.state.clone(), ev) {
            (MenuState::Start, AppEvent::Start) => {
                let own = match &cx.caller {
                    Caller::User(ext) => cx
                        .tenant
                        .user_by_extension(ext)
                        .and_then(|u| u.mailbox.clone()),
                    Caller::Trunk { .. } => None,
                };
                let mut v = vec![Verb::Answer];
                match (self.any_mailbox, own) {
                    (false, Some(mb)) => v.extend(self.ask_pin(mb, 0)),
                    _ => {
                        self.state = MenuState::AskMailbox;
                        v.push(Verb::play(&["system/enter-mailbox"], true));
                        v.push(Verb::Gather(GatherSpec::until_pound(
                            12,
                            Duration::from_secs(10),
                        )));
                    }
                }
                v
            }
            (MenuState::AskMailbox, AppEvent::Gathered { digits, .. }) => {
                if digits.is_empty() {
                    self.state = MenuState::Goodbye;
                    return vec![Verb::play(&["system/goodbye"], false)];
                }
                // An unknown mailbox is not revealed: the PIN is asked anyway and fails.
                self.ask_pin(digits, 0)
            }
            (MenuState::AskPin { mailbox, tries }, AppEvent::Gathered { digits, .. }) => {
                // A locked mailbox answers like a wrong PIN, without even checking it: the
                // guesser learns nothing, and the lock outlives the call.
                let open = cx.services.pin_allowed(&tenant, &mailbox);
                let ok = open
                    && cx
                        .tenant
                        .config
                        .mailboxes
                        .iter()
                        .find(|m| m.id == mailbox)
                        .and_then(|m| m.pin_hash.as_deref())
                        .is_some_and(|h| !digits.is_empty() && verify_pin(&digits, h));
                if open && cx.services.pin_result(&tenant, &mailbox, ok) {
                    tracing::warn!(%tenant, %mailbox, caller = %cx.caller.number(), "voicemail: too many wrong PINs: PIN entry locked for a while");
                }
                if ok {
                    tracing::info!(%tenant, %mailbox, "voicemail: mailbox opened");
                    return self.main_menu(cx, mailbox, 0);
                }
                if !open {
                    tracing::warn!(%tenant, %mailbox, caller = %cx.caller.number(), "voicemail: PIN entry locked (too many wrong PINs)");
                }
                tracing::warn!(%tenant, %mailbox, caller = %cx.caller.number(), "voicemail: wrong PIN");
                if tries + 1 >= PIN_TRIES {
                    self.state = MenuState::Goodbye;
                    return vec![Verb::play(&["system/wrong-pin", "system/goodbye"], false)];
                }
                let mut v = self.ask_pin(mailbox, tries + 1);
                // "Wrong PIN" and the new request in one playback.
                v[0] = Verb::play(&["system/wrong-pin", "system/enter-pin"], true);
                v
            }
            (MenuState::MainMenu { mailbox, tries }, AppEvent::Gathered { digits, .. }) => {
                match digits.as_str() {
                    "1" => {
                        let mut all = cx.services.mail.list(&tenant, &mailbox).unwrap_or_default();
                        // New messages first, each group oldest first.
                        all.sort_by_key(|m| (m.folder != Folder::New, m.received_unix));
                        self.messages = all;
                        self.play_message(cx, mailbox, 0)
                    }
                    "3" => {
                        self.state = MenuState::GreetingPrompt { mailbox };
                        vec![Verb::play(&["system/record-greeting", "system/beep"], true)]
                    }
                    _ if tries + 1 >= 3 => {
                        self.state = MenuState::Goodbye;
                        vec![Verb::play(&["system/goodbye"], false)]
                    }
                    _ => self.main_menu(cx, mailbox, tries + 1),
                }
            }
            (MenuState::Playing { mailbox, index }, AppEvent::Gathered { digits, .. }) => {
                let id = self.messages.get(index).map(|m| m.id.clone());
                match (digits.as_str(), id) {
                    ("7", Some(id)) => {
                        if cx.services.mail.delete(&tenant, &mailbox, &id).is_ok() {
                            tracing::info!(%tenant, %mailbox, %id, "voicemail: message deleted");
                        }
                        self.state = MenuState::Deleted { mailbox, index };
                        vec![Verb::play(&["system/message-deleted"], true)]
                    }
                    ("9", Some(_)) => {
                        self.state = MenuState::Saved { mailbox, index };
                        vec![Verb::play(&["system/message-saved"], true)]
                    }
                    _ => self.play_message(cx, mailbox, index + 1),
                }
            }
            (
                MenuState::Deleted { mailbox, index } | MenuState::Saved { mailbox, index },
                AppEvent::PlaybackDone { .. } | AppEvent::Digit(_),
            ) => self.play_message(cx, mailbox, index + 1),
            (MenuState::GreetingPrompt { mailbox }, AppEvent::PlaybackDone { .. }) => {
                self.state = MenuState::RecordingGreeting {
                    mailbox: mailbox.clone(),
                };
                vec![Verb::Record {
                    into: RecordTarget::Greeting { mailbox },
                    stop_digits: "#".into(),
                    max_length: Duration::from_secs(60),
                    max_silence: Some(MESSAGE_SILENCE),
                }]
            }
            (MenuState::RecordingGreeting { mailbox }, AppEvent::Recorded { duration_ms, .. }) => {
                let keep = duration_ms >= MIN_MESSAGE_MS;
                match cx.services.mail.finish_greeting(&tenant, &mailbox, keep) {
                    Ok(()) if keep => {
                        tracing::info!(%tenant, %mailbox, duration_ms, "voicemail: greeting recorded")
                    }
                    Ok(()) => {}
                    Err(e) => {
                        tracing::warn!(%tenant, %mailbox, error = %e, "voicemail: greeting not kept")
                    }
                }
                self.main_menu(cx, mailbox, 0)
            }
            (MenuState::Goodbye, AppEvent::PlaybackDone { .. }) => {
                vec![Verb::hangup("voicemail menu done")]
            }
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::{context_in, Script};
    use crate::call::control::GatherEnd;

    fn tenant() -> serde_json::Value {
        serde_json::json!({
            "id": "t1", "name": "T1", "domains": ["t1.example"],
            "users": [{"extension": "100", "username": "100", "password": "x", "mailbox": "100"}],
            "mailboxes": [{"id": "100", "owner": "100", "pin": "1234", "max_message_secs": 60}]
        })
    }

    fn gathered(d: &str) -> AppEvent {
        AppEvent::Gathered {
            digits: d.into(),
            end: GatherEnd::Terminator,
        }
    }

    #[test]
    fn deposit_greets_records_and_stores_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context_in(tenant(), dir.path().to_path_buf());
        let mut s = Script::new(DepositApp::new("100", Greeting::Unavailable), cx.clone());
        let v = s.event(AppEvent::Start);
        let Verb::Play { audio, .. } = &v[1] else {
            panic!("{v:?}")
        };
        assert_eq!(audio[0], Audio::Prompt("system/extension".into()));
        assert_eq!(audio.last(), Some(&Audio::Prompt("system/beep".into())));
        let v = s.event(AppEvent::PlaybackDone { interrupted: false });
        let Verb::Record {
            into, max_length, ..
        } = &v[0]
        else {
            panic!("{v:?}")
        };
        assert!(matches!(into, RecordTarget::Message { mailbox, .. } if mailbox == "100"));
        assert_eq!(*max_length, Duration::from_secs(60));
        // What the call layer records into (the recorder makes the folder).
        let path = cx.services.recording_path("t1", into).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"RIFF").unwrap();
        // The caller hangs up while recording: the message is still kept.
        s.event(AppEvent::Recorded {
            into: into.clone(),
            duration_ms: 3200,
            reason: RecordStop::Stopped,
        });
        let msgs = cx.services.mail.list("t1", "100").unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].caller, "100");
        assert_eq!(msgs[0].duration_ms, 3200);
        assert_eq!(
            cx.services.take_changes(),
            vec![("t1".to_string(), "100".to_string())]
        );
    }

    #[test]
    fn wrong_pins_lock_the_mailbox_across_calls() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context_in(tenant(), dir.path().to_path_buf());
        // Three calls' worth of guesses (each call allows three): the sixth is past the lock.
        let mut wrong = 0;
        for _ in 0..2 {
            let mut s = Script::new(MailboxMenuApp::new(false), cx.clone());
            s.event(AppEvent::Start);
            for guess in ["0000", "1111", "2222"] {
                s.event(gathered(guess));
                wrong += 1;
            }
        }
        assert!(wrong > crate::call::PIN_MAX_FAILURES);
        // The right PIN in a new call is refused while the lock lasts.
        let mut s = Script::new(MailboxMenuApp::new(false), cx.clone());
        s.event(AppEvent::Start);
        let v = s.event(gathered("1234"));
        assert_eq!(
            v[0],
            Verb::play(&["system/wrong-pin", "system/enter-pin"], true)
        );
    }

    #[test]
    fn pins_are_stored_slowly_hashed_and_old_hashes_still_verify() {
        let h = crate::tenant::model::hash_pin("1234");
        assert!(h.starts_with("pbkdf2-sha256$20000$"), "{h}");
        assert!(verify_pin("1234", &h) && !verify_pin("1235", &h));
        // sha256$salt$hash written by earlier versions.
        let old = "sha256$0001020304050607$".to_string()
            + &{
                use sha2::{Digest, Sha256};
                let mut d = Sha256::new();
                d.update([0u8, 1, 2, 3, 4, 5, 6, 7]);
                d.update(b"4321");
                hex::encode(d.finalize())
            };
        assert!(verify_pin("4321", &old) && !verify_pin("4322", &old));
        assert!(!verify_pin("1234", "pbkdf2-sha256$0$00$00"));
    }

    #[test]
    fn mailbox_menu_checks_pin_announces_counts_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context_in(tenant(), dir.path().to_path_buf());
        let store = &cx.services.mail;
        for (i, caller) in ["555", "556"].iter().enumerate() {
            let (id, path) = store.new_message("t1", "100", 1000 + i as u64, 9).unwrap();
            std::fs::write(&path, b"RIFF").unwrap();
            store
                .commit(
                    "t1",
                    &Message {
                        id,
                        mailbox: "100".into(),
                        caller: caller.to_string(),
                        received_unix: 1000 + i as u64,
                        duration_ms: 1000,
                        folder: Folder::New,
                        call: 9,
                    },
                )
                .unwrap();
        }
        let mut s = Script::new(MailboxMenuApp::new(false), cx.clone());
        let v = s.event(AppEvent::Start);
        assert_eq!(v[1], Verb::play(&["system/enter-pin"], true));
        let v = s.event(gathered("9999"));
        assert_eq!(
            v[0],
            Verb::play(&["system/wrong-pin", "system/enter-pin"], true)
        );
        let v = s.event(gathered("1234"));
        let Verb::Play { audio, .. } = &v[0] else {
            panic!("{v:?}")
        };
        let names: Vec<String> = audio
            .iter()
            .map(|a| match a {
                Audio::Prompt(p) => p.clone(),
                Audio::File(_) => "file".into(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "system/you-have",
                "system/digit-2",
                "system/new-messages",
                "system/digit-0",
                "system/saved-messages",
                "system/mailbox-menu"
            ]
        );
        // Listen: the first message plays with its caller, then the menu.
        let v = s.event(gathered("1"));
        let Verb::Play { audio, .. } = &v[0] else {
            panic!("{v:?}")
        };
        assert!(audio.contains(&Audio::Prompt("system/digit-5".into())));
        assert!(audio.iter().any(|a| matches!(a, Audio::File(_))));
        assert_eq!(store.counts("t1", "100").new, 1, "heard → saved");
        // 7 deletes it, then the second plays.
        s.event(gathered("7"));
        assert_eq!(store.list("t1", "100").unwrap().len(), 1);
        let v = s.event(AppEvent::PlaybackDone { interrupted: false });
        assert!(matches!(&v[0], Verb::Play { .. }));
        // # past the last message: goodbye, then hang up.
        let v = s.event(gathered(""));
        assert_eq!(v, vec![Verb::play(&["system/goodbye"], false)]);
        let v = s.event(AppEvent::PlaybackDone { interrupted: false });
        assert!(matches!(&v[0], Verb::Hangup { .. }));
    }

    #[test]
    fn three_wrong_pins_hang_up() {
        let cx = context_in(tenant(), tempfile::tempdir().unwrap().keep());
        let mut s = Script::new(MailboxMenuApp::new(true), cx);
        s.event(AppEvent::Start);
        s.event(gathered("100"));
        s.event(gathered("1"));
        s.event(gathered("2"));
        let v = s.event(gathered("3"));
        assert_eq!(
            v,
            vec![Verb::play(&["system/wrong-pin", "system/goodbye"], false)]
        );
    }
}
