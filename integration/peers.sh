#!/usr/bin/env bash
# Installs the programs the integration tests drive, where they are missing: SIPp and tcpdump
# (Debian), Chromium (Debian; never a downloaded browser) with playwright-core (npm), PJSUA2
# (PyPI), and what the Debian package test uses (adduser, curl, systemd-analyze).
# Needs root (or sudo) for apt; without it, says what to install and fails.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v adduser >/dev/null 2>&1 || need+=(adduser)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The cluster tests run three NATS servers of their own (JetStream, clustered).
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# and Kamailio as the SIP proxy in front of them.
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
# with its TLS module as a carrier's TLS trunk peer, found through DNS served by dnsmasq.
[ -e /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || need+=(kamailio-tls-modules)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "peers: not root and no sudo: apt-get install ${need[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
python3 -c "import pjsua2" 2>/dev/null || pip install -q -r integration/pjsua/requirements.txt
(cd integration/browser && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
echo "peers: SIPp, tcpdump, Chromium + playwright-core, PJSUA2 present"
