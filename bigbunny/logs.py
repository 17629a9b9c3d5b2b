"""Logging set up once per process: one line per event, text or JSON, named loggers (``bbd.*``)."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # uvicorn's own loggers propagate to ours; its per-request access log stays off.
    logging.getLogger("uvicorn.access").disabled = True
    set_level(level)


def set_level(level: str) -> None:
    """The process's log level (at start and on a reload); uvicorn's own lines stay at warning or above."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    logging.getLogger("uvicorn.error").setLevel(max(root.level, logging.WARNING))


class Throttle:
    """Rate-limits a log line per key: at most ``burst`` lines per ``interval`` seconds, then one
    summary with the count suppressed. A flood of rejections cannot fill the disk."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5) -> None:
        self.logger = logger
        self.interval = interval
        self.burst = burst
        self._state: dict[str, list[float]] = {}  # key -> [window start, lines logged, suppressed]

    def log(self, level: int, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        st = self._state.get(key)
        if st is None or now - st[0] >= self.interval:
            if st is not None and st[2]:
                self.logger.log(level, "%s: %d similar lines suppressed in %.0f s", key, int(st[2]), self.interval)
            if len(self._state) > 10_000:
                self._state.clear()
            st = self._state[key] = [now, 0, 0]
        if st[1] < self.burst:
            st[1] += 1
            self.logger.log(level, msg, *args)
        else:
            st[2] += 1
