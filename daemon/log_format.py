"""`--log-format json`: one JSON object per line, for journald, Loki, Elasticsearch and the like.

The standard library's formatter already does the hard parts (message interpolation,
tracebacks); this only lays its fields out as JSON, so no dependency is worth it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

# LogRecord attributes that are not a caller's `extra=` fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        # Fields given with `extra=` travel as they are, as long as JSON can carry them.
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value if isinstance(value, str | int | float | bool) else repr(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)
