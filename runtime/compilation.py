"""What XLA compiles on the JAX backend: the persistent compilation cache, and a count of what compiled.

On JAX each model's step functions compile when first called, and a new batch shape compiles them again
(data.to_dataset pads last batches so that none comes). A persistent cache on disk lets a resumed run, the
retrain of a point the search trained, or a shape seen before load the program instead of compiling it.
TensorFlow and PyTorch runs here compile nothing ahead of time: for them this module does nothing.

One concern: JAX's compilation. It imports jax only when the backend is JAX, and knows nothing of runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_FOLDER = ".compilation-cache"  # under REPORTS_DIR, beside the run folders (the runs index skips it)
STEP_FUNCTIONS = ("train_step", "test_step", "predict_step")
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_EVENTS = {
    "/jax/compilation_cache/cache_hits": "cache_hits",
    "/jax/compilation_cache/cache_misses": "cache_misses",
}


@dataclass
class Compilations:
    """The programs XLA built in this process (compiled, or loaded from the cache) and their seconds."""

    programs: int = 0
    seconds: float = 0.0  # compiling, and loading from the cache
    cache_hits: int = 0
    cache_misses: int = 0
    functions: Counter = field(default_factory=Counter)  # programs by the name of the function compiled
    function_seconds: Counter = field(default_factory=Counter)

    def on_duration(self, event: str, seconds: float, **details: Any) -> None:
        if event == _COMPILE_EVENT:
            name = str(details.get("fun_name", ""))
            self.programs += 1
            self.seconds += seconds
            self.functions[name] += 1
            self.function_seconds[name] += seconds

    def on_event(self, event: str, **details: Any) -> None:
        if event in _CACHE_EVENTS:
            setattr(self, _CACHE_EVENTS[event], getattr(self, _CACHE_EVENTS[event]) + 1)

    @property
    def steps(self) -> dict[str, int]:
        """Programs of Keras' step functions, by name, those built at least once."""
        built = {step: self.functions[f"jit({step})"] + self.functions[step] for step in STEP_FUNCTIONS}
        return {step: count for step, count in built.items() if count}

    def as_dict(self) -> dict[str, Any]:
        """What metrics.json records under run.compilation."""
        return {
            "programs": self.programs,
            "seconds": round(self.seconds, 2),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "step_functions": self.steps,
        }


COUNTS = Compilations()
_listening = False


def cache_folder(setting: bool | str, reports_dir: str | Path) -> Path | None:
    """The cache folder a `compilation_cache` setting names: true, REPORTS_DIR/.compilation-cache; false, none."""
    if setting is True:
        return Path(reports_dir) / CACHE_FOLDER
    return Path(setting) if setting else None


def start(backend: str, folder: Path | None) -> str | None:
    """On JAX, start counting compilations and, with a folder, keep compiled programs there; the line saying
    so, or None on another backend. Call it before anything compiles: JAX decides once whether to use a cache."""
    global _listening
    if backend != "jax":
        return None
    import jax

    if not _listening:
        jax.monitoring.register_event_duration_secs_listener(COUNTS.on_duration)
        jax.monitoring.register_event_listener(COUNTS.on_event)
        _listening = True
    if folder is None:
        return "Compilation cache: off (compilation_cache: false); every program compiles afresh"
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program is kept, even sub-second ones: a trial compiles dozens of those while it builds its model.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return f"Compilation cache: {folder} (compilation_cache in the config; a run resumed or repeated loads from it)"


def summary_line(counts: Compilations = COUNTS) -> str:
    """One line on the programs XLA built: how many it compiled, how many the cache gave, the seconds spent and
    the step functions among them."""
    steps = ", ".join(f"{name} {count}" for name, count in counts.steps.items())
    compiled = counts.programs - counts.cache_hits
    return (
        f"XLA: {counts.programs} programs, {compiled} compiled and {counts.cache_hits} loaded from the cache, "
        f"{counts.seconds:.1f} s in all (step functions: {steps or 'none'})"
    )
