"""Schemathesis hooks for the admin API run (loaded through `hooks` in schemathesis.toml).

PUT /v1/tenants/{tenant}/prompts/{name} takes raw audio (audio/wav, audio/basic, audio/PCMA):
schemathesis has no serializer for those media types, so it sends generated bodies as their
bytes, the way it sends application/octet-stream.
"""

import schemathesis

schemathesis.serializer.alias(["audio/wav", "audio/basic", "audio/PCMA"], "application/octet-stream")
