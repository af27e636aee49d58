"""The fused shift/shear/zoom layer: same draws as Keras' three layers, one resampling, saves and reloads."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import layers

from augmentation import RandomAffine

SETTINGS = {"width_shift": 0.2, "height_shift": 0.2, "shear_degrees": 0.2, "zoom": 0.2}


def test_draws_stay_in_their_ranges_and_fill_them():
    draws = {name: np.asarray(values) for name, values in RandomAffine(**SETTINGS, seed=1).draw(4000, 60, 80).items()}
    shear = math.tan(math.radians(0.2))
    bounds = {"shift_x": 0.2 * 80, "shift_y": 0.2 * 60, "shear_x": shear}
    for name, bound in bounds.items():
        assert np.all(np.abs(draws[name]) <= bound + 1e-6), name
        assert np.abs(draws[name]).max() > 0.95 * bound, name  # uniform over the whole range
        assert abs(np.mean(draws[name])) < 0.05 * bound, name  # symmetric
    for name in ("zoom_x", "zoom_y"):
        assert 0.8 - 1e-6 <= draws[name].min() < 0.81 and 1.19 < draws[name].max() <= 1.2 + 1e-6, name
    # Zoom is drawn per axis, as ImageDataGenerator's zoom_range did.
    assert abs(np.corrcoef(draws["zoom_x"], draws["zoom_y"])[0, 1]) < 0.1


def test_inference_is_the_identity_and_training_is_not():
    layer = RandomAffine(**SETTINGS, seed=2)
    x = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 1)).astype("float32")
    assert np.array_equal(layer(x, training=False), x)
    assert np.array_equal(layer(x), x)
    augmented = np.asarray(layer(x, training=True))
    assert augmented.shape == x.shape and not np.array_equal(augmented, x)


def test_one_transform_equals_translation_then_shear_then_zoom():
    """On a linear image, bilinear resampling is exact, so one composed transform must equal Keras' three in a row."""
    height, width = 60, 80
    y, x = np.mgrid[0:height, 0:width].astype("float32")
    image = (x + 100 * y)[None, :, :, None]
    draws = {
        "shift_x": np.array([2.5], "float32"),
        "shift_y": np.array([-1.5], "float32"),
        "shear_x": np.array([0.02], "float32"),
        "zoom_x": np.array([0.9], "float32"),
        "zoom_y": np.array([1.1], "float32"),
    }
    fused = keras.ops.image.affine_transform(image, RandomAffine.transform(draws, height, width), fill_mode="nearest")

    three = layers.RandomTranslation(0.2, 0.2, fill_mode="nearest").transform_images(
        image, {"translations": np.array([[2.5, -1.5]], "float32")}
    )
    three = layers.RandomShear(x_factor=0.1, fill_mode="nearest").transform_images(
        three, {"shear_factor": np.array([[0.02, 0.0]], "float32")}
    )
    three = layers.RandomZoom(0.2, 0.2, fill_mode="nearest").transform_images(
        three, {"width_zoom": np.array([[0.9]], "float32"), "height_zoom": np.array([[1.1]], "float32")}
    )
    inside = (slice(None), slice(12, 48), slice(12, 68))  # far from the borders, where no fill is sampled
    np.testing.assert_allclose(np.asarray(fused)[inside], np.asarray(three)[inside], rtol=1e-4, atol=0.05)


def test_config_round_trips_and_a_model_with_it_saves_and_reloads(tmp_path):
    layer = RandomAffine(**SETTINGS, seed=5, name="augmentation")
    again = RandomAffine.from_config(layer.get_config())
    assert again.get_config() == layer.get_config()

    inputs = keras.Input((32, 32, 1))
    model = keras.Model(inputs, layers.Flatten()(layer(inputs)))
    model.save(tmp_path / "augmented.keras")
    reloaded = keras.saving.load_model(tmp_path / "augmented.keras", safe_mode=True)
    assert reloaded.get_layer("augmentation").get_config() == layer.get_config()
    x = np.random.default_rng(1).integers(0, 255, (2, 32, 32, 1)).astype("float32")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_each_setting_alone_moves_the_image(setting):
    layer = RandomAffine(
        **{**dict.fromkeys(SETTINGS, 0.0), setting: SETTINGS[setting] * (20 if "shear" in setting else 1)}
    )
    x = np.random.default_rng(3).integers(0, 255, (8, 40, 40, 1)).astype("float32")
    assert not np.array_equal(np.asarray(layer(x, training=True)), x)
