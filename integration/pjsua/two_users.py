#!/usr/bin/env python3
"""Two registered users call each other through the server with PJSUA2; audio must flow both ways.

One process, one pjsua2 Endpoint, one UDP transport per user (separate local
ports). Both users REGISTER with digest auth (realm '*'); the caller then
calls the callee through the server. The callee answers (180, then 200), both
sides loop a tone WAV into the call and record what they hear; after
--seconds of media the caller hangs up and the server must BYE the callee.

With --no-answer the callee only registers and lets the call ring (180,
never 200): the server must give up ringing it (CANCEL) and answer the caller
with the callee's voicemail instead; the caller then plays and records as
usual.

Only PCMU/8000 and PCMA/8000 are enabled; the conference bridge runs at
8 kHz, so the recordings are 16-bit PCM mono 8 kHz WAVs.

stdout carries exactly one JSON line (everything pjsip prints goes to
stderr), e.g.
  {"ok": true, "caller_status": 200, "callee_answered": true,
   "callee_disconnected": true, "codec": "PCMU/8000", ...}

Exit codes:
  0  registered, call answered, media both ways, hung up cleanly
     (and, with --check-freqs, each side heard the other's tone)
  2  bad arguments / input file
  3  registration or call failed (rejected, not answered in time, media
     never active, callee not hung up by the server, ...)
  4  PJSUA2 library error
  5  --check-freqs: a recording's dominant frequency is not within
     +/-15 Hz of the other side's tone (or the recording is silent)
"""

import argparse
import cmath
import json
import math
import os
import struct
import sys
import time
import traceback

try:
    import pjsua2 as pj
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write(
        "two_users: cannot import pjsua2; install it with "
        "`pip install -r integration/pjsua/requirements.txt`\n")
    sys.exit(4)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pjcommon import lib_init  # noqa: E402

REGISTER_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 10.0
# The demo users ring for ring_timeout_secs = 20 before voicemail takes the call.
NO_ANSWER_TIMEOUT_S = 30.0
MEDIA_TIMEOUT_S = 5.0
DISCONNECT_TIMEOUT_S = 5.0
FREQ_TOLERANCE_HZ = 15.0
SILENCE_DBFS = -50.0


def log(msg):
    sys.stderr.write("two_users: %s\n" % msg)
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Calls and accounts
# --------------------------------------------------------------------------

class Call(pj.Call):
    """One side's call: state, media attachment (player + recorder)."""

    def __init__(self, acc, name, play, record, call_id=pj.PJSUA_INVALID_ID):
        pj.Call.__init__(self, acc, call_id)
        self.name = name
        self.play = play
        self.record = record
        self.state = pj.PJSIP_INV_STATE_NULL
        self.state_text = "NULL"
        self.last_status = 0
        self.last_reason = ""
        self.answer_status = None      # final status of the INVITE when CONFIRMED
        self.confirmed_at = None
        self.media_at = None
        self.disconnected_at = None
        self.player = None
        self.recorder = None
        self.codec = None
        self.media_error = None
        self.media_stopped = False

    def onCallState(self, prm):
        ci = self.getInfo()
        self.state = ci.state
        self.state_text = ci.stateText
        self.last_status = ci.lastStatusCode
        self.last_reason = ci.lastReason
        log("%s: call %s (%d %s)" % (self.name, ci.stateText, ci.lastStatusCode,
                                     ci.lastReason.strip()))
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
            self.answer_status = ci.lastStatusCode
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED and self.disconnected_at is None:
            self.disconnected_at = time.monotonic()

    def onCallMediaState(self, prm):
        if self.media_at is not None or self.media_stopped:
            return
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            try:
                self._start_media(mi.index)
            except pj.Error as e:
                self.media_error = e.info()
            return

    def _start_media(self, med_idx):
        aud = self.getAudioMedia(med_idx)
        # What we hear -> recorder.
        self.recorder = pj.AudioMediaRecorder()
        self.recorder.createRecorder(self.record)
        aud.startTransmit(self.recorder)
        # Tone file (looped; options=0 means loop) -> call.
        self.player = pj.AudioMediaPlayer()
        self.player.createPlayer(self.play, 0)
        self.player.startTransmit(aud)
        try:
            si = self.getStreamInfo(med_idx)
            self.codec = "%s/%d" % (si.codecName, si.codecClockRate)
        except pj.Error:
            self.codec = None
        self.media_at = time.monotonic()
        log("%s: media active (%s), playing %s, recording %s" % (
            self.name, self.codec or "codec?", self.play, self.record))

    def stop_media(self):
        # Destroy player/recorder while the library is alive; dropping the
        # recorder finalises the WAV header.
        self.media_stopped = True
        self.player = None
        self.recorder = None


