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
    """Base of every client error; ``status`` and ``body`` come from the response when there was one.

    ``stats`` is set by ``get_aggregates`` to what the failed fetch cost (requests, retries, 429s).
    """

    retryable = False
    stats = None

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
