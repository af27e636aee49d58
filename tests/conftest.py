"""Shared fixtures, made once per session: a small synthetic dataset in the Kaggle layout, and a tiny
baseline run and a tiny search run beside it for the tests that only read what runs write."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import data

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray"


# The tiny runs' settings: the smallest image the baseline fits, two retrain epochs.
TINY = ["--synthetic", "--image-size", "48", "--final-epochs", "2", "--seed", "7"]
TINY_BASELINE = [*TINY, "--baseline", "--precision", "mixed_bfloat16"]  # the mixed path, on every machine
TINY_SEARCH = [*TINY, "--tuner", "random", "--max-trials", "3", "--epochs", "1"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_synthetic_dataset(tmp_path_factory.mktemp("chest_xray"), seed=3)


@dataclass
class TinyRuns:
    workdir: Path  # where search.py ran: reports/ and data/synthetic/ are here
    baseline: Path
    search: Path
    baseline_report_alone: str  # the baseline's report.md before the search finished


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """A tiny baseline run in mixed bfloat16, then a tiny random search with the same protocol. Read only."""
    import search

    workdir = tmp_path_factory.mktemp("tiny_runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert search.main(TINY_BASELINE) == 0
        baseline = workdir / "reports" / "synthetic-baseline-48px-seed7"
        alone = (baseline / "report.md").read_text()
        assert search.main(TINY_SEARCH) == 0
    return TinyRuns(workdir, baseline, workdir / "reports" / "synthetic-search-random-48px-seed7", alone)


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
