"""What every stage of a run shares, passed as one value instead of six: the settings, the search space, the data,
the run folder, the clock and the planner that prices the run (and holds it to its time budget, if any).

One concern: the run's context. It imports nothing at run time; search.py makes it once the data is read and the
budget planned, and the search, the final stage and the report read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from budget import Planner
    from config import Settings
    from data import Splits
    from hypermodel import ChestXRayHyperModel
    from runs import Stopwatch


@dataclass(frozen=True)
class RunContext:
    """A run's shared values. `settings.seed` is the split's seed; a retrain's training seed is passed on its own."""

    settings: Settings
    hypermodel: ChestXRayHyperModel
    splits: Splits
    run_dir: Path
    clock: Stopwatch
    # Prices the run (the estimates it prints); with a time budget, plans it too. None on a distributed worker.
    planner: Planner | None = None

    @property
    def time_budget(self) -> Planner | None:
        """The planner where the run has a time budget to hold to, else None."""
        return self.planner if self.planner is not None and self.planner.budget.limited else None
