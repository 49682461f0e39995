"""User-facing errors: each carries one line that names what to fix.

The CLI prints ``perflab: error: <message>`` for any :class:`PerflabError` and exits non-zero,
never a traceback. Layer-specific trees (``perflab.api.errors``) derive from it.
"""


class PerflabError(Exception):
    """An error whose message tells the user what to fix."""

    exit_code = 2


class InputError(PerflabError, ValueError):
    """A parameter is invalid (unknown timeframe, bad dates, wrong type...)."""


class ConfigError(PerflabError):
    """The environment is missing something (API key, database...)."""


class DatabaseUnavailableError(PerflabError):
    """Neither PERFLAB_DATABASE_URL nor the embedded server could be reached."""
