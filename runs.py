"""A run folder, reports/<run>/: its layout and file names, whole-file writes, the run's clock (kept there
across resumes), the results it holds (`RunResult`, read and written in one place, older runs included),
whether it is finished, the resume policy and the lookup of the other kind's run to compare with.

One concern: the files of runs. It imports config.py and errors.py, never Keras.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import yaml

from config import Settings, dump, load_recorded, recorded
from errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd  # imported where tables are read, so `search.py --help` stays instant

CONFIG_FILE = "config.yaml"  # the settings the run was started with; written first
REPORT_FILE = "report.md"  # written last: its presence means the run finished
METRICS_FILE = "metrics.json"  # validation and test figures and the run's record; written last of the tables
TRIALS_FILE = "trials.csv"  # a search's trials, one row each; a baseline run has none
HISTORY_FILE = "history.csv"  # the final retrain, one row per epoch
PREDICTIONS_FILE = "predictions.csv"  # split, file, label, p_pneumonia of every validation and test image
BEST_POINT_FILE = "best_hyperparameters.yaml"  # the delivered model's point
MODEL_FILE = "model.keras"  # the delivered model; not committed to git
CARD_FILE = "model_card.md"
STUDY_FILE = "study.db"  # a search as an Optuna study: optuna-dashboard sqlite:///study.db
DATA_SUMMARY_FILE = "data_summary.csv"
SKIPPED_FILE = "skipped_images.csv"  # images left out as undecodable (--skip-bad-images)
RETRAIN_BACKUP = "retrain"  # what an interrupted retrain resumes from; removed once reported
CLOCK_FILE = "wall_seconds.json"  # the run's time so far, over every process that ran it (`Stopwatch`)
# Settings that must match for a search and a baseline run to be compared on test: the same data and the same
# validation patients left out of training. The notebook baseline trains under its own settings (--baseline), so
# the comparison is the one a user asks for: what the default protocol delivers against the notebook's CNN.
PROTOCOL_KEYS = ("data_dir", "validation_fraction", "seed")
# How a run is spread over processes and devices and whether it logs, not what it computes: a run may resume under other values.
RUNTIME_KEYS = ("distribution", "distributed", "tensorboard", "compilation_cache")


@dataclass(frozen=True)
class RunFolder:
    """One run folder, read by file: every reader of a run (report, index, ETA, study, predict.py, bench/) goes
    through here, so a file's name and format are known in one place. Readers of optional files return None or []
    where the file is absent."""

    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    def is_finished(self) -> bool:
        return is_finished(self.path)

    def config(self) -> dict[str, Any]:
        """config.yaml as a mapping, with the legacy values of keys the run predates."""
        return recorded(self.file(CONFIG_FILE))

    def settings(self) -> Settings:
        return load_recorded(self.file(CONFIG_FILE))

    def metrics(self) -> dict[str, Any]:
        """metrics.json in today's shape, however old the run (`upgrade_metrics`)."""
        metrics = json.loads(self.file(METRICS_FILE).read_text())
        point = self.file(BEST_POINT_FILE)
        return upgrade_metrics(metrics, lambda: self.best_point() if point.exists() else None)

    def best_point(self) -> dict[str, Any]:
        return yaml.safe_load(self.file(BEST_POINT_FILE).read_text())

    def trials(self) -> pd.DataFrame | None:
        return read_trials(self.file(TRIALS_FILE))

    def history(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.file(HISTORY_FILE))

    def predictions(self) -> pd.DataFrame:
        import pandas as pd

        return pd.read_csv(self.file(PREDICTIONS_FILE))

    def trial_rows(self) -> list[dict[str, str]]:
        """trials.csv as text rows without pandas (the ETA reads it before Keras loads); [] when there is none."""
        return _csv_rows(self.file(TRIALS_FILE))

    def history_rows(self) -> list[dict[str, str]]:
        """history.csv as text rows without pandas; [] when there is none."""
        return _csv_rows(self.file(HISTORY_FILE))

    def image_counts(self) -> dict[str, int]:
        """The images the run read (data_summary.csv), in data.image_counts' form; {} when unreadable."""
        rows = {row.get(""): row for row in _csv_rows(self.file(DATA_SUMMARY_FILE))}
        try:
            pool = sum(int(rows[split]["images"]) for split in ("train", "validation"))
            return {"pool": pool, "test": int(rows["test"]["images"])}
        except (KeyError, ValueError):
            return {}


