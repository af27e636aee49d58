"""Repeats and racing: each finalist retrained several times, each time with a training seed of its own, and the
challengers raced against the incumbent (the baseline's point) on their repeats' mean.

One retrain is a noisy witness: the baseline's point retrained nine times on one split, with nine training seeds,
scored a validation log loss of 0.058 to 0.077 (docs/results.md, "The noise floor of one retrain"), as far apart
as two different points often are. So a point is judged by the mean of its repeats' probabilities, as SMAC's
intensification judges a challenger on a growing number of seeds before it replaces the incumbent (Hutter et al.
2011), and the delivered model averages repeats, as deep ensembles do (Lakshminarayanan et al. 2017).

Round 1 retrains every finalist once, the incumbent first; each later round retrains the incumbent again and every
challenger still in the race. After each round a challenger is compared with the incumbent over the same number of
repeats, paired over validation patients; it leaves the race once the paired 95% interval shows its log loss
higher (clearly worse). With a time budget, a round's extra repeats start only while they fit. Every comparison
is recorded. With `repeats: 1` nothing is raced and the finalists are retrained once, as before.

One concern: the finalists' retrains. It imports training.py (the retrain), evaluation.py (validation scores)
and data.py (each image's patient); it never reads the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation import challenger_minus_incumbent, predict_split
from runs import RETRAIN_BACKUP, plural, point_name

if TYPE_CHECKING:
    from pipeline.context import RunContext


def repeat_seed(seed: int, repeat: int) -> int:
    """The training seed of a finalist's repeat: the run's own seed for the first (so one repeat trains exactly as a
    run without repeats), then seed + 1000 x (repeat - 1). Only the run's seed ever chooses the split."""
    return seed + 1000 * (repeat - 1)


@dataclass
class Finalist:
    """One finalist point and its repeats so far, in order."""

    candidate: Any  # training.Candidate
    models: list = field(default_factory=list)
    histories: list = field(default_factory=list)
    kept_epochs: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    validation: list[np.ndarray] = field(default_factory=list)  # each repeat's validation P(pneumonia)
    left_race: str | None = None  # why it stopped getting repeats, if it did before the last round
    clearly_worse: bool = False  # left the race so: it takes no part in the final choice

    @property
    def name(self) -> str:
        return point_name(self.candidate.trial_id, self.candidate.is_baseline)

    def mean_validation(self, count: int | None = None) -> np.ndarray:
        """The mean P(pneumonia) of its first `count` repeats (all by default) on validation."""
        return np.mean(self.validation[:count], axis=0)


def retrain_repeats(context: RunContext, candidates: Sequence[Any]) -> tuple[list[Finalist], list[dict[str, Any]]]:
    """Every finalist retrained in rounds, the incumbent (the first candidate) first in each; challengers raced
    against it from round 2 on. Returns the finalists with their repeats and every comparison made. A killed run
    resumes repeat by repeat: each has a backup folder of its own, under the run's retrain folder."""
    import data
    from hypermodel import without_augmentation
    from pipeline import training, tuning
    from pipeline.resume import has_begun

    settings, hypermodel, splits, planner = context.settings, context.hypermodel, context.splits, context.time_budget
    backup_root = context.run_dir / RETRAIN_BACKUP
    finalists = [Finalist(candidate) for candidate in candidates]
    labels = np.asarray(splits.validation.labels)
    patients = [data.patient_id(path) for path in splits.validation.files]
    comparisons: list[dict[str, Any]] = []
    for repeat in range(1, settings.repeats + 1):
        for rank, finalist in enumerate(finalists, start=1):
            if finalist.left_race:
                continue
            work = hypermodel.work(tuning.searched_values(finalist.candidate.point))
            later = settings.repeats - repeat  # the incumbent's repeats still to come
            backup = backup_root / _backup_name(finalist.candidate.trial_id, repeat)
            # Every retrain but the incumbent's first is priced beside the incumbent's repeats still to come, so a
            # short budget drops challengers before the averaging the protocol exists for. A repeat begun before a
            # resume goes on whatever is left: its finished epochs are not thrown away.
            priced = (repeat > 1 or rank > 1) and planner is not None and not has_begun(backup)
            what = f"{finalist.name}'s repeat {repeat}" if settings.repeats > 1 else f"{finalist.name}'s retrain"
            if priced and not planner.repeat_fits(work, later, what):
                finalist.left_race = f"the time budget held no repeat {repeat}"
                continue
            repeats = f", repeat {repeat} of {settings.repeats}" if settings.repeats > 1 else ""
            order = " (the baseline's point first)" if len(finalists) > 1 else ""
            print(
                f"\nFinal stage, point {rank} of {len(finalists)}{order}: {finalist.name}"
                f"{repeats}, retrained for {plural(settings.final_epochs, 'epoch')}"
            )
            seed = repeat_seed(settings.seed, repeat)
            model, history, kept = training.retrain(
                context, finalist.candidate.point, backup, training.final_log_dir(backup, rank) if repeat == 1 else None,
                training_seed=seed,
            )  # fmt: skip
            model = without_augmentation(model)
            finalist.models.append(model)
            finalist.histories.append(history)
            finalist.kept_epochs.append(kept)
            finalist.seeds.append(seed)
            finalist.validation.append(predict_split([model], splits.validation, settings.batch_size)[0])
        if settings.repeats > 1 and repeat < settings.repeats:
            comparisons += race_round(finalists, labels, patients, repeat)
    # A challenger the budget held no first retrain for is a recorded cut, not a finalist.
    return [finalist for finalist in finalists if finalist.models], comparisons


def _backup_name(trial_id: str, repeat: int) -> str:
    """A repeat's backup folder: the first keeps the name a run without repeats gives it, so old runs resume."""
    return f"finalist-{trial_id}" if repeat == 1 else f"finalist-{trial_id}-repeat{repeat}"


def first_retrains_begun(candidates: Sequence[Any], backup_root: Path) -> int:
    """How many of the candidates, in order, began their first retrain before this process (round 1 retrains them
    in order, so they are the first ones)."""
    from pipeline.resume import has_begun

    begun = [has_begun(backup_root / _backup_name(c.trial_id, 1)) for c in candidates]
    return max((rank for rank, yes in enumerate(begun, start=1) if yes), default=0)


def race_round(
    finalists: Sequence[Finalist], labels: np.ndarray, patients: Sequence[str], repeat: int
) -> list[dict[str, Any]]:
    """After round `repeat`: each challenger still racing against the incumbent over their common repeats; one
    whose log loss the paired interval shows higher leaves the race."""
    incumbent, records = finalists[0], []
    for challenger in finalists[1:]:
        if challenger.left_race:
            continue
        count = min(len(challenger.validation), len(incumbent.validation))
        gap = challenger_minus_incumbent(
            labels, incumbent.mean_validation(count), challenger.mean_validation(count), patients
        )
        record = {"difference": gap["difference"], "ci95": gap["ci95"], "clearly_worse": gap["clearly_worse"]}
        if record["clearly_worse"]:
            challenger.left_race = f"clearly worse than the incumbent after {count} repeats"
            challenger.clearly_worse = True
        records.append({"round": repeat, "trial_id": challenger.candidate.trial_id, "repeats": count, **record})
    return records
