//! The runner on a fake clock against a fake media backend ([`FakeMedia`]): no engine, no
//! sockets, no stores. Each test feeds the endpoint's and the engine's events in the order
//! the server would and checks what the runner asks of SIP, of media and of the stores.

use super::*;
use crate::call::media::{FakeMedia, MediaCall};
use crate::media::leg::LegQuality;
use crate::records::call::{Disposition, EndedBy};
use crate::sip::endpoint::CallEvent;
use crate::tenant::model::{RecordingPolicy, Target};
use std::time::Duration;

const UNIX: u64 = 1_800_000_000;

struct Rig {
    runner: CallRunner,
    media: FakeMedia,
    now: Instant,
    _dir: tempfile::TempDir,
}

fn demo(edit: impl FnOnce(&mut crate::tenant::TenantConfig)) -> Arc<crate::tenant::Tenant> {
    let mut cfg = crate::server::demo_tenant().expect("demo");
    edit(&mut cfg);
    crate::tenant::Snapshot::new(1, vec![cfg], None)
        .tenant("demo")
        .cloned()
        .expect("tenant")
}

fn audio() -> crate::sdp::NegotiatedAudio {
    let sdp = "v=0\r\nc=IN IP4 192.0.2.9\r\nm=audio 4000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";
    crate::sdp::negotiate(&crate::sdp::SessionDescription::parse(sdp.as_bytes()).expect("sdp"))
        .expect("negotiate")
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().expect("tmp");
        let media = FakeMedia::default();
        let services = Arc::new(Services::new(dir.path().join("voicemail")));
        Rig {
            runner: CallRunner::new(Box::new(media.clone()), services, crate::apps::for_target),
            media,
            now: Instant::now(),
            _dir: dir,
        }
    }

    fn event(&mut self, ev: CallEvent) {
        self.runner.on_call_event(ev, self.now, UNIX);
    }

    fn media_event(&mut self, ev: MediaEvent) {
        self.runner.on_media_event(ev, self.now, UNIX);
    }

    fn actions(&mut self) -> Vec<CallAction> {
        std::iter::from_fn(|| self.runner.poll_action()).collect()
    }

    /// A trunk call to `target` arrives (call id `call`).
    fn incoming(&mut self, call: u64, tenant: Arc<crate::tenant::Tenant>, target: Target) {
        self.event(CallEvent::Incoming {
            call,
            tenant,
            caller: Caller::Trunk {
                trunk: "sandbox".into(),
                number: "+15557654321".into(),
            },
            dialed: "+15550600".into(),
            call_id: format!("c{call}"),
            target,
        });
    }

    /// The endpoint says media may start for `call`: returns the leg the runner started and
    /// what else it asked of media.
    fn media_start(&mut self, call: u64) -> (LegId, Vec<MediaCall>) {
        self.event(CallEvent::MediaStart {
            call,
            audio: audio(),
            signalling_ip: "192.0.2.9".parse().expect("ip"),
        });
        let mut asked = self.media.take();
        let i = asked
            .iter()
            .position(|c| matches!(c, MediaCall::Start { call: c, .. } if *c == call))
            .expect("a leg started for the call");
        let MediaCall::Start { leg, .. } = asked.remove(i) else {
            unreachable!("matched above")
        };
        (leg, asked)
    }

    /// A trunk call to user 101 whose phone answers: returns the caller's leg, the callee's
    /// and what the runner asked of media when the caller's leg started.
    fn bridged_user_call(
        &mut self,
        tenant: Arc<crate::tenant::Tenant>,
    ) -> (LegId, LegId, Vec<MediaCall>) {
        self.bridged_user_call_as(1, 2, tenant)
    }

    /// Call `call` to user 101, answered on leg `leg` and bridged.
    fn bridged_user_call_as(
        &mut self,
        call: u64,
        leg: u64,
        tenant: Arc<crate::tenant::Tenant>,
    ) -> (LegId, LegId, Vec<MediaCall>) {
        self.incoming(
            call,
            tenant,
            Target::User {
                extension: "101".into(),
            },
        );
        self.actions();
        self.runner.dial_done(call, 1, self.now, UNIX);
        self.event(CallEvent::LegStarted { leg, parent: call });
        self.event(CallEvent::LegAnswered { leg });
        self.actions();
        let (callee, _) = self.media_start(leg);
        let (caller, asked) = self.media_start(call);
        (caller, callee, asked)
    }

    fn ended(&mut self, call: u64, by: EndedBy, cause: HangupCause) {
        self.event(CallEvent::Ended {
            call,
            by,
            code: None,
            cause,
            reason: String::new(),
        });
    }

    fn closed(&mut self, leg: LegId) {
        self.media_event(MediaEvent::Closed {
            leg,
            quality: LegQuality {
                packets_sent: 50,
                packets_received: 49,
                ..Default::default()
            },
        });
    }
}

#[test]
fn an_echo_call_is_answered_echoed_and_leaves_one_record_after_its_media_closed() {
    let mut r = Rig::new();
    r.incoming(1, demo(|_| {}), Target::Echo);
    assert_eq!(
        r.actions(),
        vec![CallAction::Ring { call: 1 }, CallAction::Answer { call: 1 }]
    );
    let (leg, asked) = r.media_start(1);
    assert_eq!(asked, vec![MediaCall::Echo(leg)]);
    r.now += Duration::from_secs(5);
    r.ended(1, EndedBy::Caller, HangupCause::CallerHangup);
    assert_eq!(r.media.take(), vec![MediaCall::Destroy(leg)]);
    assert!(
        r.runner.poll_finished().is_none(),
        "the record waits for the RTP figures"
    );
    r.closed(leg);
    let done = r.runner.poll_finished().expect("record");
    let rec = done.record;
    assert_eq!(rec.tenant, "demo");
    assert_eq!(rec.from, "+15557654321");
    assert_eq!(rec.direction, crate::records::call::Direction::Inbound);
    assert_eq!(rec.disposition, Disposition::Answered);
    assert_eq!(rec.ended_by, EndedBy::Caller);
    assert_eq!(rec.hangup_cause, HangupCause::CallerHangup);
    assert_eq!(rec.path, "echo");
    assert_eq!(rec.quality.expect("quality").packets_received, 49);
    assert!(done.recordings.is_empty());
    assert!(r.runner.poll_finished().is_none(), "one record per call");
    assert_eq!(r.runner.legs(), 0);
}

#[test]
fn a_call_whose_media_never_started_is_recorded_without_quality() {
    let mut r = Rig::new();
    r.incoming(1, demo(|_| {}), Target::Echo);
    r.actions();
    // The caller hung up between the 200 and its media: nothing was reserved any more.
    r.media.unreserve(1);
    r.event(CallEvent::MediaStart {
        call: 1,
        audio: audio(),
        signalling_ip: "192.0.2.9".parse().expect("ip"),
    });
    r.ended(1, EndedBy::Caller, HangupCause::CallerCancel);
    assert!(r.media.take().is_empty(), "no leg started, none destroyed");
    let rec = r.runner.poll_finished().expect("record").record;
    assert_eq!(rec.hangup_cause, HangupCause::CallerCancel);
    assert!(rec.quality.is_none());
}

#[test]
fn digits_for_a_party_without_telephone_event_become_sip_info() {
    let mut r = Rig::new();
    r.incoming(1, demo(|_| {}), Target::Echo);
    r.actions();
    let (leg, _) = r.media_start(1);
    // The engine could not put the digit into this leg's RTP (no telephone-event).
    r.media_event(MediaEvent::RelayDigitByInfo {
        to: leg,
        digit: '5',
    });
    assert_eq!(
        r.actions(),
        vec![CallAction::SendDigit {
            call: 1,
            digit: '5'
        }]
    );
    // A leg nobody knows (already gone): nothing is sent.
    r.media_event(MediaEvent::RelayDigitByInfo {
        to: LegId(999_999),
        digit: '6',
    });
    assert!(r.actions().is_empty());
}