class Account(pj.Account):
    def __init__(self, name):
        pj.Account.__init__(self)
        self.name = name
        self.reg_code = None
        self.reg_reason = ""
        self.incoming = []          # Call objects for incoming calls (kept alive here)
        self.on_incoming = None     # callable(call_id) -> Call or None

    def onRegState(self, prm):
        self.reg_code = prm.code
        self.reg_reason = prm.reason
        log("%s: registration %d %s (expires %d)" % (
            self.name, prm.code, prm.reason.strip(), prm.expiration))

    def onIncomingCall(self, prm):
        if self.on_incoming is None:
            log("%s: unexpected incoming call: 486" % self.name)
            c = Call(self, self.name, None, None, prm.callId)
            self.incoming.append(c)
            op = pj.CallOpParam()
            op.statusCode = 486
            c.hangup(op)
            return
        c = self.on_incoming(self, prm.callId)
        if c is not None:
            self.incoming.append(c)


# --------------------------------------------------------------------------
# Arguments and setup
# --------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="SIP server HOST:PORT (UDP)")
    p.add_argument("--domain", default="demo.switchyard.test",
                   help="tenant domain; used only with --use-domain "
                        "(default demo.switchyard.test)")
    p.add_argument("--use-domain", action="store_true",
                   help="address users as sip:USER@DOMAIN (registrar sip:DOMAIN) and send "
                        "everything through the server as outbound proxy; default: "
                        "sip:USER@HOST, registrar sip:HOST:PORT (the default tenant)")
    p.add_argument("--caller", default="100", help="caller's user/extension (default 100)")
    p.add_argument("--caller-password", default="demo100")
    p.add_argument("--callee", default="101", help="callee's user/extension (default 101)")
    p.add_argument("--callee-password", default="demo101")
    p.add_argument("--tls-port", type=int, default=None,
                   help="the server's TLS port, for a party that registers over TLS")
    p.add_argument("--ca", help="PEM the server's TLS certificate must chain to")
    for who in ("caller", "callee"):
        p.add_argument("--%s-tls" % who, action="store_true",
                       help="the %s registers and calls over TLS (needs --tls-port)" % who)
        p.add_argument("--%s-srtp" % who, action="store_true",
                       help="the %s requires SRTP with SDES keys (needs --%s-tls)" % (who, who))
    p.add_argument("--caller-wav", required=True, help="WAV the caller loops into the call")
    p.add_argument("--callee-wav", help="WAV the callee loops into the call")
    p.add_argument("--caller-rec", required=True, help="WAV file: what the caller hears")
    p.add_argument("--callee-rec", help="WAV file: what the callee hears")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="talk time after the caller's media is active (default 4)")
    p.add_argument("--no-answer", action="store_true",
                   help="callee only registers and lets the call ring; the server must "
                        "answer with voicemail after the ring timeout")
    p.add_argument("--answer-delay", type=float, default=0.5,
                   help="seconds the callee rings (180) before answering 200 (default 0.5)")
    p.add_argument("--answer-timeout", type=float, default=None,
                   help="seconds the caller waits for CONFIRMED (default %.0f, or %.0f with "
                        "--no-answer)" % (ANSWER_TIMEOUT_S, NO_ANSWER_TIMEOUT_S))
    p.add_argument("--check-freqs", nargs=2, type=float, metavar=("CALLER_HZ", "CALLEE_HZ"),
                   help="tones in --caller-wav and --callee-wav: each recording's loudest "
                        "second must peak within +/-%.0f Hz of the other side's tone "
                        "(exit 5 otherwise)" % FREQ_TOLERANCE_HZ)
    p.add_argument("--log-level", type=int, default=0,
                   help="pjsip log level on stderr (default 0 = quiet; 4 shows SIP messages)")
    p.add_argument("--log-file", help="also write pjsip's log to this file")
    p.add_argument("--log-file-level", type=int, default=4,
                   help="pjsip log level for --log-file (default 4: SIP messages)")
    opts = p.parse_args(argv)

    host, sep, port = opts.server.rpartition(":")
    if not sep or not host or not port.isdigit():
        p.error("--server must be HOST:PORT")
    opts.host = host
    opts.port = int(port)
    if opts.caller == opts.callee:
        p.error("--caller and --callee must differ")
    for who in ("caller", "callee"):
        if getattr(opts, who + "_tls") and opts.tls_port is None:
            p.error("--%s-tls needs --tls-port" % who)
        if getattr(opts, who + "_srtp") and not getattr(opts, who + "_tls"):
            p.error("--%s-srtp needs --%s-tls" % (who, who))
    if not opts.no_answer:
        if not opts.callee_wav or not opts.callee_rec:
            p.error("--callee-wav and --callee-rec are required unless --no-answer")
    elif opts.check_freqs:
        p.error("--check-freqs needs an answered call (not --no-answer)")
    if opts.seconds <= 0:
        p.error("--seconds must be positive")
    if opts.answer_timeout is None:
        opts.answer_timeout = NO_ANSWER_TIMEOUT_S if opts.no_answer else ANSWER_TIMEOUT_S
    for f in (opts.caller_wav, opts.callee_wav):
        if f is not None and not os.path.isfile(f):
            p.error("wav file not found: %s" % f)
    for attr in ("caller_rec", "callee_rec", "log_file"):
        f = getattr(opts, attr)
        if f is None:
            continue
        f = os.path.abspath(f)
        setattr(opts, attr, f)
        if not os.path.isdir(os.path.dirname(f)):
            p.error("directory does not exist: %s" % os.path.dirname(f))
    if opts.caller_wav:
        opts.caller_wav = os.path.abspath(opts.caller_wav)
    if opts.callee_wav:
        opts.callee_wav = os.path.abspath(opts.callee_wav)
    return opts


