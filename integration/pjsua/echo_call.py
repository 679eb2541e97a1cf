#!/usr/bin/env python3
"""Place one real SIP/RTP call with PJSUA2 and record what comes back.

A second, independent SIP stack (pjsip) for Switchyard's integration tests:
it sends INVITE over UDP, negotiates G.711 (PCMU/PCMA only), plays a WAV
file into the call (looped), records the far end's audio into a WAV file,
and hangs up after --seconds.

Exit codes:
  0  call answered, media active, recorded, hung up cleanly
  2  bad arguments / input file
  3  call failed, not answered within the answer timeout, or media never active
  4  PJSUA2 library error
"""

import argparse
import os
import sys
import time

try:
    import pjsua2 as pj
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write(
        "echo_call: cannot import pjsua2; install it with "
        "`pip install -r integration/pjsua/requirements.txt`\n")
    sys.exit(4)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pjcommon import lib_create, lib_init  # noqa: E402

ANSWER_TIMEOUT_S = 10.0
MEDIA_TIMEOUT_S = 5.0
DISCONNECT_TIMEOUT_S = 5.0


def log(msg):
    sys.stderr.write("echo_call: %s\n" % msg)
    sys.stderr.flush()


class Call(pj.Call):
    def __init__(self, acc, opts):
        pj.Call.__init__(self, acc)
        self.opts = opts
        self.state = pj.PJSIP_INV_STATE_NULL
        self.state_text = "NULL"
        self.last_status = 0
        self.last_reason = ""
        self.confirmed_at = None
        self.media_at = None
        self.disconnected = False
        self.player = None
        self.recorder = None
        self.codec = None
        self.media_error = None

    def onCallState(self, prm):
        ci = self.getInfo()
        self.state = ci.state
        self.state_text = ci.stateText
        self.last_status = ci.lastStatusCode
        self.last_reason = ci.lastReason
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True

    def onCallMediaState(self, prm):
        if self.media_at is not None:
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
        self.recorder.createRecorder(self.opts.record)
        aud.startTransmit(self.recorder)

        # Play file (looped; options=0 means loop) -> call.
        self.player = pj.AudioMediaPlayer()
        self.player.createPlayer(self.opts.play, 0)
        self.player.startTransmit(aud)

        try:
            si = self.getStreamInfo(med_idx)
            self.codec = "%s/%d" % (si.codecName, si.codecClockRate)
        except pj.Error:
            self.codec = None
        self.media_at = time.monotonic()

    def stop_media(self):
        # Destroy player/recorder while the library is alive; dropping the
        # recorder finalises the WAV header.
        self.player = None
        self.recorder = None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="SIP server HOST:PORT (UDP)")
    p.add_argument("--to", required=True, help="number to call, e.g. +15550600")
    p.add_argument("--play", required=True, help="16-bit PCM mono WAV to send")
    p.add_argument("--record", required=True, help="WAV file to write what we hear")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="keep the call up this long after media starts (default 4)")
    p.add_argument("--user", help="authenticate as this user (digest, realm '*')")
    p.add_argument("--password", help="password for --user")
    p.add_argument("--tls", action="store_true",
                   help="SIP over TLS to --server (its certificate checked against --ca)")
    p.add_argument("--ca", help="with --tls: PEM file of the CA (or self-signed certificate) "
                   "the server's certificate must chain to")
    p.add_argument("--srtp", choices=["off", "mandatory"], default="off",
                   help="mandatory: offer RTP/SAVP with SDES keys only, and require a secure "
                   "signalling hop (needs --tls); the call fails without SRTP")
    p.add_argument("--srtp-suite", default=None,
                   help="with --srtp: offer only this crypto suite (e.g. AES_CM_128_HMAC_SHA1_32)")
    p.add_argument("--late-offer", action="store_true",
                   help="send the INVITE without SDP (the server offers in its 200, we answer in the ACK)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="local address for SIP and RTP (default 127.0.0.1)")
    p.add_argument("--local-port", type=int, default=0,
                   help="local SIP UDP port (default 0 = any)")
    p.add_argument("--log-level", type=int, default=0,
                   help="PJSIP console log level (default 0 = quiet)")
    opts = p.parse_args(argv)
    if (opts.user is None) != (opts.password is None):
        p.error("--user and --password go together")
    if opts.srtp != "off" and not opts.tls:
        p.error("--srtp needs --tls")
    if not os.path.isfile(opts.play):
        p.error("play file not found: %s" % opts.play)
    opts.record = os.path.abspath(opts.record)
    rec_dir = os.path.dirname(opts.record)
    if not os.path.isdir(rec_dir):
        p.error("record directory does not exist: %s" % rec_dir)
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


def run(opts):
    ep = pj.Endpoint()
    lib_create(ep)
    try:
        lib_init(ep, "switchyard-pjsua-echo", opts.log_level)

        tcfg = pj.TransportConfig()
        tcfg.port = opts.local_port
        tcfg.boundAddress = opts.bind
        if opts.tls:
            if opts.ca:
                tcfg.tlsConfig.CaListFile = opts.ca
                tcfg.tlsConfig.verifyServer = True
            ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
        else:
            ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        ep.audDevManager().setNullDev()
        configure_codecs(ep)

        acfg = pj.AccountConfig()
        ident = opts.user if opts.user else "pjsua"
        acfg.idUri = "sip:%s@%s" % (ident, opts.server)
        acfg.regConfig.registrarUri = ""
        acfg.mediaConfig.transportConfig.boundAddress = opts.bind
        if opts.srtp == "mandatory":
            acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
            acfg.mediaConfig.srtpSecureSignaling = 1
            keyings = pj.IntVector()
            keyings.append(pj.PJMEDIA_SRTP_KEYING_SDES)
            acfg.mediaConfig.srtpOpt.keyings = keyings
            if opts.srtp_suite:
                suite = pj.SrtpCrypto()
                suite.name = opts.srtp_suite
                cryptos = pj.SrtpCryptoVector()
                cryptos.append(suite)
                acfg.mediaConfig.srtpOpt.cryptos = cryptos
        if opts.user:
            acfg.sipConfig.authCreds.append(
                pj.AuthCredInfo("digest", "*", opts.user, 0, opts.password))
        acc = pj.Account()
        acc.create(acfg)

        call = Call(acc, opts)
        uri = "sip:%s@%s" % (opts.to, opts.server)
        if opts.tls:
            uri += ";transport=tls"
        cprm = pj.CallOpParam(True)
        cprm.opt.audioCount = 1
        cprm.opt.videoCount = 0
        if opts.late_offer:
            cprm.opt.flag |= pj.PJSUA_CALL_NO_SDP_OFFER
        call.makeCall(uri, cprm)

        rc = drive(ep, call, opts)

        call.stop_media()
        # Let the hangup/BYE transaction settle before tearing down.
        del call
        acc.shutdown()
        del acc
        return rc
    finally:
        try:
            ep.libDestroy()
        except pj.Error as e:
            log("libDestroy: %s" % e.info())
        del ep


def drive(ep, call, opts):
    start = time.monotonic()
    hangup_sent = False
    hangup_at = None
    failure = None

    while True:
        ep.libHandleEvents(20)
        now = time.monotonic()

        if call.media_error and not hangup_sent:
            failure = "could not attach player/recorder: %s" % call.media_error

        if call.disconnected:
            if not hangup_sent:
                failure = failure or (
                    "call ended by remote: %d %s" % (call.last_status, call.last_reason))
            break

        if not hangup_sent:
            if failure is None:
                if call.confirmed_at is None and now - start > ANSWER_TIMEOUT_S:
                    failure = "call not answered within %.0f s (state %s, last status %d %s)" % (
                        ANSWER_TIMEOUT_S, call.state_text, call.last_status, call.last_reason)
                elif (call.confirmed_at is not None and call.media_at is None
                      and now - call.confirmed_at > MEDIA_TIMEOUT_S):
                    failure = "media never became active within %.0f s of answer" % MEDIA_TIMEOUT_S
                elif call.media_at is not None and now - call.media_at >= opts.seconds:
                    pass  # done: hang up below
                else:
                    continue
            # Stop recording before hanging up so silence after BYE is not
            # appended; then hang up.
            call.stop_media()
            try:
                call.hangup(pj.CallOpParam(True))
            except pj.Error as e:
                log("hangup: %s" % e.info())
            hangup_sent = True
            hangup_at = now
        elif now - hangup_at > DISCONNECT_TIMEOUT_S:
            failure = failure or "no DISCONNECTED within %.0f s of hangup" % DISCONNECT_TIMEOUT_S
            break

    # Drain a little so the final BYE/200 exchange completes.
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        ep.libHandleEvents(20)

    summary = "state=%s last_status=%d %s codec=%s media_seconds=%.2f record=%s" % (
        call.state_text, call.last_status, call.last_reason.strip() or "-",
        call.codec or "unknown",
        (hangup_at - call.media_at) if (call.media_at and hangup_at) else 0.0,
        opts.record)
    if failure:
        print("FAIL %s: %s" % (summary, failure))
        log(failure)
        return 3
    print("OK %s" % summary)
    return 0


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        rc = run(opts)
    except pj.Error as e:
        log("PJSUA2 error: %s" % e.info())
        print("FAIL pjsua2 error: %s" % e.info())
        return 4
    sys.stdout.flush()
    return rc


if __name__ == "__main__":
    sys.exit(main())
