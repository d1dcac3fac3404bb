"""uvicorn's access log without the agents' polling.

Each device of an idle agent long-polls for work, and a running run's lease is renewed every few seconds:
each is a request, and a line per request was about 66 lines a minute from an idle `qualgent serve` with
its embedded agent, burying the requests people make. Those polls are left out when they succeed (a failed
one, and every other request, is logged); at log level debug they are logged too.
"""

from __future__ import annotations

import logging
import re

ACCESS_LOGGER = "uvicorn.access"
# POST /v1/agent/claim and POST /v1/agent/runs/{run_id}/heartbeat, with or without a query.
_POLLS = re.compile(r"/v1/agent/(?:claim|runs/[^/?]+/heartbeat)(?:\?.*)?")


class QuietAgentPolls(logging.Filter):
    """Drops the access-log record of an agent's successful claim or heartbeat."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access record: (client address, method, path with query, HTTP version, status code).
        args = record.args
        if not isinstance(args, tuple) or len(args) != 5:
            return True
        _client, method, path, _version, status = args
        if method != "POST" or not isinstance(status, int) or status >= 400:
            return True
        if not isinstance(path, str) or _POLLS.fullmatch(path) is None:
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def install() -> None:
    """Put the filter on uvicorn's access logger (once per process: each worker builds its own app, after
    uvicorn configured logging)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, QuietAgentPolls) for f in logger.filters):
        logger.addFilter(QuietAgentPolls())
