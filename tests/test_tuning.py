"""tuning.MemoryRelease leans on TensorFlow's private gradient registry: a TensorFlow upgrade that moves
it must fail here, not leak memory again in silence (README Performance, Memory)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from config import load_config
from hypermodel import ChestXRayHyperModel, baseline_hyperparameters
from pipeline import tuning


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the registry is TensorFlow's")
def test_a_real_fit_registers_custom_gradients_that_memory_release_drops():
    before = set(tuning.custom_gradient_entries())
    defaults = load_config()
    model = ChestXRayHyperModel(48, 1, defaults.search_space.as_dict(), defaults.augmentation.as_dict()).build(
        baseline_hyperparameters()
    )
    images = np.random.default_rng(0).uniform(0, 255, (8, 48, 48, 1)).astype("float32")
    labels = keras.utils.to_categorical(np.arange(8) % 2, 2)
    model.fit(images, labels, validation_data=(images, labels), epochs=1, batch_size=4, verbose=0)

    added = set(tuning.custom_gradient_entries()) - before
    assert added, "fit() registered no tf.custom_gradient: TensorFlow moved its gradient registry (tuning.py)"
    assert tuning.forget_custom_gradients(before) == len(added)
    assert set(tuning.custom_gradient_entries()) == before
