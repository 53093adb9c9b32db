"""Tokens never reach a log: every log record of the process is redacted as it is made.

gunicorn logs a request line it refuses whole, query string and all, and any exception
text may quote a request. Redacting in the record factory covers every logger (the
app's, gunicorn's error and access logs, libraries') and every handler, whenever it was
set up, where a filter would have to be put on each handler after the fact.
"""

from __future__ import annotations

import logging
import re

REDACTED = "[redacted]"
_PATTERNS = (
    # A JWT: three base64url segments, the first a JSON object's (`{"` is `eyJ`).
    re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"),
    # `?token=`, `access_token=`, ... in a query string or a form.
    re.compile(r"(?i)(token=)[^&\s'\"\\]+"),
    # `Authorization: Bearer ...`
    re.compile(r"(?i)(bearer\s+)[^\s'\"\\,]+"),
)


def redact(text: str) -> str:
    """`text` with whatever looks like a token replaced by [redacted]."""
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: (match.group(1) if match.groups() else "") + REDACTED, text)
    return text


def _redacted_record_factory(make_record):
    def make(*args, **kwargs) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record  # a bad format string: logging reports it, with what it was given
        # Formatted once here instead of at each handler: the record factory runs only
        # for records a logger lets through, which are formatted anyway.
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters take exc_text as the traceback when it is set.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    make.redacts = True  # type: ignore[attr-defined]
    return make


def install() -> None:
    """Redact every log record this process makes from now on (once, however often called)."""
    current = logging.getLogRecordFactory()
    if not getattr(current, "redacts", False):
        logging.setLogRecordFactory(_redacted_record_factory(current))
