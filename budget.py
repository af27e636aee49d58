"""The run's one time model: durations as people write them, what a point costs, the estimates a run prints, and
the plan that fits a whole run into a time budget.

Every estimate comes from one Planner: the expected time before trial 1 (`start_line`), each trial header's ETA
(`eta_line`) and, under `--time-budget`, the plan; without a budget it is the same Planner with no limit.
`--time-budget 1h` bounds search, finalists, evaluation and report together. The search's points differ up to
ten times in cost, so a trial is priced by its point, not by the mean of the trials so far:

    seconds per epoch = scale x work(point)

`work` weighs a point's multiply-adds and its activations (batch normalisation's passes over them cost more
than their arithmetic); its weights were fitted once to 150 recorded trials of six searches on the 2-core CPU
(bench/results/quality; with the scale fitted to each search's own trials, its median trial came within 6 to 15%
of its price and its worst within 43%, except a search that shared the CPU: 35% and 78%). `scale` is this
machine's: fitted to whatever it has trained, from this run's finished trials and retrain epochs, else a
finished run beside it, else a timed epoch of the baseline's point (the second of two: the first builds the
step functions).

The plan keeps as many full-length finalists as the time left can retrain, each with its share of the preset's
trials to be chosen from (the finalist protocol: 4 finalists and the baseline's point for 25 trials, one per 5),
then gives the rest to search trials; the baseline's retrain is always kept. It is made again before each trial, with the new prices: the search stops starting trials that would
not leave room for the final stage, and the final stage retrains fewer finalists rather than overrun.

One concern: the budget's arithmetic. It imports the standard library only: no Keras.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_DURATION = re.compile(r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")

# Relative cost of one epoch: a constant (data and bookkeeping), per million multiply-adds, per million
# activations, and per million activations normalised (batch_norm). Fitted as the module docstring says.
WORK_WEIGHTS = {"constant": 1.0, "multiply_adds": 0.0474, "activations": 10.73, "normalised": 38.36}
TRIALS_PER_FINALIST = 5  # trials a finalist is chosen from, where max_trials does not say (Hyperband's schedule)
# Evaluation and report after the retrains (predictions, intervals, figures, Grad-CAM, study.db): measured at
# about 5 s on generated data and 20 to 40 s on the real data on the 2-core CPU; the largest of this and REPORT_SHARE of the budget is kept for them.
REPORT_SECONDS = 20.0
REPORT_SHARE = 0.03
ADVICE_MARGIN = 1.25  # a refused budget's advice leaves this much room: the next run prices itself with a new epoch


def parse_duration(value: Any) -> float:
    """Seconds from "90m", "1h30m", "600s", "1.5h" or a number of seconds; ValueError naming the forms otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip().lower().replace(" ", "")
        match = _DURATION.fullmatch(text)
        if not text or match is None or not any(match.groupdict().values()):
            raise ValueError(f"{value!r} is not a duration: write it as 90m, 1h30m, 600s or 1.5h")
        parts = {unit: float(amount or 0) for unit, amount in match.groupdict().items()}
        seconds = parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r} is not a positive duration: write it as 90m, 1h30m, 600s or 1.5h")
    return seconds


def duration_text(seconds: float) -> str:
    """The budget as the run name and report write it: 5400 -> "1h30m", 600 -> "10m", 45 -> "45s"."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return (
        "".join(f"{amount}{unit}" for amount, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if amount) or "0s"
    )


def works_of_finalists(known: Sequence[float], count: int, mean_work: float) -> list[float]:
    """The works of `count` finalists: those `known` first (their own points), the rest at the mean work drawn."""
    return [*known[:count], *[mean_work] * max(count - len(known), 0)]


def format_duration(seconds: float | None) -> str:
    """A duration as a person reads it: "45s", "12m 30s", "1h 05m" (an estimate has no use for seconds past an hour)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        minutes, seconds = divmod(seconds, 60)
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours}h {minutes:02d}m"


