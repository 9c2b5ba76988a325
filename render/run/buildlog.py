"""Log lines for builds and the daemon: one event per line, as text or JSON.

``log_event("build.end", site="acme/blog", reason="schedule", outcome="published",
seconds=12.3)`` becomes, in text::

    2026-11-27T03:00:19Z INFO build.end site=acme/blog reason=schedule outcome=published seconds=12.3

and with ``--log-format json``::

    {"time": "2026-11-27T03:00:19Z", "level": "info", "event": "build.end", "site": "acme/blog", ...}
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

LOGGER = "render"
_log = logging.getLogger("render.scheduler")


def log_event(event: str, level: int = logging.INFO, /, **fields: object) -> None:
    """Emit one structured event on the ``render.scheduler`` logger."""
    _log.log(level, event, extra={"render_event": event, "render_fields": fields})


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <event> key=value ...``; plain log records keep their message."""

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "render_event", None)
        fields: dict[str, object] = getattr(record, "render_fields", {})
        if event is None:
            line = f"{_stamp(record)} {record.levelname} {record.getMessage()}"
        else:
            pairs = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            line = f"{_stamp(record)} {record.levelname} {event}" + (f" {pairs}" if pairs else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {"time": _stamp(record), "level": record.levelname.lower()}
        event = getattr(record, "render_event", None)
        if event is None:
            data["event"] = "log"
            data["logger"] = record.name
            data["message"] = record.getMessage()
        else:
            data["event"] = event
            data.update(getattr(record, "render_fields", {}))
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(fmt: str = "text", *, stream: IO[str] | None = None) -> logging.Handler:
    """Send render's log lines to ``stream`` (stderr) as ``text`` or ``json``; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    for name in (LOGGER, "apscheduler"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "_render_handler", False):
                logger.removeHandler(old)
        handler._render_handler = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logging.getLogger(LOGGER).setLevel(logging.INFO)
    # our own lines cover missed and skipped runs; APScheduler's INFO chatter is noise
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return handler