#[test]
fn a_user_call_rings_the_phone_bridges_both_legs_and_ends_when_the_callee_hangs_up() {
    let mut r = Rig::new();
    r.incoming(
        1,
        demo(|_| {}),
        Target::User {
            extension: "101".into(),
        },
    );
    let dial = r.actions();
    assert!(
        dial.iter()
            .any(|a| matches!(a, CallAction::Dial { call: 1, targets, .. } if targets.len() == 1)),
        "{dial:?}"
    );
    r.runner.dial_done(1, 1, r.now, UNIX);
    r.event(CallEvent::LegStarted { leg: 2, parent: 1 });
    r.event(CallEvent::LegProgress { leg: 2, code: 180 });
    assert!(r.actions().contains(&CallAction::Ring { call: 1 }));
    r.event(CallEvent::LegAnswered { leg: 2 });
    assert!(r.actions().contains(&CallAction::Answer { call: 1 }));
    let (callee, _) = r.media_start(2);
    let (caller, asked) = r.media_start(1);
    assert!(
        asked.contains(&MediaCall::Bridge(caller, callee)),
        "both legs bridged once both have media: {asked:?}"
    );
    // The callee hangs up: its leg's media goes, and the caller is hung up for that reason.
    r.event(CallEvent::Ended {
        call: 2,
        by: EndedBy::Callee,
        code: None,
        cause: HangupCause::CalleeHangup,
        reason: "callee hung up".into(),
    });
    assert!(r.media.take().contains(&MediaCall::Destroy(callee)));
    let hangups: Vec<CallAction> = r
        .actions()
        .into_iter()
        .filter(|a| matches!(a, CallAction::Hangup { .. }))
        .collect();
    assert!(
        matches!(
            &hangups[..],
            [CallAction::Hangup {
                call: 1,
                cause: HangupCause::CalleeHangup,
                ..
            }]
        ),
        "{hangups:?}"
    );
    r.ended(1, EndedBy::Server, HangupCause::CalleeHangup);
    r.closed(callee);
    r.closed(caller);
    let rec = r.runner.poll_finished().expect("record").record;
    assert_eq!(rec.hangup_cause, HangupCause::CalleeHangup);
    assert_eq!(rec.disposition, Disposition::Answered);
    assert_eq!(rec.legs.len(), 1);
    assert_eq!(rec.legs[0].ended_by, Some(EndedBy::Callee));
    assert!(rec.legs[0].quality.is_some());
}

#[test]
fn the_called_party_transfers_the_caller_to_another_destination() {
    let mut r = Rig::new();
    let (_caller, callee, _) = r.bridged_user_call(demo(|_| {}));
    // REFER from the called phone: the caller goes to the echo test, the transferor is hung up.
    r.event(CallEvent::Transfer {
        call: 2,
        target: "600".into(),
    });
    let actions = r.actions();
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, CallAction::Hangup { call: 2, .. })),
        "the transferor's leg is hung up: {actions:?}"
    );
    r.ended(2, EndedBy::Server, HangupCause::Server);
    let asked = r.media.take();
    assert!(asked.contains(&MediaCall::Destroy(callee)), "{asked:?}");
    let path = r.runner.path_of(1).unwrap_or_default();
    assert!(
        path.ends_with("echo"),
        "the caller runs the echo test now: {path}"
    );
}

#[test]
fn an_attended_transfer_joins_the_caller_to_the_consulted_party() {
    let mut r = Rig::new();
    // Call 1 (caller, leg 2 = the transferor) and call 3 (the transferor's consultation call,
    // leg 4 = the consulted party).
    let (caller, transferor, _) = r.bridged_user_call(demo(|_| {}));
    let (consultation, consulted, _) = r.bridged_user_call_as(3, 4, demo(|_| {}));
    r.media.take();
    r.event(CallEvent::AttendedTransfer {
        call: 2,
        replaces: 1,
    });
    assert!(
        r.actions().is_empty(),
        "a leg's own call is no consultation"
    );
    r.event(CallEvent::AttendedTransfer {
        call: 2,
        replaces: 3,
    });
    let actions = r.actions();
    for ended in [2, 3] {
        assert!(
            actions.iter().any(|a| matches!(a, CallAction::Hangup { call, cause: HangupCause::Transferred, .. } if *call == ended)),
            "{ended} is hung up: {actions:?}"
        );
    }
    assert!(actions.contains(&CallAction::Hold {
        call: 1,
        hold: false
    }));
    assert!(r
        .media
        .take()
        .contains(&MediaCall::Bridge(caller, consulted)));
    r.ended(2, EndedBy::Server, HangupCause::Transferred);
    r.ended(3, EndedBy::Server, HangupCause::Transferred);
    assert!(
        !r.actions()
            .iter()
            .any(|a| matches!(a, CallAction::Hangup { call: 4, .. })),
        "the consulted party stays"
    );
    r.closed(transferor);
    r.closed(consultation);
    let rec = r
        .runner
        .poll_finished()
        .expect("consultation record")
        .record;
    assert_eq!(rec.hangup_cause, HangupCause::Transferred);
    assert!(
        rec.legs.is_empty(),
        "the consulted leg moved: {:?}",
        rec.legs
    );
    // The caller hangs up: the consulted party is hung up with it, and call 1's record lists
    // both legs.
    r.ended(1, EndedBy::Caller, HangupCause::CallerHangup);
    assert!(r
        .actions()
        .iter()
        .any(|a| matches!(a, CallAction::Hangup { call: 4, .. })));
    r.ended(4, EndedBy::Server, HangupCause::Server);
    r.closed(consulted);
    r.closed(caller);
    let rec = r
        .runner
        .poll_finished()
        .expect("first call's record")
        .record;
    assert_eq!(
        rec.legs.iter().map(|l| l.leg).collect::<Vec<_>>(),
        vec![2, 4]
    );
}

