"""The error type whose message is shown to a person as is, without a traceback."""

from __future__ import annotations


class FleetstreamError(Exception):
    """A failure with a one-paragraph message that says what is wrong and what to do."""
