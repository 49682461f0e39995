"""Errors the Polygon client raises, each carrying the HTTP status and the response body.

    PolygonError (PerflabError)
    ├── AuthError            401/403: wrong or missing key; never retried
    ├── BadRequestError      400: a parameter the API rejected
    ├── NotFoundError        404
    ├── RateLimitError       429: carries retry_after seconds when the server sent one
    ├── ServerError          5xx
    ├── TimeoutError         no answer within the client's timeout
    ├── ConnectionError      the connection failed or was reset
    └── MalformedResponseError  a 200 whose body is not the documented JSON
"""

from __future__ import annotations

from perflab.errors import PerflabError
from perflab.redact import redact


class PolygonError(PerflabError):
    """Base of every client error; ``status`` and ``body`` come from the response when there was one."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None,
                 request_id: str | None = None):
        super().__init__(redact(message))
        self.status = status
        self.body = redact(body) if body is not None else None
        self.request_id = request_id


class AuthError(PolygonError):
    """The API key was missing or rejected: fix POLYGON_API_KEY."""


class BadRequestError(PolygonError):
    """The API rejected a parameter (400)."""


class NotFoundError(PolygonError):
    """The endpoint or resource does not exist (404)."""


class RateLimitError(PolygonError):
    """Too many requests (429); ``retry_after`` is the server's hint in seconds, if any."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ServerError(PolygonError):
    """The API failed on its side (5xx)."""

    retryable = True


class TimeoutError(PolygonError):
    """No complete answer within the client's timeout."""

    retryable = True


class ConnectionError(PolygonError):
    """The connection could not be made or was reset mid-answer."""

    retryable = True


class MalformedResponseError(PolygonError):
    """A 200 whose body is not valid aggregates JSON."""

    retryable = True


def is_retryable(exc: BaseException) -> bool:
    """Whether another try may succeed: a 429, 5xx, timeout, reset or malformed body; never a 4xx or a wrong key."""
    return isinstance(exc, PolygonError) and exc.retryable


# What a failed connection means, in the words a user would use: (phrases in the exception text, reason,
# whether the server was reached before it failed). The first match wins, so specific phrases come first.
_CONNECTION_REASONS: tuple[tuple[tuple[str, ...], str, bool], ...] = (
    (("proxyerror", "unable to connect to proxy"), "the proxy refused the connection (check HTTPS_PROXY, HTTP_PROXY)",
     False),
    (("connection refused", "actively refused"), "connection refused", False),
    (("failed to resolve", "name or service not known", "nodename nor servname", "getaddrinfo failed",
      "temporary failure in name resolution", "no address associated"), "host name not found", False),
    (("certificate verify failed",), "its TLS certificate is not trusted (set REQUESTS_CA_BUNDLE?)", False),
    (("sslerror", "wrong version number"), "the TLS handshake failed (does that port speak https?)", False),
    (("network is unreachable",), "network is unreachable", False),
    (("no route to host", "host is unreachable"), "no route to host", False),
    (("connection reset", "connection aborted", "remotedisconnected", "remote end closed"),
     "the server closed the connection without an answer", True),
    (("incompleteread", "connection broken", "invalidchunklength", "prematurely"),
     "the answer was cut off mid-body", True),
)


def connection_error(base_url: str, exc: BaseException) -> ConnectionError:
    """A failed connection in plain words ("cannot reach the API at URL: connection refused"), not a urllib3 repr.

    The message names the base URL, not the request path, so every job that failed for this reason says the same.
    """
    text = f"{type(exc).__name__} {exc}".lower()
    known = next(((reason, reached) for phrases, reason, reached in _CONNECTION_REASONS
                  if any(p in text for p in phrases)), None)
    if known is None:  # say at least what failed: urllib3 keeps the cause in ``reason``
        cause = (getattr(exc.args[0], "reason", None) if exc.args else None) or exc
        detail = str(cause).strip().splitlines()[0][:200] if str(cause).strip() else ""
        known = (f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__, False)
    reason, reached = known
    where = f"the connection to the API at {base_url} broke" if reached else f"cannot reach the API at {base_url}"
    return ConnectionError(f"{where}: {reason}")
