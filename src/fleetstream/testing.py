"""Helpers for tests of fleetstream and of code built on it (shipped with the package)."""

from __future__ import annotations

import random

from fleetstream.config import LOCAL_HOST
from fleetstream.local.process import port_is_free


def free_port_base(count: int, grpc_offset: int | None = None, low: int = 20000, high: int = 30000) -> int:
    """A port P such that P..P+count-1 (and the same plus ``grpc_offset``) are free on loopback.

    >>> base = free_port_base(2)
    >>> 20000 <= base < 30000
    True
    """
    rng = random.Random()  # noqa: S311 - not for security
    for _ in range(200):
        base = rng.randrange(low, high - count)
        ports = list(range(base, base + count))
        if grpc_offset is not None:
            ports += [p + grpc_offset for p in ports]
        if all(port_is_free(LOCAL_HOST, p) for p in ports):
            return base
    raise RuntimeError(f"no block of {count} free ports found between {low} and {high}")