def configure_codecs(ep):
    for c in ep.codecEnum2():
        cid = c.codecId
        if cid.startswith("PCMU/8000"):
            prio = 255
        elif cid.startswith("PCMA/8000"):
            prio = 254
        else:
            prio = 0
        ep.codecSetPriority(cid, prio)


def make_account(opts, name, user, password, transport_id):
    acfg = pj.AccountConfig()
    if getattr(opts, name + "_tls"):
        acfg.idUri = "sip:%s@%s" % (user, opts.host)
        acfg.regConfig.registrarUri = "sip:%s:%d;transport=tls" % (opts.host, opts.tls_port)
    elif opts.use_domain:
        acfg.idUri = "sip:%s@%s" % (user, opts.domain)
        acfg.regConfig.registrarUri = "sip:%s" % opts.domain
        acfg.sipConfig.proxies.append("sip:%s:%d;lr" % (opts.host, opts.port))
    else:
        acfg.idUri = "sip:%s@%s" % (user, opts.host)
        acfg.regConfig.registrarUri = "sip:%s:%d" % (opts.host, opts.port)
    acfg.regConfig.timeoutSec = 300
    acfg.regConfig.retryIntervalSec = 0      # no silent re-registration attempts
    acfg.sipConfig.transportId = transport_id
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
    acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
    acfg.natConfig.contactRewriteUse = 0     # loopback: nothing to learn from rport
    acfg.natConfig.viaRewriteUse = 0
    if getattr(opts, name + "_srtp"):
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
        acfg.mediaConfig.srtpSecureSignaling = 1
        keyings = pj.IntVector()
        keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
        acfg.mediaConfig.srtpOpt.keyings = keyings
    acc = Account(name)
    acc.create(acfg)
    return acc


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------

