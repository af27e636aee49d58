"""The baseline's geometric augmentation (shift, shear, zoom) as one Keras layer.

ImageDataGenerator drew a shift, a shear and a zoom per image and resampled the image once.
Keras' RandomTranslation, RandomShear and RandomZoom in a row resample it three times (13.9 ms
a batch of 64 at 80 px on a 2-core CPU, against 4.9 ms for one transform; bench/precision.py). `RandomAffine` draws the same three, from the
same distributions, and composes them into one affine transform per batch.

One concern: that layer. It imports Keras only.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="chest_xray")
class RandomAffine(keras.layers.Layer):
    """Shift, shear and zoom drawn per image, applied in one `keras.ops.image.affine_transform`; training only.

    The draws are those of Keras' layers with the same settings: a shift of up to `width_shift`
    and `height_shift` of the image's side (RandomTranslation), an x-shear of up to
    tan(`shear_degrees`) about the top-left corner (RandomShear, degrees as ImageDataGenerator
    read them), and a zoom drawn from [1 - zoom, 1 + zoom] for each axis on its own
    (RandomZoom), all uniform. The transform is their composition in that order.
    """

    def __init__(
        self,
        width_shift: float = 0.0,
        height_shift: float = 0.0,
        shear_degrees: float = 0.0,
        zoom: float = 0.0,
        fill_mode: str = "nearest",
        interpolation: str = "bilinear",
        seed: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.width_shift = width_shift
        self.height_shift = height_shift
        self.shear_degrees = shear_degrees
        self.zoom = zoom
        self.fill_mode = fill_mode
        self.interpolation = interpolation
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def draw(self, batch_size: Any, height: int, width: int) -> dict[str, Any]:
        """One shift (pixels), shear (tangent) and zoom per axis for each image of a batch."""

        def uniform(bound: float) -> Any:
            return keras.random.uniform((batch_size,), -bound, bound, seed=self.seed_generator)

        return {
            "shift_x": uniform(self.width_shift) * width,
            "shift_y": uniform(self.height_shift) * height,
            "shear_x": uniform(math.tan(math.radians(self.shear_degrees))),
            "zoom_x": 1.0 + uniform(self.zoom),
            "zoom_y": 1.0 + uniform(self.zoom),
        }

    @staticmethod
    def transform(draws: dict[str, Any], height: int, width: int) -> Any:
        """The 8 affine_transform coefficients mapping each output pixel to the input pixel it samples.

        Translate (x - dx, y - dy), shear (x + s y, y) and zoom about the centre
        (zx x + (w - 1)(1 - zx) / 2, ...) in a row make translate o shear o zoom.
        """
        zoom_x, zoom_y, shear = draws["zoom_x"], draws["zoom_y"], draws["shear_x"]
        offset_x = (width - 1) / 2 * (1.0 - zoom_x)
        offset_y = (height - 1) / 2 * (1.0 - zoom_y)
        zeros = ops.zeros_like(zoom_x)
        return ops.stack(
            [
                zoom_x,
                shear * zoom_y,
                offset_x + shear * offset_y - draws["shift_x"],
                zeros,
                zoom_y,
                offset_y - draws["shift_y"],
                zeros,
                zeros,
            ],
            axis=1,
        )

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training:
            return images
        height, width = images.shape[1], images.shape[2]
        draws = self.draw(ops.shape(images)[0], height, width)
        return ops.image.affine_transform(
            images, self.transform(draws, height, width), interpolation=self.interpolation, fill_mode=self.fill_mode
        )

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "width_shift": self.width_shift,
            "height_shift": self.height_shift,
            "shear_degrees": self.shear_degrees,
            "zoom": self.zoom,
            "fill_mode": self.fill_mode,
            "interpolation": self.interpolation,
            "seed": self.seed,
        }
