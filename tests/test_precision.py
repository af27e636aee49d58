"""precision: auto picks the dtype policy from the hardware; a mixed model keeps its output in float32."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import config
from hypermodel import ChestXRayHyperModel, baseline_hyperparameters, without_augmentation
from runtime import precision

CONFIG = config.load()


def test_native_bfloat16_is_read_from_the_cpu_flags():
    assert precision.cpu_bf16_flag("processor : 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n") == (
        "avx512_bf16"
    )
    assert precision.cpu_bf16_flag("flags : fpu amx_tile amx_bf16 amx_int8\n") == "amx_bf16"
    assert precision.cpu_bf16_flag("flags : fpu sse2 avx2 avx512f\n") is None
    assert precision.cpu_bf16_flag("") is None


@pytest.mark.parametrize(
    ("gpu", "cpu_flag", "expected"),
    [
        (("NVIDIA H100", (9, 0)), None, "mixed_bfloat16"),
        (("NVIDIA A100", (8, 0)), None, "mixed_bfloat16"),
        (("Tesla V100", (7, 0)), "avx512_bf16", "mixed_float16"),
        (("Tesla P100", (6, 0)), "avx512_bf16", "float32"),
        (None, "avx512_bf16", "mixed_bfloat16"),
        (None, None, "float32"),
    ],
)
def test_auto_follows_the_hardware(monkeypatch, gpu, cpu_flag, expected):
    monkeypatch.setattr(precision, "gpu_compute_capability", lambda: gpu)
    monkeypatch.setattr(precision, "cpu_bf16_flag", lambda: cpu_flag)
    policy, reason = precision.resolve("auto")
    assert policy == expected and reason.startswith("auto: ")
    assert (gpu[0] if gpu else cpu_flag or "none of") in reason


def test_a_policy_asked_for_is_kept(monkeypatch):
    monkeypatch.setattr(precision, "gpu_compute_capability", lambda: ("NVIDIA H100", (9, 0)))
    assert precision.resolve("float32") == ("float32", "as configured")
    assert precision.resolve("mixed_float16")[0] == "mixed_float16"


@pytest.mark.e2e
def test_mixed_model_computes_in_bfloat16_but_outputs_loss_and_metrics_in_float32(tmp_path):
    model = ChestXRayHyperModel(
        48, 1, CONFIG.search_space.as_dict(), CONFIG.augmentation.as_dict(), "mixed_bfloat16"
    ).build(baseline_hyperparameters())
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert all(layer.compute_dtype == "bfloat16" and layer.variable_dtype == "float32" for layer in convs)
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert model.get_layer("augmentation").layers[0].compute_dtype == "float32"
    x = np.random.default_rng(0).integers(0, 255, (8, 48, 48, 1), dtype=np.uint8)
    y = np.eye(2, dtype="float32")[[0, 1] * 4]
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert (
        model.count_params()
        == ChestXRayHyperModel(48, 1, CONFIG.search_space.as_dict(), CONFIG.augmentation.as_dict())
        .build(baseline_hyperparameters())
        .count_params()
    )

    without_augmentation(model).save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    probabilities = reloaded.predict(x, verbose=0)
    assert probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, model.predict(x, verbose=0))
    # Not rounded to bfloat16's 8-bit mantissa.
    as_bfloat16 = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(probabilities, "bfloat16"), "float32"))
    assert np.any(as_bfloat16 != probabilities)
