#!/usr/bin/env python3
"""Register one PJSUA2 account and wait for the message-waiting state it is told unasked.

A desk phone that reboots learns its voicemail lamp from the NOTIFY the registrar sends after
REGISTER (no SUBSCRIBE): PJSUA2 reports such an unsolicited message-summary NOTIFY through
Account.onMwiInfo. Prints the NOTIFY's body as one line of JSON on stdout.

Exit codes:
  0  registered, and a message-summary NOTIFY arrived within --wait seconds
  3  registration failed, or no NOTIFY in time
  4  PJSUA2 library error
"""

import argparse
import json
import os
import sys
import time

try:
    import pjsua2 as pj
except ImportError:  # pragma: no cover - environment problem
    sys.stderr.write("mwi_on_register: cannot import pjsua2; install it with "
                     "`pip install -r integration/pjsua/requirements.txt`\n")
    sys.exit(4)


class Account(pj.Account):
    def __init__(self):
        pj.Account.__init__(self)
        self.reg_code = None
        self.mwi_body = None

    def onRegState(self, prm):
        self.reg_code = prm.code

    def onMwiInfo(self, prm):
        self.mwi_body = prm.rdata.wholeMsg.split("\r\n\r\n", 1)[-1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="registrar HOST:PORT (UDP)")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--wait", type=float, default=10.0)
    opts = p.parse_args()

    # pjsip prints to stdout; keep stdout for the one JSON line.
    sys.stdout.flush()
    out_fd = os.dup(1)
    os.dup2(2, 1)
    ep = pj.Endpoint()
    ep.libCreate()
    try:
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.level = 0
        cfg.logConfig.consoleLevel = 0
        ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = "127.0.0.1"
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        ep.libStart()
        ep.audDevManager().setNullDev()

        acfg = pj.AccountConfig()
        acfg.idUri = "sip:%s@%s" % (opts.user, opts.server)
        acfg.regConfig.registrarUri = "sip:%s" % opts.server
        acfg.regConfig.retryIntervalSec = 0
        acfg.sipConfig.authCreds.append(
            pj.AuthCredInfo("digest", "*", opts.user, 0, opts.password))
        # Unsolicited NOTIFYs only: no SUBSCRIBE.
        acfg.mwiConfig.enabled = False
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acc = Account()
        acc.create(acfg)

        deadline = time.monotonic() + opts.wait
        while time.monotonic() < deadline and acc.mwi_body is None:
            ep.libHandleEvents(20)
            if acc.reg_code is not None and acc.reg_code >= 300:
                break
        result = {"registered": acc.reg_code, "body": acc.mwi_body}
        acc.shutdown()
        os.write(out_fd, (json.dumps(result) + "\n").encode())
        return 0 if acc.reg_code == 200 and acc.mwi_body is not None else 3
    except pj.Error as e:
        sys.stderr.write("mwi_on_register: %s\n" % e.info())
        return 4
    finally:
        try:
            ep.libDestroy()
        except pj.Error:
            pass


if __name__ == "__main__":
    sys.exit(main())
