"""Grad-CAM: where in an X-ray the model's last convolution found the evidence for its decision.

Selvaraju et al. 2017, as in the keras.io example "Grad-CAM class activation visualization",
for whatever architecture the search picked: the last Conv2D layer is found by type.

One concern: the heatmaps. It imports Keras, matplotlib's colour maps, Pillow (to stretch and blend) and
backends.py (the gradient).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops
from matplotlib import colormaps
from PIL import Image

from runtime import backends

BATCH = 64


def last_conv_layer(model: keras.Model) -> keras.Layer:
    """The model's last Conv2D layer."""
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convolutions:
        raise ValueError(f"model {model.name!r} has no Conv2D layer to explain")
    return convolutions[-1]


def explained_member(model: keras.Model) -> keras.Model:
    """The model itself, or for an ensemble (hypermodel.weighted_ensemble) its heaviest member, listed first:
    the heatmaps of an average of models are not one model's, so the largest share is shown."""
    members = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return members[0] if members else model


def grad_cam(model: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One heatmap in [0, 1] per image, of the image's height and width, for the given class of each.

    The score explained is the class's logit minus the other's (the log-odds), read before the
    softmax, because a saturated probability has no gradient left to show.
    """
    model = explained_member(model)
    convolution = last_conv_layer(model)
    to_convolution = keras.Model(model.inputs, convolution.output)
    # Our models are chains, so the layers after the last convolution map its output to the logits' input.
    head = model.layers[model.layers.index(convolution) + 1 : -1]
    batches = [
        _grad_cam_batch(
            to_convolution, head, model.layers[-1], images[start : start + BATCH], classes[start : start + BATCH]
        )
        for start in range(0, len(images), BATCH)
    ]
    return np.concatenate(batches) if batches else np.zeros(images.shape[:3], np.float32)


def _grad_cam_batch(
    to_convolution: keras.Model,
    head: list[keras.Layer],
    output_layer: keras.Layer,
    images: np.ndarray,
    classes: np.ndarray,
) -> np.ndarray:
    sign = ops.convert_to_tensor(np.where(classes == 1, 1.0, -1.0).astype("float32"))

    def class_scores(activations):
        features = activations
        for layer in head:
            features = layer(features, training=False)
        logits = ops.matmul(ops.cast(features, "float32"), output_layer.kernel) + output_layer.bias
        return sign * (logits[:, 1] - logits[:, 0])

    activations = ops.cast(to_convolution(ops.convert_to_tensor(images), training=False), "float32")
    gradients = backends.gradient_of_sum(class_scores, activations)
    channel_weights = ops.mean(gradients, axis=(1, 2))
    maps = ops.relu(ops.einsum("nhwc,nc->nhw", activations, channel_weights))
    maps = maps / (ops.max(maps, axis=(1, 2), keepdims=True) + 1e-12)
    resized = ops.image.resize(maps[..., None], images.shape[1:3], interpolation="bilinear")
    return ops.convert_to_numpy(resized[..., 0])


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap in the jet colour map over the (grayscale or RGB) image, as uint8 RGB.

    The image may be larger than the heatmap (the original X-ray, not the model's input): the heatmap is
    stretched to it bilinearly. Pillow blends in uint8, so a 3,000 px X-ray needs no float copies of itself.
    """
    height, width = image.shape[:2]
    if heatmap.shape != (height, width):
        stretched = Image.fromarray(heatmap.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR)
        heatmap = np.clip(np.asarray(stretched), 0, 1)
    colours = colormaps["jet"](heatmap, bytes=True)[..., :3]
    base = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    return np.asarray(Image.blend(Image.fromarray(base), Image.fromarray(colours), alpha))
