"""What a run decides at start, before any data is read: its settings (config.yaml, the preset, --baseline's and
the flags'), its name, the Keras backend (chosen before Keras loads), the precision (a resumed run keeps its own),
the search space (whose checks come before any data) and the data folder (found, downloaded or generated).

One concern: settling the run. search.py calls `resolve_run` first and drives the rest. It imports config.py,
runs.py and errors.py at the top; the backend, precision and compilation modules, data.py and hypermodel.py inside
the steps, so that `--help` and a config mistake answer before Keras loads, and Keras loads the backend chosen.
"""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import config
import runs
from config import Settings
from errors import ConfigError

SYNTHETIC_DIR = Path("data/synthetic")  # remade for each --synthetic or --smoke run
SMOKE_PRESET = Path(__file__).parents[1] / "configs" / "smoke.yaml"


@dataclass(frozen=True)
class Run:
    """What a run decided at start: its settings with backend, precision, data folder and name settled, and the
    search space they give (made before any data is read, so that its checks come first)."""

    settings: Settings
    kind: str  # "search" or "baseline"
    command: str  # as typed, to reproduce the run
    precision_reason: str
    hypermodel: Any  # hypermodel.ChestXRayHyperModel

    @property
    def dir(self) -> Path:
        return runs.run_folder(self.settings)


def resolve_run(args: argparse.Namespace, command: str = "python search.py") -> Run:
    """Everything a run decides at start, in the order it must: settings, name and backend (before Keras
    loads), then the precision (a resumed run keeps its own) and the data folder (found, downloaded or made)."""
    settings = load_settings(args)
    kind = "baseline" if args.baseline else "search"
    name = settings.run_name or default_run_name(settings, kind, args.synthetic, args.config)
    settings = settings.replace(run_name=name, **choose_backend(settings, args.backend))
    from runtime import (
        backends,  # Keras now loads the chosen backend
        compilation,
    )

    cache_line = compilation.start(
        settings.backend, compilation.cache_folder(settings.compilation_cache, settings.reports_dir)
    )
    if cache_line:
        print(cache_line)
    print(backends.devices_line())
    policy, reason = choose_precision(settings, args.overwrite)
    settings = settings.replace(precision=policy)
    hypermodel = make_hypermodel(settings)  # its checks (the image size among them) before any data
    data_dir = find_data(settings, args.synthetic)
    return Run(settings.replace(data_dir=str(data_dir)), kind, command, reason, hypermodel)


def load_settings(args: argparse.Namespace) -> Settings:
    """config.yaml, then the notebook's settings for --baseline, then --config (or --smoke's preset), then flags."""
    if args.smoke and args.config:
        raise ConfigError("--smoke runs configs/smoke.yaml: drop --config, or drop --smoke and pass --synthetic")
    refuse_ignored_flags(args)
    if args.smoke:
        args.config, args.synthetic = SMOKE_PRESET, True
    settings = config.load(args.config, config.flag_overrides(vars(args)), notebook=args.baseline)
    if args.baseline and settings.distributed.role != "standalone":
        raise ConfigError("--baseline runs no search, so it cannot be distributed: drop --role")
    return settings


# Flags a mode has no use for: refused rather than silently ignored.
SEARCH_ONLY_FLAGS = ("--tuner", "--max-trials", "--epochs")


def refuse_ignored_flags(args: argparse.Namespace) -> None:
    """A flag that the chosen mode would ignore stops the run with one sentence saying what to do instead."""
    generated = "--smoke" if args.smoke else "--synthetic" if args.synthetic else None
    if generated and args.data_dir is not None:
        real = "python search.py --config configs/smoke.yaml" if args.smoke else "python search.py"
        raise ConfigError(
            f"{generated} runs on generated images, so --data-dir {args.data_dir} would be ignored: drop --data-dir, "
            f"or drop {generated} to use that folder (`{real} --data-dir {args.data_dir}`)"
        )
    if args.baseline:
        for flag in SEARCH_ONLY_FLAGS:
            if getattr(args, flag[2:].replace("-", "_")) is not None:
                raise ConfigError(f"--baseline runs no search, so {flag} would be ignored: drop {flag}")


def default_run_name(settings: Settings, kind: str, synthetic: bool, preset: Path | None = None) -> str:
    """A summary of the settings, so that the same command resumes the same run and two presets never share a
    folder: the preset's file name (none for config.yaml and for --baseline, which sets its own) and the budget."""
    what = "baseline" if kind == "baseline" else f"search-{settings.tuner}"
    if preset is not None and kind != "baseline":
        what = f"{Path(preset).stem}-{what}"
    budget = f"-budget{settings.time_budget}" if settings.time_budget else ""
    return f"{'synthetic-' if synthetic else ''}{what}-{settings.image_size}px-seed{settings.seed}{budget}"


def choose_backend(settings: Settings, flag: str | None) -> dict[str, Any]:
    """Settle the Keras backend (--backend, else KERAS_BACKEND, else the config) and load Keras with it; say
    whether TensorBoard logs can be written under it."""
    from runtime import backends

    backend, source = backends.choose(flag, settings.backend)
    backends.activate(backend)
    print(f"Backend: {backend} ({source})")
    tensorboard = settings.tensorboard
    if tensorboard and not backends.load_tensorboard_writer():
        print(
            "Note: no TensorBoard logs: Keras writes them through TensorFlow's summary writer, and TensorFlow is not "
            "installed (pip install tensorflow to get them; tensorboard: false silences this note)."
        )
        tensorboard = False
    return {"backend": backend, "tensorboard": tensorboard}


def choose_precision(settings: Settings, overwrite: bool) -> tuple[str, str]:
    """Settle `precision: auto` on a dtype policy and say why: a resumed run keeps the one it started with."""
    from runtime import precision

    started = None if overwrite else runs.recorded_precision(runs.run_folder(settings))
    if settings.precision == "auto" and started is not None:
        policy, reason = started, "kept from the run being resumed"
    else:
        policy, reason = precision.resolve(settings.precision)
    print(f"Precision: {policy} ({reason})")
    return policy, reason


def find_data(settings: Settings, synthetic: bool) -> Path:
    """The dataset folder: the one named, data/chest_xray (downloaded if absent) or a fresh synthetic one."""
    import data

    if synthetic:
        shutil.rmtree(SYNTHETIC_DIR, ignore_errors=True)
        return data.make_synthetic_dataset(SYNTHETIC_DIR, seed=settings.seed)
    return data.resolve_data_dir(settings.data_dir)


def make_hypermodel(settings: Settings):
    """The search space around the baseline CNN, for this run's input."""
    from data import channel_count
    from hypermodel import ChestXRayHyperModel

    try:
        hypermodel = ChestXRayHyperModel(
            settings.image_size,
            channel_count(settings.color_mode),
            settings.search_space.as_dict(),
            settings.augmentation.as_dict(),
            settings.precision,
        )
        for number, changes in enumerate(settings.candidates):
            hypermodel.point_from(changes, f"candidates[{number}]")
        return hypermodel
    except ValueError as error:
        raise ConfigError(str(error)) from None
