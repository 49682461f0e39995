"""Remove secrets (API keys, DSN passwords) from any text before it is logged, raised or reported."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_QUERY_SECRET = re.compile(r"(?i)(?P<k>[?&](?:apikey|api_key|password|token)=)(?P<v>[^&#\s'\"]+)")
_BEARER = re.compile(r"(?i)(bearer\s+)([A-Za-z0-9._\-~+/=]+)")
_DSN_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")

_known_secrets: set[str] = set()

MASK = "***"


def register_secret(value: str | None) -> None:
    """Remember a secret value so :func:`redact` masks it wherever it appears."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def env_secrets() -> set[str]:
    """Secrets the environment holds right now: the Polygon key and the password in the database URL."""
    found = {os.environ.get("POLYGON_API_KEY") or ""}
    for name in ("PERFLAB_DATABASE_URL", "DATABASE_URL"):
        m = _URL_PASSWORD.search(os.environ.get(name) or "")
        if m:
            found.add(unquote(m["pw"]))
            found.add(m["pw"])
    return {s for s in found if len(s) >= 4}


def redact(text: object) -> str:
    """Return ``str(text)`` with URL passwords, key query parameters, bearer tokens and known secrets masked.

    Known secrets are those registered and those in the environment now, so a process that never built a
    client (the report runner exporting HTML) still masks the key.
    """
    s = str(text)
    for secret in sorted(_known_secrets | env_secrets(), key=len, reverse=True):
        s = s.replace(secret, MASK)
    s = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", s)
    s = _QUERY_SECRET.sub(lambda m: f"{m['k']}{MASK}", s)
    s = _BEARER.sub(lambda m: f"{m[1]}{MASK}", s)
    s = _DSN_PASSWORD.sub(lambda m: f"{m[1]}{MASK}", s)
    return s


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message``, redacted: what a failed job records."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {redact(text.splitlines()[0] if text else exc)}"
