"""Redis backends (the extra ``asyncperf[redis]``): redis-py's asyncio client.

- :func:`connect` makes a client (RESP2, a password, TLS options, timeouts);
  :func:`translate_errors` turns Redis's errors into
  :class:`~asyncperf.BackendUnavailable` / :class:`~asyncperf.BackendError`.
"""

from asyncperf.backends.redis._client import connect, key_join, translate_errors

__all__ = ["connect", "key_join", "translate_errors"]
