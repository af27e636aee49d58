"""Grad-CAM: where in an X-ray the model's last convolution found the evidence for its decision.

Selvaraju et al. 2017, as in the keras.io example "Grad-CAM class activation visualization",
for whatever architecture the search picked: the last Conv2D layer is found by type.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from matplotlib import colormaps

BATCH = 64


def last_conv_layer(model: keras.Model) -> keras.Layer:
    """The model's last Conv2D layer."""
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convolutions:
        raise ValueError(f"model {model.name!r} has no Conv2D layer to explain")
    return convolutions[-1]


def grad_cam(model: keras.Model, images: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """One heatmap in [0, 1] per image, of the image's height and width, for the given class of each.

    The score explained is the class's logit minus the other's (the log-odds), read before the
    softmax, because a saturated probability has no gradient left to show.
    """
    output_layer = model.layers[-1]
    features_model = keras.Model(model.inputs, [last_conv_layer(model).output, output_layer.input])
    batches = [
        _grad_cam_batch(features_model, output_layer, images[start : start + BATCH], classes[start : start + BATCH])
        for start in range(0, len(images), BATCH)
    ]
    return np.concatenate(batches) if batches else np.zeros(images.shape[:3], np.float32)


def _grad_cam_batch(features_model: keras.Model, output_layer: keras.Layer, images: np.ndarray, classes: np.ndarray):
    images = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        activations, features = features_model(images, training=False)
        logits = tf.matmul(features, output_layer.kernel) + output_layer.bias
        sign = tf.where(tf.convert_to_tensor(classes) == 1, 1.0, -1.0)
        scores = sign * (logits[:, 1] - logits[:, 0])
    gradients = tape.gradient(scores, activations)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2))
    maps = tf.nn.relu(tf.einsum("nhwc,nc->nhw", activations, channel_weights))
    maps = maps / (tf.reduce_max(maps, axis=(1, 2), keepdims=True) + 1e-12)
    resized = tf.image.resize(maps[..., tf.newaxis], images.shape[1:3], method="bilinear")
    return resized[..., 0].numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """The heatmap in the jet colour map over the (grayscale or RGB) image, as uint8 RGB."""
    base = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
    colours = colormaps["jet"](heatmap)[..., :3] * 255
    return np.clip((1 - alpha) * base + alpha * colours, 0, 255).astype(np.uint8)
