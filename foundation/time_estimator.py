"""ETA from recent step times: an exponential moving average of seconds per optimizer step,
so a slow first step (compilation, cache warm-up) does not dominate the estimate."""
from __future__ import annotations

import time
from typing import Callable


class TimeEstimator:
    def __init__(self, total_steps: int, alpha: float = 0.2, clock: Callable[[], float] = time.monotonic):
        self.total_steps = total_steps
        self.alpha = alpha
        self.clock = clock
        self._last_t: float | None = None
        self._last_step: int | None = None
        self.sec_per_step: float | None = None

    def update(self, step: int) -> None:
        now = self.clock()
        if self._last_t is not None and self._last_step is not None and step > self._last_step:
            dt = (now - self._last_t) / (step - self._last_step)
            self.sec_per_step = dt if self.sec_per_step is None else \
                self.alpha * dt + (1 - self.alpha) * self.sec_per_step
        self._last_t, self._last_step = now, step

    def eta_seconds(self, step: int) -> float | None:
        if self.sec_per_step is None:
            return None
        return max(0.0, (self.total_steps - step) * self.sec_per_step)