def point_work(multiply_adds: float, activations: float, batch_norm: bool) -> float:
    """One epoch's relative cost at a point of the search space, from the size of its model (per image: the
    multiply-adds of its convolutions and hidden dense layers, the activations its convolutions write;
    hypermodel.model_size counts them beside the builder)."""
    weights = WORK_WEIGHTS
    return (
        weights["constant"]
        + weights["multiply_adds"] * multiply_adds / 1e6
        + weights["activations"] * activations / 1e6
        + weights["normalised"] * activations / 1e6 * batch_norm
    )


@dataclass
class Price:
    """Seconds per epoch per unit of work on this machine, and what that rests on."""

    scale: float
    source: str

    @classmethod
    def fitted(cls, observations: Sequence[tuple[float, float, float]], source: str) -> Price | None:
        """From (work, epochs, seconds) of finished trainings: their seconds over their work-epochs; None if none."""
        usable = [(w, e, s) for w, e, s in observations if w > 0 and e > 0 and s > 0]
        if not usable:
            return None
        return cls(sum(s for _, _, s in usable) / sum(w * e for w, e, _ in usable), source)

    def epoch(self, work: float) -> float:
        return self.scale * work


@dataclass
class Plan:
    """How many more trials and how many finalists (besides the baseline's point) fit in the time left."""

    trials: int
    finalists: int
    trial_seconds: float  # one trial at the mean work of the points drawn and the expected epochs
    final_seconds: float  # the retrains of the baseline's point and the finalists


