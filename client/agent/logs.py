"""The agent's logs: one JSON object a line on stderr (for journald, or any collector).

Every line has ``time`` (RFC 3339 UTC), ``level``, ``logger`` and ``message``, plus the fields the call
gave (``certificate``, ``certificateId``, ``serialNumber``, ``certificateRequestId``, ``retryInSeconds``,
...). Nothing the agent logs holds a token, a client secret or a private key: messages are written by
the agent itself, and an answer from the API is reduced to its status and problem detail.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(line, default=str)


def configure(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("kms")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    root.propagate = False


class Named(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose lines all carry ``fields`` (the certificate's name), beside each call's own."""

    def __init__(self, logger: logging.Logger, **fields: Any) -> None:
        super().__init__(logger, fields)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs
