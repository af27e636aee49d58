"""Shared fixtures: a small synthetic dataset in the Kaggle layout, made once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data  # noqa: E402

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest_xray"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.make_synthetic_dataset(tmp_path_factory.mktemp("chest_xray"), seed=3)


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
