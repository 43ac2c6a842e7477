"""The credit balance, with refunds of failing tasks applied when they fall due."""

from __future__ import annotations

import heapq
import itertools
import threading

__all__ = ["Ledger"]


class Ledger:
    """Balance and net spend of the emulated account.

    A failing task's refund is booked in advance with `refund_at(due, amount)` and
    applied by `settle(now)`, which every reader calls first, so the balance is right
    at any instant without a timer per task. Thread-safe: tests in thread mode read
    the balance from another thread.
    """

    def __init__(self, balance: float) -> None:
        self._lock = threading.Lock()
        self._balance = float(balance)
        self._spent = 0.0
        self._refunds: list[tuple[float, int, float]] = []
        self._seq = itertools.count()

    def settle(self, now: float) -> int:
        """Apply every refund due by `now`; return how many were applied."""
        applied = 0
        with self._lock:
            while self._refunds and self._refunds[0][0] <= now:
                _, _, amount = heapq.heappop(self._refunds)
                self._balance += amount
                self._spent -= amount
                applied += 1
        return applied

    def balance(self, now: float) -> float:
        """The balance at `now` (refunds due by then applied)."""
        self.settle(now)
        with self._lock:
            return self._balance

    def spent(self, now: float) -> float:
        """Credits charged so far, net of refunds applied by `now`."""
        self.settle(now)
        with self._lock:
            return self._spent

    def set_balance(self, value: float) -> None:
        with self._lock:
            self._balance = float(value)

    def charge(self, amount: float) -> None:
        with self._lock:
            self._balance -= amount
            self._spent += amount

    def refund_at(self, due: float, amount: float) -> None:
        with self._lock:
            heapq.heappush(self._refunds, (due, next(self._seq), amount))