class Outcome:
    def __init__(self):
        self.failure = None
        self.registered = {"caller": None, "callee": None}
        self.caller = None
        self.callee = None          # the callee's Call, once the INVITE arrived
        self.callee_answered = False
        self.hangup_at = None
        self.caller_info = None
        self.callee_info = None
        self.pj_error = None
        self.crash = None


def run(opts, out):
    ep = pj.Endpoint()
    ep.libCreate()
    try:
        # Errors are caught here, inside the library's lifetime: leaving the except
        # block frees the traceback and with it the Call objects its frames hold, while
        # pjsua still exists (a Call destroyed after libDestroy() aborts the process).
        try:
            session(ep, opts, out)
        except pj.Error as e:
            out.pj_error = e.info()
        except Exception:
            out.crash = traceback.format_exc()
    finally:
        try:
            ep.libDestroy()
        except pj.Error as e:
            log("libDestroy: %s" % e.info())
        del ep


def session(ep, opts, out):
    lib_init(ep, "switchyard-pjsua-two-users", opts.log_level, opts.log_file,
             opts.log_file_level)

    tids = []
    for who in ("caller", "callee"):
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = "127.0.0.1"
        if getattr(opts, who + "_tls"):
            if opts.ca:
                tcfg.tlsConfig.CaListFile = opts.ca
                tcfg.tlsConfig.verifyServer = True
            tids.append(ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg))
        else:
            tids.append(ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg))
    ep.libStart()
    ep.audDevManager().setNullDev()
    configure_codecs(ep)

    caller_acc = make_account(opts, "caller", opts.caller, opts.caller_password, tids[0])
    callee_acc = make_account(opts, "callee", opts.callee, opts.callee_password, tids[1])

    def on_incoming(acc, call_id):
        try:
            return take_call(acc, call_id)
        except pj.Error as e:
            if out.failure is None:
                out.failure = "callee could not take the incoming call: %s" % e.info()
            return None

    def take_call(acc, call_id):
        c = Call(acc, "callee", opts.callee_wav, opts.callee_rec, call_id)
        if out.callee is not None:
            log("callee: second incoming call: 486")
            op = pj.CallOpParam()
            op.statusCode = 486
            c.hangup(op)
            return c
        out.callee = c
        c.rang_at = time.monotonic()
        ci = c.getInfo()
        log("callee: incoming call from %s" % ci.remoteUri)
        op = pj.CallOpParam()
        op.statusCode = 180
        c.answer(op)
        return c

    callee_acc.on_incoming = on_incoming

    try:
        if wait_registered(ep, caller_acc, callee_acc, out):
            drive(ep, caller_acc, opts, out)
    finally:
        stop_all_media([out.caller] + caller_acc.incoming + callee_acc.incoming)
        # Let any final BYE/CANCEL exchange settle.
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            ep.libHandleEvents(20)
        out.caller_info = call_summary(out.caller)
        out.callee_info = call_summary(out.callee)
        out.caller = None
        out.callee = None
        caller_acc.incoming = []
        callee_acc.incoming = []
        caller_acc.shutdown()
        callee_acc.shutdown()
        del caller_acc, callee_acc


def stop_all_media(calls):
    # A helper, not an inline loop: a loop variable in session() would keep the last
    # Call alive past libDestroy(), and its destructor would then assert inside pjsua.
    for c in calls:
        if c is not None:
            c.stop_media()


def call_summary(c):
    if c is None:
        return None
    return {
        "state": c.state_text,
        "last_status": c.last_status,
        "last_reason": c.last_reason.strip(),
        "answer_status": c.answer_status,
        "codec": c.codec,
        "media": c.media_at is not None,
        "disconnected": c.disconnected_at is not None,
    }