#[test]
fn a_tenant_that_records_every_call_records_bridged_calls_and_lists_the_file() {
    let mut r = Rig::new();
    let tenant = demo(|c| c.settings.recording = RecordingPolicy::Always);
    let (leg, callee, asked) = r.bridged_user_call(tenant);
    let path = asked
        .iter()
        .find_map(|c| match c {
            MediaCall::Record { leg: l, path } if *l == leg => Some(path.clone()),
            _ => None,
        })
        .expect("the call is recorded");
    assert!(path.starts_with(r._dir.path()), "{}", path.display());
    r.ended(1, EndedBy::Caller, HangupCause::CallerHangup);
    r.closed(callee);
    r.media_event(MediaEvent::Leg {
        leg,
        event: LegEvent::RecordingDone {
            path: path.clone(),
            duration_ms: 3000,
            reason: crate::media::leg::RecordStop::Stopped,
        },
    });
    r.closed(leg);
    let done = r.runner.poll_finished().expect("record");
    assert_eq!(done.recordings, vec![path.clone()]);
    let name = path.file_name().expect("name").to_string_lossy();
    assert_eq!(done.record.recording, Some(format!("demo/{name}")));
}

#[test]
fn no_recording_when_the_tenant_never_records_and_no_user_asks() {
    let mut r = Rig::new();
    let (_, _, asked) =
        r.bridged_user_call(demo(|c| c.settings.recording = RecordingPolicy::Never));
    assert!(
        !asked.iter().any(|c| matches!(c, MediaCall::Record { .. })),
        "{asked:?}"
    );
}

#[test]
fn a_prompt_the_loader_cannot_read_hangs_the_caller_up_instead_of_leaving_silence() {
    let mut r = Rig::new();
    r.incoming(
        1,
        demo(|_| {}),
        Target::Ivr {
            menu: "main".into(),
        },
    );
    r.actions();
    let (leg, asked) = r.media_start(1);
    let tag = asked
        .iter()
        .find_map(|c| match c {
            MediaCall::Play { leg: l, tag, .. } if *l == leg => Some(*tag),
            _ => None,
        })
        .expect("the menu plays its prompt");
    r.media_event(MediaEvent::PlaybackFailed {
        leg,
        tag,
        error: "prompt tenants/demo/welcome not found".into(),
    });
    assert_eq!(
        r.actions(),
        vec![CallAction::Hangup {
            call: 1,
            cause: HangupCause::Server,
            reason: "prompt unavailable".into(),
        }]
    );
}

/// The event stream's view of an IVR call: started, the menu, answered, the caller's digit,
/// then the app the menu sent it to (with the path so far).
#[test]
fn a_call_through_a_menu_is_told_step_by_step() {
    use crate::call::events::NoticeKind;
    let mut r = Rig::new();
    r.incoming(
        1,
        demo(|_| {}),
        Target::Ivr {
            menu: "main".into(),
        },
    );
    r.actions();
    r.media_start(1);
    r.event(CallEvent::Digit {
        call: 1,
        digit: '3',
    });
    r.actions();
    let told: Vec<_> = std::iter::from_fn(|| r.runner.poll_notice()).collect();
    let kinds: Vec<NoticeKind> = told.iter().map(|n| n.event).collect();
    assert_eq!(
        kinds,
        [
            NoticeKind::Started,
            NoticeKind::App,
            NoticeKind::Answered,
            NoticeKind::Digit,
            NoticeKind::App
        ],
        "{told:?}"
    );
    assert!(told.iter().all(|n| n.call == 1 && n.tenant == "demo"));
    assert_eq!(told[1].app.as_deref(), Some("ivr"));
    assert_eq!(told[3].digit.as_deref(), Some("3"));
    assert_eq!(told[4].app.as_deref(), Some("voicemail"));
    assert!(
        told[4]
            .path
            .as_deref()
            .is_some_and(|p| p.starts_with("ivr:main") && p.ends_with("voicemail:100")),
        "{:?}",
        told[4].path
    );
}
