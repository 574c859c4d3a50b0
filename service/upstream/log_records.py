"""Log records without the caller, thread and process lookups that no format of the worker prints (``logging._srcfile`` and the ``logging.log*`` flags of Python's logging).

Every answer writes an access-log line (refusals at the door too), and for each record Python's
``logging`` walks up the stack to find its caller (about ten frames under the ASGI stack) and reads
the thread and process names, for fields BentoML's worker log format never prints.
``lighten_log_records`` turns that off as the logging HOWTO's "Optimization" section describes,
unless a handler's format in the worker asks for one of those fields (a user's own format is kept whole).
"""

from __future__ import annotations

import logging
import re

# LogRecord fields that cost work per record; none is in BentoML's worker format (bentoml._internal.log).
COSTLY_RECORD_FIELDS = ("pathname", "filename", "module", "lineno", "funcName", "thread", "threadName", "process",
                        "processName", "taskName")
COSTLY_FIELD = re.compile(r"\b(%s)\b" % "|".join(COSTLY_RECORD_FIELDS))  # in any format style; a false alarm only keeps them


def lighten_log_records(loggers: tuple[str, ...] = ("", "bentoml", "bentoml.access")) -> bool:
    """Stop gathering COSTLY_RECORD_FIELDS for every log record, unless a handler of `loggers` formats one; True if done."""
    for name in loggers:
        for handler in logging.getLogger(name).handlers:
            fmt = getattr(handler.formatter, "_fmt", None) or ""
            if COSTLY_FIELD.search(fmt):
                return False
    logging._srcfile = None  # no stack walk for pathname/lineno/funcName
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.logAsyncioTasks = False  # Python 3.12+; an unused attribute before
    return True