def wait_registered(ep, caller_acc, callee_acc, out):
    start = time.monotonic()
    accs = {"caller": caller_acc, "callee": callee_acc}
    while True:
        ep.libHandleEvents(20)
        for name, acc in accs.items():
            out.registered[name] = acc.reg_code
        codes = [a.reg_code for a in accs.values()]
        if all(c == 200 for c in codes):
            return True
        for name, acc in accs.items():
            if acc.reg_code is not None and acc.reg_code >= 300:
                out.failure = "%s registration failed: %d %s" % (
                    name, acc.reg_code, acc.reg_reason.strip())
                return False
        if time.monotonic() - start > REGISTER_TIMEOUT_S:
            out.failure = "registration not 200 within %.0f s (caller %s, callee %s)" % (
                REGISTER_TIMEOUT_S, caller_acc.reg_code, callee_acc.reg_code)
            return False


def drive(ep, caller_acc, opts, out):
    if opts.caller_tls:
        uri = "sip:%s@%s:%d;transport=tls" % (opts.callee, opts.host, opts.tls_port)
    elif opts.use_domain:
        uri = "sip:%s@%s" % (opts.callee, opts.domain)
    else:
        uri = "sip:%s@%s:%d" % (opts.callee, opts.host, opts.port)
    call = Call(caller_acc, "caller", opts.caller_wav, opts.caller_rec)
    out.caller = call
    cprm = pj.CallOpParam(True)
    cprm.opt.audioCount = 1
    cprm.opt.videoCount = 0
    log("caller: calling %s" % uri)
    call.makeCall(uri, cprm)

    start = time.monotonic()
    hangup_at = None

    def fail(msg):
        if out.failure is None:
            out.failure = msg

    while True:
        ep.libHandleEvents(20)
        now = time.monotonic()
        callee = out.callee

        # Callee side: answer after the ringing delay; stop its media when the server
        # hangs it up (keeps silence after BYE out of its recording).
        if callee is not None:
            if (not opts.no_answer and not out.callee_answered
                    and callee.disconnected_at is None
                    and now - callee.rang_at >= opts.answer_delay):
                op = pj.CallOpParam()
                op.statusCode = 200
                callee.answer(op)
                out.callee_answered = True
                log("callee: answered 200")
            if callee.disconnected_at is not None and not callee.media_stopped:
                callee.stop_media()
            if callee.media_error:
                fail("callee could not attach player/recorder: %s" % callee.media_error)

        if call.media_error:
            fail("caller could not attach player/recorder: %s" % call.media_error)

        if hangup_at is None:
            reason = None
            if out.failure is not None:
                reason = out.failure
            elif call.disconnected_at is not None:
                fail("caller's call ended by the far end: %d %s" % (
                    call.last_status, call.last_reason.strip()))
                break
            elif (not opts.no_answer and callee is not None and out.callee_answered
                  and callee.disconnected_at is not None):
                fail("callee's call ended before the caller hung up: %s %d %s" % (
                    callee.state_text, callee.last_status, callee.last_reason.strip()))
            elif call.confirmed_at is None and now - start > opts.answer_timeout:
                fail("call not answered within %.0f s (caller state %s, last status %d %s; "
                     "callee %s)" % (
                         opts.answer_timeout, call.state_text, call.last_status,
                         call.last_reason.strip(),
                         "never rang" if callee is None else callee.state_text))
            elif (call.confirmed_at is not None and call.media_at is None
                  and now - call.confirmed_at > MEDIA_TIMEOUT_S):
                fail("caller's media never became active within %.0f s of answer"
                     % MEDIA_TIMEOUT_S)
            elif (not opts.no_answer and call.confirmed_at is not None
                  and (callee is None or callee.media_at is None)
                  and now - call.confirmed_at > MEDIA_TIMEOUT_S):
                fail("callee's media never became active within %.0f s of answer"
                     % MEDIA_TIMEOUT_S)
            elif call.media_at is not None and now - call.media_at >= opts.seconds:
                reason = "done"
            if out.failure is None and reason is None:
                continue
            # Stop recording before hanging up so silence after BYE is not recorded.
            call.stop_media()
            if call.disconnected_at is None:
                try:
                    call.hangup(pj.CallOpParam(True))
                    log("caller: hung up")
                except pj.Error as e:
                    log("caller: hangup: %s" % e.info())
            hangup_at = now
            out.hangup_at = hangup_at
            continue

        # After the caller's hangup: wait for both sides to be DISCONNECTED.
        caller_done = call.disconnected_at is not None
        callee_done = (callee is None or callee.disconnected_at is not None)
        if caller_done and callee_done:
            break
        if now - hangup_at > DISCONNECT_TIMEOUT_S:
            if not caller_done:
                fail("caller's call not DISCONNECTED within %.0f s of hangup"
                     % DISCONNECT_TIMEOUT_S)
            if not callee_done:
                fail("callee's call not DISCONNECTED within %.0f s of the caller's hangup "
                     "(state %s): the server did not end it" % (
                         DISCONNECT_TIMEOUT_S, callee.state_text))
            break

    # Success conditions beyond "nothing failed on the way".
    callee = out.callee
    if out.failure is None:
        if callee is None:
            fail("the callee's phone never rang")
        elif opts.no_answer:
            if callee.disconnected_at is None:
                fail("callee's ringing call was never cancelled by the server")
        elif callee.answer_status is None:
            fail("callee's call never reached CONFIRMED (no ACK from the server?)")