def _csv_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as file:
            return list(csv.DictReader(file))
    except OSError:
        return []


class Stopwatch:
    """Seconds spent in each named phase of a run, added up over every process that ran it.

    `lap(phase)` ends a phase. Once kept in a run folder (`keep_in`), a resumed run's clock carries on from the
    time earlier processes recorded there: a phase they finished adds up, and the time of the phase a process
    was stopped in goes to the first phase the next one finishes that it had not."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.started = self.last = now()
        self.seconds: dict[str, float] = {}
        self.earlier_total = 0.0
        self.carried = 0.0  # an earlier process's time in the phase it was stopped in, not yet given to one
        self.processes = 1
        self.path: Path | None = None
        self.lock = threading.RLock()  # save() reads total() while holding it
        self.stopped = threading.Event()

    def keep_in(self, run_dir: Path, every: float | None = 60.0) -> None:
        """Before the first lap: carry on from the time recorded in run_dir, and record this process's there at
        each lap and every `every` seconds, so a process that is killed loses at most that much of the run's time."""
        self.path = run_dir / CLOCK_FILE
        if self.path.exists():
            earlier = json.loads(self.path.read_text())
            self.seconds = dict(earlier["phases"])
            self.earlier_total, self.processes = earlier["total"], earlier["processes"] + 1
            self.carried = earlier["total"] - sum(earlier["phases"].values())
        self.save()
        if every:
            threading.Thread(target=self._save_every, args=(every,), daemon=True).start()

    def lap(self, phase: str) -> None:
        with self.lock:
            now = self.now()
            spent = now - self.last
            if phase not in self.seconds:
                spent, self.carried = spent + self.carried, 0.0
            self.seconds[phase] = self.seconds.get(phase, 0.0) + spent
            self.last = now
        self.save()

    def total(self) -> dict[str, float]:
        with self.lock:
            return {**self.seconds, "total": self.earlier_total + self.now() - self.started}

    def save(self) -> None:
        """Record the time so far in the run folder (a whole-file write; the periodic saver shares the lock)."""
        if self.path is None:
            return
        with self.lock:
            phases = self.total()
            record = {"total": phases.pop("total"), "processes": self.processes}
            write_text(self.path, json.dumps({"phases": phases, **record}, indent=2) + "\n")

    def close(self) -> None:
        """Stop the periodic saver and record the time so far: a run stopped by Ctrl-C or an error keeps it."""
        self.stopped.set()
        with suppress(OSError):  # a run folder removed meanwhile has nothing left to time
            self.save()

    def _save_every(self, seconds: float) -> None:
        while not self.stopped.wait(seconds):
            try:
                self.save()
            except OSError:
                return


@dataclass
class RunResult:
    """Everything a report shows: a finished run's files, read back (`load`) or about to be written (`save`)."""

    run_dir: Path
    config: Settings  # as the run recorded them; keys older runs lack take their legacy values
    data_summary: pd.DataFrame
    trials: pd.DataFrame | None
    best_hyperparameters: dict[str, Any]
    history: pd.DataFrame
    metrics: dict[str, Any]  # "validation", "test", "run"
    predictions: pd.DataFrame  # split, file, label, p_pneumonia
    counterpart: tuple[str, dict[str, Any]] | None = None  # the other kind's run name and metrics
    counterpart_predictions: pd.DataFrame | None = None  # the other run's predictions.csv, for paired differences
    skipped_images: pd.DataFrame | None = None  # split, file, class of images left out as undecodable

    @property
    def kind(self) -> str:
        return self.metrics["run"]["kind"]

    @classmethod
    def load(cls, run_dir: Path, counterpart: tuple[str, dict[str, Any]] | None = None) -> RunResult:
        import pandas as pd

        folder = RunFolder(run_dir)
        skipped = folder.file(SKIPPED_FILE)
        other = RunFolder(run_dir.parent / counterpart[0]) if counterpart else None
        return cls(
            run_dir=run_dir,
            config=folder.settings(),
            data_summary=pd.read_csv(folder.file(DATA_SUMMARY_FILE), index_col=0),
            trials=folder.trials(),
            best_hyperparameters=folder.best_point(),
            history=folder.history(),
            metrics=folder.metrics(),
            predictions=folder.predictions(),
            counterpart=counterpart,
            counterpart_predictions=other.predictions() if other and other.file(PREDICTIONS_FILE).exists() else None,
            skipped_images=pd.read_csv(skipped) if skipped.exists() else None,
        )

    def save(self) -> None:
        """Write the tables beside the run's config.yaml, metrics.json last (the report is rendered after)."""
        folder = RunFolder(self.run_dir)
        if self.trials is not None:
            write_csv(folder.file(TRIALS_FILE), self.trials)
        if self.skipped_images is not None and len(self.skipped_images):
            write_csv(folder.file(SKIPPED_FILE), self.skipped_images)
        write_csv(folder.file(DATA_SUMMARY_FILE), self.data_summary, index=True)
        write_text(folder.file(BEST_POINT_FILE), yaml.safe_dump(self.best_hyperparameters, sort_keys=False))
        write_csv(folder.file(HISTORY_FILE), self.history)
        write_csv(folder.file(PREDICTIONS_FILE), self.predictions)
        write_text(folder.file(METRICS_FILE), json.dumps(self.metrics, indent=2))


