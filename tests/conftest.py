"""Shared fixtures and settings, in one module: a small synthetic dataset in the Kaggle layout, a working folder
per test, and the scenario runs that several tests read (a tiny baseline and a tiny search beside it, and a tiny
baseline retrained with every retrain option). A scenario run is made once per test session, whichever xdist
worker asks first (the other waits for it), and is read only: a test that changes a run copies it first."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import data

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray"


# Generated images at the smallest size the baseline fits, and a seed.
TINY_DATA = ["--synthetic", "--image-size", "48", "--seed", "7"]
# The tiny runs' settings: two retrain epochs, a history to read.
TINY = [*TINY_DATA, "--final-epochs", "2"]
TINY_BASELINE = [*TINY, "--baseline", "--precision", "mixed_bfloat16"]  # the mixed path, on every machine
TINY_TRIALS = ["--tuner", "random", "--max-trials", "3", "--epochs", "1"]  # the tiny search's tuner and trials
TINY_SEARCH = [*TINY, *TINY_TRIALS]
# The same with one retrain epoch: for runs whose checks read no history of the retrain.
TINY_ONE_EPOCH = [*TINY_DATA, "--final-epochs", "1"]
# A preset for tests of the search itself (its trials, resuming, failures, workers): the best point alone is
# retrained, not the finalists (tests/test_final_model.py and the tiny search cover those).
BEST_POINT_ONLY = "finalists: 0\n"
# The tiny baseline retrained with every retrain option at once: cosine rate, weight averaging, the youden_or_half
# threshold; four epochs, so that the cosine's decay shows.
RETRAIN_OPTIONS = "final_schedule: cosine\nfinal_ema_momentum: 0.9\nthreshold: youden_or_half\n"
RETRAIN_OPTIONS_EPOCHS = 4


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder for a test's own run: reports/ and data/synthetic/ land in it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_synthetic_dataset(tmp_path_factory.mktemp("chest_xray"), seed=3)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made if absent): xdist's workers are processes, so a file lock."""
    try:
        import fcntl
    except ImportError:  # Windows: the caller's folder is the worker's own there (see made_once)
        yield
        return
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], None]) -> Path:
    """The folder `name`, filled by `make(folder)` once per test session: under xdist the first worker to ask
    makes it in the session's shared temporary folder while the others wait, then every worker reads it."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER") and os.name == "posix":
        base = base.parent  # pytest-of-USER/pytest-N: one per session, shared by its workers (popen-gw0, ...)
    folder, done = base / name, base / f"{name}.done"
    with _locked(base / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed to make it left part of it
            folder.mkdir(parents=True)
            make(folder)
            done.touch()
    return folder


def run_search_in(folder: Path, *argvs: list[str]) -> None:
    """search.main with each argument list in turn, in `folder`; each must finish (exit 0)."""
    import search

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for argv in argvs:
            assert search.main(argv) == 0, argv


@dataclass
class TinyRuns:
    workdir: Path  # where search.py ran: reports/ and data/synthetic/ are here
    baseline: Path
    search: Path
    baseline_report_alone: str  # the baseline's report.md before the search finished


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """A tiny baseline run in mixed bfloat16, then a tiny random search with the same protocol. Read only."""
    baseline_name = "synthetic-baseline-48px-seed7"

    def make(workdir: Path) -> None:
        run_search_in(workdir, TINY_BASELINE)
        shutil.copy2(workdir / "reports" / baseline_name / "report.md", workdir / "baseline_report_alone.md")
        run_search_in(workdir, TINY_SEARCH)

    workdir = made_once(tmp_path_factory, "tiny_runs", make)
    reports = workdir / "reports"
    alone = (workdir / "baseline_report_alone.md").read_text()
    return TinyRuns(workdir, reports / baseline_name, reports / "synthetic-search-random-48px-seed7", alone)


@pytest.fixture(scope="session")
def retrain_options_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny baseline retrained RETRAIN_OPTIONS_EPOCHS epochs with RETRAIN_OPTIONS (options.yaml). Read only."""

    def make(workdir: Path) -> None:
        (workdir / "options.yaml").write_text(RETRAIN_OPTIONS)
        flags = ["--baseline", "--config", "options.yaml", "--final-epochs", str(RETRAIN_OPTIONS_EPOCHS)]
        run_search_in(workdir, [*TINY_DATA, *flags])

    return made_once(tmp_path_factory, "retrain_options_run", make) / "reports" / "synthetic-baseline-48px-seed7"


def best_point_only(folder: Path) -> list[str]:
    """The --config flags of BEST_POINT_ONLY, written to `folder`/best_point.yaml (a search's run is named after
    its preset: best_point-search-...)."""
    (folder / "best_point.yaml").write_text(BEST_POINT_ONLY)
    return ["--config", str(folder / "best_point.yaml")]


def write_image(path: Path, size: int = 40, mode: str = "L") -> Path:
    """One small valid image file (format from the suffix)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), color=128 if mode == "L" else (120, 130, 140)).save(path)
    return path


def make_layout(root: Path, per_class: int = 3, splits: tuple[str, ...] = ("train", "test")) -> Path:
    """A minimal valid Kaggle layout of tiny images."""
    for split in splits:
        for class_name, stem in (("NORMAL", "IM-{:04d}-0001"), ("PNEUMONIA", "person{}_virus_1")):
            for i in range(per_class):
                write_image(root / split / class_name / f"{stem.format(i + 1)}.jpeg")
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Cluster:
    """search.py processes sharing one working folder, as on machines sharing a file system: a chief and workers
    of one distributed search, each started with `start` and logging to `folder`/NAME.log."""

    def __init__(self, folder: Path, data_dir: Path, *flags: str):
        self.folder = folder
        self.common = [
            "--data-dir", str(data_dir), "--image-size", "48", "--final-epochs", "1", "--seed", "7",
            "--tuner", "random", "--epochs", "1", "--oracle-address", f"127.0.0.1:{free_port()}", *flags,
        ]  # fmt: skip
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *flags: str, **environment: str) -> None:
        import search

        log = (self.folder / f"{name}.log").open("w")
        self.processes[name] = subprocess.Popen(
            [sys.executable, search.__file__, *self.common, *flags],
            cwd=self.folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **environment},
        )

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def wait(self, name: str, timeout: float = 240) -> int:
        return self.processes[name].wait(timeout)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()


def trials_run(log: str) -> list[str]:
    """The trial ids a worker's log says it ran."""
    (line,) = re.findall(r"ran trials: ([^.]*)\.", log)
    return [] if line == "none" else line.split(", ")


# Unit tests apart from end-to-end runs: `python -m pytest -m "not e2e"` is the fast subset. A test is end to end
# when it reads a scenario run (the fixtures above) or its module says so (`pytestmark = pytest.mark.e2e`: it
# trains models, runs search.py, predict.py or a bench script); a single such test elsewhere carries the mark.
SCENARIO_FIXTURES = {"tiny_runs", "retrain_options_run", "workdir", "jax_run", "cluster", "kept_search"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SCENARIO_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
