"""The error type whose message is shown to a person as is, without a traceback."""

from __future__ import annotations


class FleetstreamError(Exception):
    """A failure with a one-paragraph message that says what is wrong and what to do."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    r"""An error's first meaningful line, for a log or a message: a py4j error's JVM message, with
    the stack trace's lines left out; its type's name when it says nothing.

    >>> first_line(ValueError("bad value\n  more detail")), first_line(KeyError()), first_line(OSError("x" * 400), 5)
    ('bad value', 'KeyError', 'xxxxx')
    """
    java = getattr(exc, "java_exception", None)  # py4j's error: the JVM exception's own message
    text = str(java.getMessage() if java is not None else exc).strip()
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith(("at ", "JVM stacktrace")):
            return line.strip()[:limit]
    return (text or type(exc).__name__)[:limit]