@dataclass
class Budget:
    """The run's budget in seconds (None: no limit, the run only priced), the run clock (seconds used so far, every
    process of the run together), and what the plan cut, for the report."""

    seconds: float | None
    used: Callable[[], float]
    cuts: list[str] = field(default_factory=list)
    plans: list[str] = field(default_factory=list)

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    @property
    def report_seconds(self) -> float:
        return max(REPORT_SECONDS, REPORT_SHARE * self.seconds) if self.limited else REPORT_SECONDS

    def left(self) -> float:
        return self.seconds - self.used() if self.limited else math.inf

    def final_seconds(self, price: Price, works: Sequence[float], final_epochs: int) -> float:
        """The retrains of these points (the baseline's first) and the report after them."""
        return sum(final_epochs * price.epoch(work) for work in works) + self.report_seconds

    def plan(
        self,
        price: Price,
        *,
        mean_work: float,
        trial_epochs: float,
        baseline_work: float,
        final_epochs: int,
        trials_done: int,
        max_trials: int | None,
        max_finalists: int,
        repeats: int = 1,
        known_works: Sequence[float] = (),
    ) -> Plan:
        """The most finalists the time left can retrain, each with the trials it needs to be chosen from (the
        preset's own share: max_trials over the finalists and the baseline's point, else TRIALS_PER_FINALIST); then
        as many more trials (up to max_trials in all) as the rest holds. A finalist's retrain is priced at its
        point's work where it is known (`known_works`, the first finalists'), else at the mean work drawn. The
        baseline's point is retrained `repeats` times (the delivered model averages them), each finalist once: a
        challenger's further repeats run only while they fit."""
        trial_seconds = trial_epochs * price.epoch(mean_work)
        most = max((max_trials or 10_000) - trials_done, 0)
        share = max(max_trials // (max_finalists + 1), 1) if max_trials else TRIALS_PER_FINALIST
        for finalists in range(max_finalists, -1, -1):
            needed = max(share * finalists + 1 - trials_done, 0)
            chosen = works_of_finalists(known_works, finalists, mean_work)
            final = self.final_seconds(price, [baseline_work] * repeats + chosen, final_epochs)
            room = self.left() - final
            if finalists and (needed > most or room < needed * trial_seconds):
                continue
            more = min(most, max(int(room // trial_seconds), 0)) if trial_seconds > 0 else most
            if trials_done == 0:  # the baseline's trial always runs (a budget too small for it is refused)
                more = max(more, min(most, 1))
            return Plan(more, finalists, trial_seconds, final)
        raise AssertionError("unreachable: the plan without finalists always returns")

    def may_start_trial(self, trial_seconds: float, final_seconds: float) -> bool:
        """Whether a trial priced so still leaves the final stage its time."""
        return trial_seconds + final_seconds <= self.left()

    def affordable(self, price: Price, works: Sequence[float], final_epochs: int) -> int:
        """How many of these points, in order (the baseline's first, always kept), the final stage can retrain."""
        count = 1
        while count < len(works) and self.final_seconds(price, works[: count + 1], final_epochs) <= self.left():
            count += 1
        return count

    def record(self) -> dict[str, Any]:
        """metrics.json's "budget": the budget, the time used and what it cut."""
        return {
            "seconds": self.seconds,
            "text": duration_text(self.seconds),
            "used_seconds": self.used(),
            "plans": self.plans,
            "cut": self.cuts,
        }


@dataclass
class Planner:
    """The budget applied to one run: prices refitted as the run trains, the plan made again before each trial,
    and the lines it prints. What it needs of the run comes in as numbers; it never trains anything itself."""

    budget: Budget
    mean_work: float  # the mean work of the points the search draws (trials not yet drawn, finalists not yet known)
    baseline_work: float
    epochs: int  # the most epochs a trial trains
    final_epochs: int
    max_trials: int | None
    max_finalists: int
    price: Price | None  # None while nothing is known to price from (a run without a budget, before its first trial)
    repeats: int = 1  # retrains of the baseline's point in the final stage (pipeline/repeats.py)
    candidate_works: Sequence[float] = ()  # the config's candidates, the first finalists, known before their trials
    funded: int | None = None  # the finalists the search's last plan kept time for; None before any plan

    def reprice(self, observations: Sequence[tuple[float, float, float]], source: str) -> None:
        """Prices from this run's own finished trainings (work, epochs, seconds), once it has any."""
        self.price = Price.fitted(observations, source) or self.price

    def eta_line(
        self, trials_ended: int, planned: int | None, trial_epochs: float, finalist_works: Sequence[float]
    ) -> str:
        """The trial header's estimate: the trials still planned at the mean work drawn and `trial_epochs` each,
        then the final stage (each finalist, the first `max_finalists` of `finalist_works`, and the baseline's point,
        `repeats` times each), at the same price as the plan's; under a budget, the plan printed above says it."""
        if self.budget.limited:
            return "ETA: within the time budget (the plan above)"
        if self.price is None or planned is None:
            cause = "no finished trial to go by" if self.price is None else "number of trials unknown"
            return f"ETA search unknown ({cause})"
        search = max(planned - trials_ended, 0) * trial_epochs * self.price.epoch(self.mean_work)
        final = sum(self.final_epochs * self.price.epoch(work) for work in self._final_works(finalist_works))
        return f"ETA search {format_duration(search)}, run {format_duration(search + final)} (from {self.price.source})"

    def start_line(self, search: bool, trial_epochs: float | None, trials_ended: int = 0) -> str | None:
        """Before trial 1, the whole run's expected time (a resumed search's time left) at the prices the header and
        the plan use: the trials still planned, of `trial_epochs` each (as recorded; else at most `epochs`), then the
        final stage's retrains (a run without search retrains the baseline's point once). None under a time budget
        (its plan says), with nothing to price from, or with the number of trials unknown (Hyperband's schedule)."""
        if self.budget.limited or self.price is None or (search and self.max_trials is None):
            return None
        parts, total = [], 0.0
        if search:
            left, epochs = max(self.max_trials - trials_ended, 0), trial_epochs or self.epochs
            total += left * epochs * self.price.epoch(self.mean_work)
            trials = f"{left} of {self.max_trials} trials left" if trials_ended else f"{self.max_trials} trials"
            parts.append(
                f"{trials} of {'about' if trial_epochs else 'up to'} {epochs:.2g} epoch{'s' if epochs != 1 else ''}"
            )
        works = self._final_works(()) if search else [self.baseline_work]
        total += sum(self.final_epochs * self.price.epoch(work) for work in works)
        # Racing drops the repeats of challengers found clearly worse, and early stopping ends trials early.
        bound = search and (self.repeats > 1 or not trial_epochs)
        count = len(works)
        parts.append(
            f"{'up to ' if bound else ''}{count} retrain{'s' if count != 1 else ''} of {self.final_epochs} "
            f"epoch{'s' if self.final_epochs != 1 else ''}"
        )
        what = "time left" if trials_ended else "wall time"
        about = "at most about" if bound else "about"
        return f"Expected {what}: {about} {format_duration(total)} ({', then '.join(parts)}; priced from {self.price.source})"

    def _final_works(self, finalist_works: Sequence[float]) -> list[float]:
        """The final stage's retrains, each by its point's work: the baseline's point and each finalist (as far as
        known, else at the mean work drawn), `repeats` times each: the one count of the final stage's retrains."""
        chosen = works_of_finalists(self._known(finalist_works), self.max_finalists, self.mean_work)
        return [self.baseline_work, *chosen] * self.repeats

    def plan(self, trials_done: int, trial_epochs: float | None = None) -> Plan:
        """The plan for the time left; the final stage holds to the last one made (`funded`)."""
        plan = self._plan(trials_done, trial_epochs)
        self.funded = plan.finalists
        return plan

    def _plan(self, trials_done: int, trial_epochs: float | None) -> Plan:
        return self.budget.plan(
            self.price,
            mean_work=self.mean_work,
            trial_epochs=trial_epochs or self.epochs,
            baseline_work=self.baseline_work,
            final_epochs=self.final_epochs,
            trials_done=trials_done,
            max_trials=self.max_trials,
            max_finalists=self.max_finalists,
            repeats=self.repeats,
            known_works=self.candidate_works,
        )

    def _known(self, finalist_works: Sequence[float]) -> Sequence[float]:
        """The finalists' works as far as known: the search's ranking (the candidates first once their trials
        ended), else the candidates'."""
        return finalist_works if len(finalist_works) >= len(self.candidate_works) else self.candidate_works

    def minimum_final_seconds(self) -> float:
        """The final stage at its smallest: the baseline's retrain (each of its repeats) and the report."""
        return self.budget.final_seconds(self.price, [self.baseline_work] * self.repeats, self.final_epochs)

    def baseline_trial_seconds(self, search: bool = True) -> float:
        """The baseline's trial, a search's first, for its full `epochs`; none for a run without search."""
        return self.epochs * self.price.epoch(self.baseline_work) if search else 0.0

    def minimum_seconds(self, search: bool = True) -> float:
        """The least a run needs: the baseline's trial (a search's first), its retrain and the report."""
        return self.baseline_trial_seconds(search) + self.minimum_final_seconds()

    def too_small(self, search: bool = True) -> str | None:
        """Why the budget cannot hold even the baseline's trial and retrain, with flags that would; None if it can.
        The advice keeps a margin (ADVICE_MARGIN): the run it starts prices itself afresh, and a timed epoch varies."""
        need = self.minimum_seconds(search)
        if need <= self.budget.left():
            return None
        what = "the baseline's trial, its retrain" if search else "the baseline's retrain"
        # The time already used (the timed epoch) counts too.
        enough = duration_text(60 * math.ceil((need * ADVICE_MARGIN + self.budget.used()) / 60))
        advice = f"pass --time-budget {enough}"
        epochs = self.final_epochs_that_fit(search)
        if epochs:
            advice += f", or keep this budget with --final-epochs {epochs}"
        return (
            f"time budget {duration_text(self.budget.seconds)} is too small: {what} ({self.final_epochs} epochs) and "
            f"the report need about {format_duration(need)} here (priced from {self.price.source}); {advice}"
        )

    def final_epochs_that_fit(self, search: bool = True) -> int:
        """The most retrain epochs (each of the baseline's repeats) that the budget holds beside the baseline's
        trial and the report, with the advice's margin; 0 when not even one does."""
        spare = self.budget.left() / ADVICE_MARGIN - self.baseline_trial_seconds(search) - self.budget.report_seconds
        per_epoch = self.repeats * self.price.epoch(self.baseline_work)
        return max(min(int(spare // per_epoch), self.final_epochs - 1), 0) if per_epoch > 0 else 0

    def plan_line(self, plan: Plan, trials_done: int) -> str:
        """What the plan says, for the console and the report."""
        total = f" of {self.max_trials}" if self.max_trials else ""
        finalists = f"{plan.finalists} finalist{'s' if plan.finalists != 1 else ''} besides the baseline's point"
        finalists += f" (retrained {self.repeats} times)" if self.repeats > 1 else ""
        bought = ""
        if plan.finalists == 0 and trials_done + plan.trials <= 1:
            bought = ": the budget buys no search beyond the baseline's own trial, and the final stage retrains the "
            bought += "baseline's point alone"
        elif plan.finalists == 0 and plan.trials == 0:
            bought = ": no more trials, and the final stage retrains the baseline's point alone"
        return (
            f"Time budget {duration_text(self.budget.seconds)}, {format_duration(self.budget.left())} left: "
            f"{plan.trials} more trial{'s' if plan.trials != 1 else ''} ({trials_done} done{total}) and {finalists} "
            f"fit{bought} (a trial about {format_duration(plan.trial_seconds)} at the mean size of the points drawn, the final "
            f"stage about {format_duration(plan.final_seconds)}; priced from {self.price.source})"
        )

    def may_start(self, work: float, trials_done: int, finalist_works: Sequence[float], trial_epochs: float) -> bool:
        """Before a trial at a point of this work: whether it fits beside the final stage that the plan keeps
        (the finalists chosen so far priced at their own points). Records the cut when it does not."""
        plan = self.plan(trials_done, trial_epochs)
        works = [self.baseline_work, *works_of_finalists(self._known(finalist_works), plan.finalists, self.mean_work)]
        works += [self.baseline_work] * (self.repeats - 1)
        final = self.budget.final_seconds(self.price, works, self.final_epochs)
        cost = self.epochs * self.price.epoch(work)
        if trials_done == 0 or self.budget.may_start_trial(cost, final):
            return True
        self.budget.cuts.append(
            f"the search stopped after {trials_done}{f' of {self.max_trials}' if self.max_trials else ''} trials: the "
            f"next (about {format_duration(cost)}) would not leave the final stage its {format_duration(final)}"
        )
        return False

    def finalists_that_fit(self, works: Sequence[float], begun: int = 0) -> int:
        """How many of the candidates (the baseline's point first) the final stage retrains once each, beside the
        baseline's further repeats: no more than the search's last plan funded, and no more than the time left
        holds; records the cut. The first `begun` candidates, whose retrains a resumed run had begun, are kept
        whatever is left: their finished epochs are never thrown away."""
        extra = self.repeats - 1
        count = max(self.budget.affordable(self.price, [works[0]] * extra + list(works), self.final_epochs) - extra, 1)
        reason = f"{format_duration(self.budget.left())} left"
        if self.funded is not None and self.funded + 1 < count:
            count, reason = self.funded + 1, f"the search's last plan kept time for {self.funded}"
        count = max(count, min(begun, len(works)))
        if count < len(works):
            self.budget.cuts.append(f"{len(works) - count} of {len(works) - 1} finalists not retrained: {reason}")
        return count

    def repeat_fits(self, work: float, later_incumbent_repeats: int, what: str) -> bool:
        """Before a further repeat of a finalist: whether it fits beside the incumbent's repeats still to come and
        the report. Records the cut when it does not."""
        need = self.budget.final_seconds(
            self.price, [work] + [self.baseline_work] * later_incumbent_repeats, self.final_epochs
        )
        if need <= self.budget.left():
            return True
        self.budget.cuts.append(
            f"{what} not retrained: about {format_duration(need)} needed with what must follow it, "
            f"{format_duration(self.budget.left())} left"
        )
        return False