# --------------------------------------------------------------------------
# Recording analysis (pure Python; no numpy needed)
# --------------------------------------------------------------------------

def read_wav_mono16(path):
    """Samples and rate of a 16-bit PCM mono WAV (tolerates an unfinalised data size)."""
    with open(path, "rb") as f:
        b = f.read()
    if len(b) < 12 or b[:4] != b"RIFF" or b[8:12] != b"WAVE":
        raise ValueError("not a WAV file: %s" % path)
    off = 12
    rate = None
    while off + 8 <= len(b):
        cid = b[off:off + 4]
        clen = struct.unpack("<I", b[off + 4:off + 8])[0]
        if cid == b"fmt ":
            fmt, ch, rate, _, _, bits = struct.unpack("<HHIIHH", b[off + 8:off + 24])
            if fmt != 1 or ch != 1 or bits != 16:
                raise ValueError("%s: not 16-bit PCM mono (format %d, %d ch, %d bits)"
                                 % (path, fmt, ch, bits))
        elif cid == b"data":
            end = len(b) if clen == 0 else min(off + 8 + clen, len(b))
            data = b[off + 8:end]
            data = data[:len(data) // 2 * 2]
            return list(struct.unpack("<%dh" % (len(data) // 2), data)), rate or 8000
        off += 8 + clen + (clen & 1)
    raise ValueError("%s: no data chunk" % path)


def fft(x):
    """In-place iterative radix-2 FFT of a list of complex numbers (len a power of 2)."""
    n = len(x)
    j = 0
    for i in range(1, n):
        bit = n >> 1
        while j & bit:
            j ^= bit
            bit >>= 1
        j |= bit
        if i < j:
            x[i], x[j] = x[j], x[i]
    size = 2
    while size <= n:
        half = size // 2
        w_step = cmath.exp(-2j * math.pi / size)
        tw = [1.0 + 0j]
        for _ in range(half - 1):
            tw.append(tw[-1] * w_step)
        for start in range(0, n, size):
            for k in range(half):
                a = x[start + k]
                t = tw[k] * x[start + k + half]
                x[start + k] = a + t
                x[start + k + half] = a - t
        size *= 2
    return x


def dominant_frequency(path):
    """(Hz, dBFS) of the loudest 1 s of a recording; Hz is None when silent or too short."""
    samples, rate = read_wav_mono16(path)
    win = rate
    if len(samples) < rate // 4:
        return None, None
    if len(samples) < win:
        win = len(samples)
    # Loudest window, 100 ms steps.
    prefix = [0.0]
    acc = 0.0
    for s in samples:
        acc += s * s
        prefix.append(acc)
    step = max(1, rate // 10)
    best_start, best_energy = 0, -1.0
    for st in range(0, len(samples) - win + 1, step):
        e = prefix[st + win] - prefix[st]
        if e > best_energy:
            best_start, best_energy = st, e
    rms = math.sqrt(best_energy / win) if best_energy > 0 else 0.0
    dbfs = 20 * math.log10(rms / 32768.0) if rms > 0 else -120.0
    if dbfs < SILENCE_DBFS:
        return None, round(dbfs, 1)
    seg = samples[best_start:best_start + win]
    mean = sum(seg) / len(seg)
    n = 1
    while n < 2 * len(seg):
        n *= 2
    x = [0j] * n
    for i, s in enumerate(seg):
        hann = 0.5 - 0.5 * math.cos(2 * math.pi * i / (len(seg) - 1))
        x[i] = complex((s - mean) * hann, 0.0)
    fft(x)
    lo = max(1, int(50.0 * n / rate))
    hi = min(n // 2 - 1, int((rate / 2 - 50.0) * n / rate))
    mags = [abs(x[k]) for k in range(n // 2)]
    k = max(range(lo, hi), key=lambda i: mags[i])
    # Parabolic interpolation on log magnitude.
    a, b, c = (math.log(mags[k - 1] + 1e-9), math.log(mags[k] + 1e-9),
               math.log(mags[k + 1] + 1e-9))
    denom = a - 2 * b + c
    delta = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return round((k + delta) * rate / n, 1), round(dbfs, 1)


# --------------------------------------------------------------------------

def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    # pjsip prints to stdout (libCreate banner, console log); keep stdout for the one
    # JSON line by pointing fd 1 at stderr for the whole run.
    sys.stdout.flush()
    json_fd = os.dup(1)
    os.dup2(2, 1)

    out = Outcome()
    rc = 0
    try:
        run(opts, out)
    except pj.Error as e:
        out.pj_error = e.info()
    pj_error = out.pj_error
    if pj_error is not None:
        log("PJSUA2 error: %s" % pj_error)

    caller_info = out.caller_info or {}
    callee_info = out.callee_info
    summary = {
        "ok": False,
        "caller_status": caller_info.get("answer_status") or caller_info.get("last_status"),
        "callee_answered": bool(out.callee_answered and callee_info
                                and callee_info.get("answer_status") is not None),
        "callee_disconnected": bool(callee_info and callee_info.get("disconnected")),
        "codec": caller_info.get("codec"),
        "callee_codec": callee_info.get("codec") if callee_info else None,
        "callee_rang": callee_info is not None,
        "registered": out.registered,
        "no_answer": opts.no_answer,
    }

    if out.crash is not None:
        sys.stderr.write(out.crash)
        summary["error"] = "script error: %s" % out.crash.strip().splitlines()[-1]
        rc = 1
    elif pj_error is not None:
        summary["error"] = "pjsua2: %s" % pj_error
        rc = 4
    elif out.failure is not None:
        summary["error"] = out.failure
        rc = 3

    # Recording analysis (only meaningful once the call itself went through).
    if rc == 0 and not opts.no_answer:
        try:
            summary["caller_heard_hz"], summary["caller_heard_dbfs"] = \
                dominant_frequency(opts.caller_rec)
            summary["callee_heard_hz"], summary["callee_heard_dbfs"] = \
                dominant_frequency(opts.callee_rec)
        except (OSError, ValueError) as e:
            summary["error"] = "recording analysis: %s" % e
            rc = 5 if opts.check_freqs else 3
        if rc == 0 and opts.check_freqs:
            caller_hz, callee_hz = opts.check_freqs
            problems = []
            for who, heard, want in (("caller", summary["caller_heard_hz"], callee_hz),
                                     ("callee", summary["callee_heard_hz"], caller_hz)):
                if heard is None:
                    problems.append("%s heard silence (expected %.0f Hz)" % (who, want))
                elif abs(heard - want) > FREQ_TOLERANCE_HZ:
                    problems.append("%s heard %.1f Hz, expected %.0f +/- %.0f Hz"
                                    % (who, heard, want, FREQ_TOLERANCE_HZ))
            if problems:
                summary["error"] = "; ".join(problems)
                rc = 5
    summary["ok"] = rc == 0

    line = json.dumps(summary, sort_keys=False) + "\n"
    os.write(json_fd, line.encode())
    os.close(json_fd)
    if "error" in summary:
        log(summary["error"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
