#!/usr/bin/env python3
"""An attended transfer between three PJSUA2 phones, as a desk phone's Transfer key does it.

100 (plays 440 Hz) calls 101 (700 Hz). 101 holds that call, calls 102 (1000 Hz), talks to
it, then transfers: REFER on the first call with Refer-To naming 102 and Replaces naming the
consultation call (PJSUA2's xferReplaces). Afterwards 100 and 102 must be talking: each one's
recording ends with the other's tone. 101's two calls must end.

Prints one line, OK or FAIL, with what happened; exit 0 on OK, 3 on FAIL, 4 on a PJSUA2
error. The recordings are checked again by the Rust test.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import two_users as tu  # noqa: E402  (shares the Call/Account classes)
from pjcommon import lib_create, lib_init  # noqa: E402

try:
    import pjsua2 as pj
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write("attended_transfer: cannot import pjsua2\n")
    sys.exit(4)

STEP_TIMEOUT_S = 10.0


def log(msg):
    sys.stderr.write("attended_transfer: %s\n" % msg)
    sys.stderr.flush()


class Phone(tu.Call):
    """A call that reconnects its player and recorder whenever its media comes back (hold,
    resume, a re-INVITE), keeping one recording file for the whole call."""

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO or mi.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                continue
            try:
                if self.recorder is None:
                    self._start_media(mi.index)
                else:
                    aud = self.getAudioMedia(mi.index)
                    aud.startTransmit(self.recorder)
                    self.player.startTransmit(aud)
            except pj.Error as e:
                self.media_error = e.info()
            return


class Transferor(Phone):
    def __init__(self, *a, **k):
        Phone.__init__(self, *a, **k)
        self.xfer_status = None

    def onCallTransferStatus(self, prm):
        self.xfer_status = prm.statusCode
        log("%s: transfer status %d %s (final %s)" % (
            self.name, prm.statusCode, prm.reason.strip(), prm.finalNotify))
        prm.cont = True


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="SIP server HOST:PORT (UDP)")
    p.add_argument("--dir", required=True, help="folder for the tones and recordings")
    p.add_argument("--talk", type=float, default=3.0,
                   help="seconds 100 and 102 talk after the transfer (default 3)")
    p.add_argument("--log-level", type=int, default=0)
    opts = p.parse_args(argv)
    host, sep, port = opts.server.rpartition(":")
    if not sep or not port.isdigit():
        p.error("--server must be HOST:PORT")
    opts.host, opts.port = host, int(port)
    # What two_users.make_account reads.
    opts.use_domain = False
    opts.domain = host
    for who in ("a", "b", "c"):
        setattr(opts, who + "_tls", False)
        setattr(opts, who + "_srtp", False)
    return opts


def wait(ep, what, cond, timeout=STEP_TIMEOUT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ep.libHandleEvents(20)
        if cond():
            return
    raise RuntimeError("timed out waiting for %s" % what)


def dial(call, uri):
    prm = pj.CallOpParam(True)
    prm.opt.audioCount, prm.opt.videoCount = 1, 0
    call.makeCall(uri, prm)


def pump(ep, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ep.libHandleEvents(20)


def run(opts):
    ep = pj.Endpoint()
    lib_create(ep)
    try:
        lib_init(ep, "switchyard-pjsua-attended-transfer", opts.log_level)
        tids = []
        for _ in range(3):
            tcfg = pj.TransportConfig()
            tcfg.port = 0
            tcfg.boundAddress = "127.0.0.1"
            tids.append(ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg))
        ep.libStart()
        ep.audDevManager().setNullDev()
        tu.configure_codecs(ep)
        # Every Call and Account lives in session() and is gone before libDestroy(): one
        # alive past it would assert inside pjsua in its destructor.
        return session(ep, opts, tids)
    finally:
        try:
            ep.libDestroy()
        except pj.Error as e:
            log("libDestroy: %s" % e.info())


def session(ep, opts, tids):
    calls = []
    accs = []
    try:
        return transfer(ep, opts, tids, calls, accs)
    except RuntimeError as e:
        print("FAIL %s" % e)
        return 3
    finally:
        tu.stop_all_media(calls)
        del calls[:]
        for x in accs:
            x.on_incoming = None
            x.incoming = []
        pump(ep, 0.2)
        for x in accs:
            x.shutdown()
        del accs[:]


def transfer(ep, opts, tids, calls, accs):
    wav = lambda n: os.path.join(opts.dir, n)  # noqa: E731
    a = tu.make_account(opts, "a", "100", "demo100", tids[0])
    b = tu.make_account(opts, "b", "101", "demo101", tids[1])
    c = tu.make_account(opts, "c", "102", "demo102", tids[2])
    accs.extend([a, b, c])
    wait(ep, "registrations", lambda: all(x.reg_code == 200 for x in accs))

    answered = {}

    def answer_with(name, tone, kind=Phone):
        def on_incoming(acc, call_id):
            k = kind(acc, name, wav(tone), wav(name + "-heard.wav"), call_id)
            calls.append(k)
            answered[name] = k
            op = pj.CallOpParam()
            op.statusCode = 200
            k.answer(op)
            return k
        return on_incoming

    b.on_incoming = answer_with("b-first", "700.wav", Transferor)
    c.on_incoming = answer_with("c", "1000.wav")

    # 1. 100 calls 101.
    first = Phone(a, "a", wav("440.wav"), wav("a-heard.wav"))
    calls.append(first)
    dial(first, "sip:101@%s:%d" % (opts.host, opts.port))
    wait(ep, "100 and 101 talking",
         lambda: first.media_at and "b-first" in answered and answered["b-first"].media_at)
    pump(ep, 1.0)
    b_first = answered["b-first"]

    # 2. 101 holds 100 and consults 102.
    b_first.setHold(pj.CallOpParam(True))
    pump(ep, 0.5)
    consult = Phone(b, "b-consult", wav("700.wav"), wav("b-consult-heard.wav"))
    calls.append(consult)
    dial(consult, "sip:102@%s:%d" % (opts.host, opts.port))
    wait(ep, "101 and 102 talking",
         lambda: consult.media_at and "c" in answered and answered["c"].media_at)
    pump(ep, 1.0)

    # 3. 101 transfers: REFER with Replaces on the first call.
    b_first.xferReplaces(consult, pj.CallOpParam(True))
    wait(ep, "101's calls to end",
         lambda: b_first.disconnected_at and consult.disconnected_at)
    # 4. 100 and 102 talk.
    pump(ep, opts.talk)
    if first.disconnected_at or answered["c"].disconnected_at:
        raise RuntimeError("100 or 102 was hung up by the transfer")
    first.stop_media()
    answered["c"].stop_media()
    first.hangup(pj.CallOpParam(True))
    wait(ep, "the end of the call", lambda: answered["c"].disconnected_at)
    pump(ep, 0.3)
    print("OK transferred: 100 and 102 talked %.1f s; 101's calls ended (%d, %d)" % (
        opts.talk, b_first.last_status, consult.last_status))
    return 0


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(opts)
    except pj.Error as e:
        print("FAIL pjsua2 error: %s" % e.info())
        return 4


if __name__ == "__main__":
    sys.exit(main())
