"""The Keras backend a run computes with, and the few questions Keras has no portable way to answer.

The backend (TensorFlow, JAX or PyTorch) must be chosen before Keras is first imported, so
`activate` runs before any model code. Everything that differs by backend lives here, each behind
one small function: which GPUs are visible, their compute capability, the library's version,
and a gradient with respect to an intermediate tensor (Grad-CAM).

One concern: the backend and the machine under it. It imports config.py (the backend names) and
errors.py; Keras and the backend library only once `activate` has chosen.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

from config import BACKENDS
from errors import ConfigError

INSTALL = {
    "tensorflow": "pip install -r requirements.txt",
    "jax": "pip install -r requirements-jax.txt (docs/backends.md)",
    "torch": "pip install torch",
}


def choose(flag: str | None, configured: str) -> tuple[str, str]:
    """The backend to use and where that choice came from: --backend, then KERAS_BACKEND, then the config."""
    if flag:
        return flag, "--backend"
    from_environment = os.environ.get("KERAS_BACKEND")
    if from_environment:
        if from_environment not in BACKENDS:
            raise ConfigError(
                f"KERAS_BACKEND is {from_environment!r}, which this tool does not run on: "
                f"set it to one of {', '.join(BACKENDS)} or pass --backend"
            )
        return from_environment, "KERAS_BACKEND"
    return configured, "config"


def activate(name: str) -> None:
    """Make `name` Keras' backend and import Keras with it; TensorFlow's C++ log is quieted on the way."""
    if importlib.util.find_spec(name) is None:
        raise ConfigError(f"the {name} backend needs the {name} package, which is not installed: {INSTALL[name]}")
    loaded = sys.modules.get("keras")
    if loaded is not None and loaded.backend.backend() != name:
        raise ConfigError(
            f"Keras is already loaded with the {loaded.backend.backend()} backend in this process, "
            f"so it cannot switch to {name}: start a new process"
        )
    os.environ["KERAS_BACKEND"] = name
    if name == "tensorflow":
        _quiet_tensorflow()
    import keras  # noqa: F401  (now, under the chosen backend)


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's start-up log (cuInit errors without a GPU, CPU-feature notes) unless the user set
    TF_CPP_MIN_LOG_LEVEL; shown again in full if the import itself fails."""
    logging.getLogger("tensorflow").addFilter(CROSS_MODEL_RETRACING)
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # Some lines are printed before absl's logging starts, where no level applies: catch them at the descriptor.
    with _captured_stderr() as captured:
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise


class _CrossModelRetracing(logging.Filter):
    """Drop TensorFlow's 'triggered tf.function retracing' warning, which a search always provokes.

    Every trial builds a new model, and each model traces its train, test and predict steps once;
    TensorFlow counts those traces against one Python function across all models and warns after
    five. Nothing is traced twice for the same model and shapes, so the warning costs no time here.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


CROSS_MODEL_RETRACING = _CrossModelRetracing()  # one instance: adding it twice to a logger is a no-op


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Any]:
    """File descriptor 2 redirected to a temporary file for the duration, for C++ code writing to it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def name() -> str:
    """The active Keras backend."""
    import keras

    return keras.backend.backend()


def version() -> str:
    """The backend library's version, e.g. '2.21.0'."""
    return importlib.import_module(name()).__version__


def gpus() -> list[tuple[str, tuple[int, int] | None]]:
    """Each GPU the backend sees: its name and CUDA compute capability (None where not reported)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            capability = details.get("compute_capability")
            found.append((details.get("device_name", gpu.name), tuple(capability) if capability else None))
        return found
    if backend == "jax":
        import jax

        try:
            devices = jax.devices("gpu")
        except RuntimeError:  # no GPU platform in this jaxlib
            return []
        return [(device.device_kind, _capability(getattr(device, "compute_capability", None))) for device in devices]
    import torch

    return [
        (torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index)))
        for index in range(torch.cuda.device_count())
    ]


def _capability(text: str | None) -> tuple[int, int] | None:
    """'9.0' -> (9, 0)."""
    if not text:
        return None
    major, _, minor = str(text).partition(".")
    return int(major), int(minor or 0)


def load_tensorboard_writer() -> bool:
    """Whether TensorBoard logs can be written: Keras writes them through tf.summary on every backend,
    so TensorFlow must be installed; it is imported here, quietly, rather than mid-training."""
    if importlib.util.find_spec("tensorflow") is None:
        return False
    _quiet_tensorflow()
    return True


def gradient_of_sum(function: Callable[[Any], Any], inputs: Any) -> Any:
    """d sum(function(inputs)) / d inputs, for a tensor of the active backend (not a weight)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(inputs)
            total = tf.reduce_sum(function(inputs))
        return tape.gradient(total, inputs)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        return jax.grad(lambda values: jnp.sum(function(values)))(inputs)
    import torch

    inputs = inputs.detach().requires_grad_(True)
    (gradient,) = torch.autograd.grad(function(inputs).sum(), inputs)
    return gradient


def devices_line() -> str:
    """What trains the models, in one line, so that a GPU the backend cannot see is noticed at once."""
    found = gpus()
    if found:
        return f"Training on: {', '.join(gpu for gpu, _ in found)}"
    quiet = name() == "tensorflow" and os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"
    return f"Training on: CPU only ({os.cpu_count()} cores), no GPU visible" + (
        " (TensorFlow's log says why: set TF_CPP_MIN_LOG_LEVEL=0 to see it)" if quiet else ""
    )


def environment() -> dict[str, Any]:
    """The versions that computed a run and the machine it ran on, as metrics.json records them."""
    import platform

    import keras
    import keras_tuner
    import numpy

    return {
        "versions": {
            "python": platform.python_version(),
            name(): version(),
            "keras": keras.__version__,
            "keras_tuner": keras_tuner.__version__,
            "numpy": numpy.__version__,
        },
        "machine": machine(),
    }


def machine() -> str:
    """The machine a run ran on, as metrics.json records it: only a run recorded on this one prices this one."""
    import platform

    return f"{platform.platform()}, {os.cpu_count()} CPU cores, {len(gpus())} GPU(s)"