def plural(count: int, noun: str) -> str:
    """A count with its noun as people write it: "1 epoch", "45 epochs", "0 finalists"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def point_name(trial_id: str, is_baseline: bool) -> str:
    """How logs, metrics' readers and reports name a finalist point."""
    return "the baseline's point" if is_baseline else f"trial {trial_id}"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it only once written completely."""
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """`text` to `path`, written whole: a reader sees the old file or the new one, never half of one."""
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def write_csv(path: Path, table: pd.DataFrame, index: bool = False) -> None:
    with atomic_path(path) as temporary:
        table.to_csv(temporary, index=index)


def save_figure(path: Path, figure: Any) -> None:
    """A matplotlib Figure as an image file, written whole."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight")


def save_model(run_dir: Path, model: Any) -> None:
    """The delivered model as model.keras, written whole."""
    with atomic_path(run_dir / MODEL_FILE) as temporary:
        model.save(temporary)


def is_synthetic(data_dir: str) -> bool:
    """Whether a run trained on generated images (`search.py --synthetic` makes them under data/synthetic), not on
    the chest X-rays, so that no figure of the real data may be set beside its results."""
    return "synthetic" in PurePath(data_dir).parts


def is_finished(run_dir: Path) -> bool:
    """A run is finished once its report.md exists: render() writes it last."""
    return (run_dir / REPORT_FILE).exists()


def disk_usage(folder: Path) -> int:
    """Bytes taken by the files under `folder`."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def read_trials(path: Path) -> pd.DataFrame | None:
    """A search's trials.csv (trial ids kept as written), or None for a baseline run."""
    import pandas as pd

    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"trial_id": str}, keep_default_na=False, na_values=[""])


def run_folder(settings: Settings) -> Path:
    """reports_dir/run_name, where a run's files go."""
    return Path(settings.reports_dir) / settings.run_name


def recorded_precision(run_dir: Path) -> str | None:
    """The dtype policy the run in `run_dir` was started with (None where there is none): a resumed run keeps
    it, whatever `auto` would choose now."""
    started = run_dir / CONFIG_FILE
    return recorded(started)["precision"] if started.exists() else None


def will_resume(settings: Settings, overwrite: bool) -> bool:
    """Whether the run folder holds an unfinished run with the same settings, to go on with; a finished run, or one
    started with other settings, is refused (without --overwrite) before anything is written."""
    run_dir = run_folder(settings)
    if overwrite or settings.distributed.role == "worker":
        return False
    if is_finished(run_dir):
        raise ConfigError(
            f"{run_dir} holds a finished run: pass --overwrite to redo it or --run-name NAME for a new one"
        )
    if not (run_dir / CONFIG_FILE).exists():
        return False
    changed = changed_settings(recorded(run_dir / CONFIG_FILE), settings)
    if changed:
        raise ConfigError(
            f"{run_dir} was started with other settings ({', '.join(changed)}): "
            "pass --overwrite to start afresh or --run-name NAME for a new run"
        )
    return True


