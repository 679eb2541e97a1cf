#!/usr/bin/env python3
"""Creates a blob container in Azurite: python3 azurite_container.py PORT NAME.

object_store's Azure client never creates containers, so start.sh (and any test that starts a
private Azurite from SWITCHYARD_TEST_AZURITE_BIN) creates them with this. Signs Create Container
with the well-known Azurite account key (SharedKey); standard library only. An existing container
is fine. Exits non-zero with Azurite's answer on any other failure.
"""
import base64, hashlib, hmac, sys, urllib.error, urllib.request
from email.utils import formatdate

port, container = sys.argv[1], sys.argv[2]
account = "devstoreaccount1"
key = base64.b64decode(
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
date, version = formatdate(usegmt=True), "2021-08-06"
# Path-style URL: the account is the first path segment, and so appears twice in the resource.
resource = f"/{account}/{account}/{container}\nrestype:container"
ctype = "application/octet-stream"  # urllib would add a form Content-Type of its own otherwise
# VERB, Content-Encoding, -Language, -Length (empty for 0), -MD5, -Type, Date, If-Modified-Since,
# If-Match, If-None-Match, If-Unmodified-Since, Range, then x-ms-* headers and the resource.
to_sign = "\n".join(["PUT", "", "", "", "", ctype, "", "", "", "", "", ""]) + "\n"
to_sign += f"x-ms-date:{date}\nx-ms-version:{version}\n" + resource
sig = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest()).decode()
req = urllib.request.Request(
    f"http://127.0.0.1:{port}/{account}/{container}?restype=container", method="PUT", data=b"",
    headers={"x-ms-date": date, "x-ms-version": version, "Content-Type": ctype,
             "Authorization": f"SharedKey {account}:{sig}"})
try:
    urllib.request.urlopen(req, timeout=10)
except urllib.error.HTTPError as e:
    body = e.read().decode(errors="replace")
    if e.code != 409 or "ContainerAlreadyExists" not in body:
        sys.exit(f"HTTP {e.code}: {body}")
except urllib.error.URLError as e:
    sys.exit(f"Azurite on 127.0.0.1:{port} does not answer: {e.reason}")
