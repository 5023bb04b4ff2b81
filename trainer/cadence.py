"""When to checkpoint: every N optimizer steps, N fixed or chosen from measured times to stay within a budget."""

from __future__ import annotations

import math

CHECKPOINT_BUDGET = 0.015
"""Share of step time automatic checkpointing aims at: below the promised 2%, since the cost of one
checkpoint varies from write to write."""


class CheckpointPolicy:
    """When to checkpoint: every N steps, N fixed or chosen from measured times to stay within budget."""

    def __init__(self, every: int, total_steps: int) -> None:
        self.every = every
        self.auto = every == 0
        self.next = every if every else min(total_steps, 50)  # auto: a first one to measure its cost
        self.saves, self.save_seconds = 0, 0.0

    def due(self, step: int) -> bool:
        return step >= self.next

    def record(self, step: int, seconds: float, mean_step_seconds: float) -> None:
        self.saves += 1
        self.save_seconds += seconds
        if self.auto and mean_step_seconds > 0:
            self.every = max(1, math.ceil((self.save_seconds / self.saves) / (CHECKPOINT_BUDGET * mean_step_seconds)))
        self.next = step + (self.every or 1)

    def resume_at(self, step: int) -> None:
        """After resuming at ``step``: the next multiple of a fixed interval, or measure the cost anew."""
        self.next = (step // self.every + 1) * self.every if self.every else step + 1