def prepare_run_dir(settings: Settings, overwrite: bool) -> Path:
    """Create the run folder and write its config.yaml, or resume it when it holds an unfinished run with the
    same settings."""
    run_dir = run_folder(settings)
    if settings.distributed.role == "worker":
        # A worker keeps only its trials' checkpoints under tuner/; the chief owns the run's files.
        return run_dir
    if will_resume(settings, overwrite):
        print(f"Resuming {run_dir}: finished trials are kept.")
    elif run_dir.exists() and overwrite:
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG_FILE, dump(settings))
    except OSError as error:
        raise ConfigError(f"cannot write to {run_dir} ({error.strerror}): pass a writable --reports-dir") from None
    return run_dir


def changed_settings(previous: dict[str, Any], settings: Settings) -> list[str]:
    """The keys whose values differ from a recorded run's, those that only say how it runs aside."""
    now = settings.as_dict()
    return [key for key in now if key not in RUNTIME_KEYS and previous.get(key) != now[key]]


def upgrade_metrics(metrics: dict[str, Any], best_point: Callable[[], dict[str, Any] | None]) -> dict[str, Any]:
    """The one upgrade of an older metrics.json: a run recorded before every final stage kept its finalists (the
    best point alone, retrained once) gets that point as its one finalist, of weight 1, and the selection that
    chose it; `best_point` reads the run's best_hyperparameters.yaml (None without one), only where it is needed."""
    if "finalists" in metrics:
        return {**metrics, "selection": _upgrade_selection(metrics["selection"])} if "selection" in metrics else metrics
    point, run = best_point(), metrics.get("run", {})
    baseline = run.get("baseline_hyperparameters")
    is_baseline = run.get("kind") == "baseline" or (
        point is not None and baseline is not None and all(point.get(k) == v for k, v in baseline.items())
    )
    only = {
        "trial_id": "baseline" if run.get("kind") == "baseline" else None,  # a search's trial went unrecorded
        "is_baseline": is_baseline,
        "point": point,
        "search_score": None,
        "search_last_score": None,
        "kept_epoch": run.get("best_epoch"),
        "weight": 1.0,
        "validation": metrics.get("validation"),
        "test": metrics.get("test"),
    }
    return {**metrics, "finalists": [only], "selection": only_finalist_selection()}


def _upgrade_selection(selection: dict[str, Any]) -> dict[str, Any]:
    """A selection recorded before the race's sign was the challenger's minus the incumbent's (runs before
    2026-12-06 kept the incumbent's minus the challenger's, and `challenger_wins`), or before `incumbent_rule`."""
    race = selection["race"]
    if "challenger_wins" in race:
        low, high = race["ci95"]
        race = {"difference": -race["difference"], "ci95": [-high, -low], "clearly_better": race["challenger_wins"]}
    return {"incumbent_rule": "race", "replaced": race["clearly_better"], **selection, "race": race}


def no_race() -> dict[str, Any]:
    """selection.race where there was no challenger to race: the incumbent against itself."""
    return {"difference": 0.0, "ci95": [0.0, 0.0], "clearly_better": False}


def only_finalist_selection() -> dict[str, Any]:
    """metrics.json's "selection" where the final stage retrained one point: nothing to choose, nothing raced."""
    return {"rule": "one finalist: nothing to choose", "replaced": False, "greedy_weights": [1.0], "race": no_race(),
            "weights": [1.0]}  # fmt: skip


def chose_among_finalists(metrics: dict[str, Any]) -> bool:
    """Whether the final stage had a choice to make (several finalists, or repeats raced): False for the best point
    alone retrained once, which the report describes as one retrain."""
    return len(metrics["finalists"]) > 1 or "racing" in metrics["selection"]


def find_counterpart(settings: Settings, kind: str) -> tuple[str, dict[str, Any]] | None:
    """The newest finished run of the other kind (search or baseline) with the same protocol."""
    now = settings.as_dict()
    finished = sorted(
        Path(settings.reports_dir).glob("*/metrics.json"), key=lambda path: path.stat().st_mtime, reverse=True
    )
    for metrics_file in finished:
        if not is_finished(metrics_file.parent):
            continue
        try:
            other = RunFolder(metrics_file.parent).metrics()
            other_config = recorded(metrics_file.with_name(CONFIG_FILE))
        except (ConfigError, OSError, ValueError, KeyError, yaml.YAMLError):  # unreadable: no counterpart
            continue
        if other.get("run", {}).get("kind") != kind and all(other_config.get(key) == now[key] for key in PROTOCOL_KEYS):
            return metrics_file.parent.name, other
    return None
