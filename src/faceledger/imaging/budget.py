"""A process-wide budget of bytes that image decodes may hold at once.

A small file can decode into hundreds of megabytes; a few at once can exhaust the memory of
the process. Every decode reserves its estimated peak before the pixels are decoded and
releases it afterwards; a decode that would overdraw the budget waits for others to finish,
at most ``timeout`` seconds, then fails with ``Overloaded`` (retry later). A single decode
larger than the whole budget can never run and is refused at once with ``ImageTooLarge``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from faceledger.errors import ConfigurationError, ImageTooLarge, Overloaded

DEFAULT_TIMEOUT_S = 10.0  # well under the service's queue_timeout (30 s): a waiting decode holds a worker


class DecodeBudget:
    """Bytes reserved by decodes in progress, bounded by ``capacity``; thread-safe."""

    def __init__(self, capacity: int, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        if capacity < 1 or timeout < 0:
            raise ConfigurationError(f"a decode budget needs capacity >= 1 and timeout >= 0, got {capacity}, {timeout}")
        self.capacity = int(capacity)
        self.timeout = float(timeout)
        self._in_use = 0
        self._cond = threading.Condition()

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._in_use

    def check_fits(self, nbytes: int, **details) -> None:
        """Refuse (ImageTooLarge) a decode that needs more than the whole budget: waiting would never help."""
        if nbytes > self.capacity:
            raise ImageTooLarge(
                f"decoding this image needs about {nbytes >> 20} MiB, more than the whole decode budget "
                f"({self.capacity >> 20} MiB)", needed=nbytes, budget=self.capacity, **details,
            )

    @contextmanager
    def reserve(self, nbytes: int, **details) -> Iterator[None]:
        """Hold ``nbytes`` of the budget for the duration of the ``with`` block."""
        nbytes = max(int(nbytes), 0)
        self.check_fits(nbytes, **details)
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while self._in_use + nbytes > self.capacity:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Overloaded(
                        f"other images being decoded hold the decode memory budget ({self.capacity >> 20} MiB); "
                        f"waited {self.timeout:g} s, retry shortly", needed=nbytes, budget=self.capacity, **details,
                    )
                self._cond.wait(remaining)
            self._in_use += nbytes
        try:
            yield
        finally:
            with self._cond:
                self._in_use -= nbytes
                self._cond.notify_all()


_process_budget: DecodeBudget | None = None
_lock = threading.Lock()


def decode_budget() -> DecodeBudget:
    """The process's budget, made on first use from the ``decode_memory_budget`` setting."""
    global _process_budget
    with _lock:
        if _process_budget is None:
            from faceledger.config import get_settings

            try:
                capacity = get_settings().decode_memory_budget
            except Exception as exc:  # noqa: BLE001 - invalid FACELEDGER_* variables: a typed error instead
                raise ConfigurationError(f"the settings cannot be read: {exc}") from None
            _process_budget = DecodeBudget(capacity)
        return _process_budget


def configure_decode_budget(capacity: int, timeout: float = DEFAULT_TIMEOUT_S) -> DecodeBudget:
    """Replace the process's budget (decodes holding the old one finish against the old one)."""
    global _process_budget
    budget = DecodeBudget(capacity, timeout)
    with _lock:
        _process_budget = budget
    return budget
