"""The search space around the baseline softmax CNN of docs/baseline.md.

Every hyperparameter's default is the baseline's value, and `baseline_hyperparameters()`
returns that point, so `build()` on it gives the baseline model exactly.

One concern: the models. It imports Keras, Keras Tuner, augmentation.py, config.py (HYPERPARAMETERS: which
hyperparameters there are and how each is drawn) and runtime/compat.py (Keras' loss tracker), and knows nothing
of files: the search space and augmentation come in as plain mappings.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_tuner as kt
import numpy as np
from keras import layers

import config
from augmentation import RandomAffine
from budget import point_work
from runtime import compat

# The baseline's point: every hyperparameter's baseline value, from its row of config.HYPERPARAMETERS.
BASELINE: dict[str, Any] = config.baseline_point()


def max_conv_blocks(image_size: int) -> int:
    """How many (3x3 valid conv, 2x2 pool) blocks fit before the feature map drops below 1 x 1."""
    blocks, side = 0, image_size
    while (side - 2) // 2 >= 1:
        side = (side - 2) // 2
        blocks += 1
    return blocks


def min_image_size(blocks: int) -> int:
    """The smallest input side that fits this many blocks."""
    side = 1
    for _ in range(blocks):
        side = 2 * side + 2
    return side


def model_size(values: dict[str, Any], image_size: int, channels: int) -> tuple[float, float]:
    """Per image, the multiply-adds of the model `build` makes at a point (its 3x3 valid convolutions, each followed
    by a 2x2 max pooling, and its hidden dense layers) and the activations its convolutions write: what prices a
    point's epoch (budget.point_work). Only the active values are read; tests/test_hypermodel.py ties it to the
    built model's layers."""
    side, inputs, multiply_adds, activations = image_size, channels, 0.0, 0.0
    for block in range(int(values["conv_blocks"])):
        filters = int(values[f"filters_{block}"])
        out = side - 2
        multiply_adds += out * out * 9 * inputs * filters
        activations += out * out * filters
        side, inputs = out // 2, filters
    features = inputs if values.get("pooling") == "average" else side * side * inputs
    for layer in range(int(values["dense_layers"])):
        units = int(values[f"units_{layer}"])
        multiply_adds += features * units
        features = units
    return multiply_adds, activations


def baseline_hyperparameters() -> kt.HyperParameters:
    """The baseline's point of the space: build() on it gives the 931,130-parameter baseline."""
    hp = kt.HyperParameters()
    hp.values.update(BASELINE)
    return hp


class ChestXRayHyperModel(kt.HyperModel):
    """Conv depth and filters, dropout, dense layers and the RMSprop learning rate, tuned."""

    def __init__(
        self,
        image_size: int,
        channels: int,
        search_space: dict[str, Any],
        augmentation: dict[str, float],
        precision: str = "float32",
    ):
        super().__init__(name="chest_xray_cnn")
        self.input_shape = (image_size, image_size, channels)
        self.augmentation = augmentation
        self.precision = precision  # a Keras dtype policy: float32, mixed_bfloat16 or mixed_float16
        fitting = max_conv_blocks(image_size)
        if BASELINE["conv_blocks"] > fitting:
            raise ValueError(
                f"image_size {image_size} (--image-size or the config's image_size) is too small for the baseline's "
                f"{BASELINE['conv_blocks']} conv blocks: pass --image-size {min_image_size(BASELINE['conv_blocks'])} or more"
            )
        if search_space["conv_blocks"]["min"] > fitting:
            raise ValueError(
                f"search_space.conv_blocks.min {search_space['conv_blocks']['min']} does not fit image_size {image_size}: "
                f"at most {fitting} blocks fit"
            )
        # Deeper networks would shrink the feature map below 1 x 1: clamp instead of failing a trial.
        self.max_blocks = min(search_space["conv_blocks"]["max"], fitting)
        # The space as Keras Tuner draws from it (config.yaml's form), its depth (and so its filters_i) clamped.
        self.space = {**search_space, "conv_blocks": {**search_space["conv_blocks"], "max": self.max_blocks}}
        self._check_baseline_inside()

    def _check_baseline_inside(self) -> None:
        """Every hyperparameter's default is the baseline's value, so its search_space entry must hold it."""
        for parameter in config.HYPERPARAMETERS:
            where, bounds = f"search_space.{parameter.key}", self.space[parameter.key]
            if parameter.per is not None:
                missing = sorted(set(parameter.baseline) - set(bounds))
                if missing:
                    raise ValueError(f"{where} must include the baseline's {missing}: add them to its list")
                continue
            if not _inside(parameter.kind, bounds, parameter.baseline):
                remedy = "widen its min/max" if parameter.kind in config.RANGE_KINDS else "add it to its list"
                raise ValueError(f"{where} must include the baseline's {parameter.baseline}: {remedy}")

    def point_from(self, changes: dict[str, Any], where: str) -> dict[str, Any]:
        """The baseline's point with `changes` made (config.yaml's candidates), each value inside the search space
        and every layer a deeper point adds given; `where` names the entry in the error otherwise."""
        point = {**BASELINE, **changes}
        for name, value in changes.items():
            declared = config.hyperparameter(name)
            bounds = self.space[declared.key]
            if not _inside(declared.kind, bounds, value):
                raise ValueError(
                    f"{where}: {name} {value!r} lies outside search_space.{declared.key} ({bounds}): change the "
                    "value or widen the range"
                )
        for declared in (row for row in config.HYPERPARAMETERS if row.per):
            missing = [
                f"{declared.name}_{i}" for i in range(point[declared.per]) if f"{declared.name}_{i}" not in point
            ]
            if missing:
                raise ValueError(f"{where}: {declared.per} {point[declared.per]} needs {', '.join(missing)}: add them")
        if point == BASELINE:
            raise ValueError(f"{where} changes none of the baseline's values: change one or leave the entry out")
        return point

    def work(self, values: dict[str, Any]) -> float:
        """One epoch's relative cost at a point (budget.point_work), for pricing a time budget."""
        multiply_adds, activations = model_size(values, self.input_shape[0], self.input_shape[2])
        return point_work(multiply_adds, activations, bool(values.get("batch_norm")))

    def mean_work(self, samples: int = 400, seed: int = 0) -> float:
        """The search space's mean work over points drawn uniformly from it, as a random search draws them: the
        price of trials not yet drawn. Each hyperparameter is drawn alone; work() reads the active ones only."""
        import random

        hp = kt.HyperParameters()
        self.declare(hp)  # the whole space
        draws = random.Random(seed)
        return float(
            np.mean([self.work({h.name: h.random_sample(draws.random()) for h in hp.space}) for _ in range(samples)])
        )

    def build(self, hp: kt.HyperParameters, ema_momentum: float | None = None) -> keras.Model:
        """The model at point `hp`, its layers in `precision` (the global policy is left as it was).

        With `ema_momentum`, the optimizer also keeps an exponential moving average of the weights
        (Keras' `use_ema`), updated every step; the retrain can validate and keep those averaged weights.
        """
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(self.precision)
        try:
            return self._build_model(hp, ema_momentum)
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def declare(self, hp: kt.HyperParameters) -> dict[str, Any]:
        """Declare config.HYPERPARAMETERS on `hp`, in their order (the order decides which points a seeded random
        search visits), each with the baseline's value as its default; return the point's values.

        A per-layer one (filters_i, units_i) is declared for every layer its count allows, active only when the
        count reaches it, so Keras Tuner knows the whole space before the first trial; inactive ones are None.
        """
        point: dict[str, Any] = {}
        for parameter in config.HYPERPARAMETERS:
            bounds = self.space[parameter.key]
            if parameter.per is None:
                point[parameter.name] = _declare(hp, parameter.kind, parameter.name, bounds, parameter.baseline)
                continue
            most, defaults = self.space[parameter.per]["max"], parameter.baseline_values()
            for i, name in enumerate(parameter.names(self.space)):
                with hp.conditional_scope(parameter.per, list(range(i + 1, most + 1))):
                    point[name] = _declare(hp, parameter.kind, name, bounds, defaults.get(name))
        return point

    def _build_model(self, hp: kt.HyperParameters, ema_momentum: float | None = None) -> keras.Model:
        point = self.declare(hp)
        inputs = keras.Input(self.input_shape, name="pixels")
        x = self._augmentation(point["brightness"], point["contrast"])(inputs)
        x = layers.Rescaling(1.0 / 255)(x)
        filters = [point[f"filters_{i}"] for i in range(point["conv_blocks"])]
        x = self._conv_blocks(x, filters, point["batch_norm"])
        x = layers.GlobalAveragePooling2D()(x) if point["pooling"] == "average" else layers.Flatten()(x)
        x = layers.Dropout(point["dropout"])(x)
        x = self._dense_layers(x, [point[f"units_{i}"] for i in range(point["dense_layers"])])
        # In float32 even in a mixed run: a bfloat16 probability has 8 bits of mantissa, so values
        # near 1 would tie and blur the ROC AUC and the threshold; loss and metrics follow it.
        outputs = layers.Dense(2, activation="softmax", name="probabilities", dtype="float32")(x)

        model = keras.Model(inputs, outputs, name="chest_xray_cnn")
        model.compile(
            optimizer=keras.optimizers.RMSprop(
                learning_rate=point["learning_rate"],
                use_ema=ema_momentum is not None,
                ema_momentum=ema_momentum or 0.99,
            ),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=point["label_smoothing"])
            if point["label_smoothing"]
            else "categorical_crossentropy",
            # Per-label AUC averaged over two complementary softmax columns is the ROC AUC of PNEUMONIA.
            # Weighted, so that count_weighted_rows_only can leave out padding rows; it weighs real rows alike.
            weighted_metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=2)],
        )
        return count_weighted_rows_only(model)

    def _conv_blocks(self, x: Any, filters: list[int], batch_norm: bool) -> Any:
        """Conv2D 3x3 ReLU + MaxPool blocks, one per entry of `filters`."""
        for width in filters:
            if batch_norm:
                # The normalisation's shift replaces the convolution's bias.
                x = layers.Conv2D(width, 3, use_bias=False)(x)
                x = layers.BatchNormalization()(x)
                x = layers.Activation("relu")(x)
            else:
                x = layers.Conv2D(width, 3, activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        return x

    def _dense_layers(self, x: Any, units: list[int]) -> Any:
        """Dense ReLU layers, one per entry of `units`."""
        for width in units:
            x = layers.Dense(width, activation="relu")(x)
        return x

    def _augmentation(self, brightness: float, contrast: float) -> keras.Layer:
        """The baseline's ImageDataGenerator settings as Keras layers, active only in training.

        Brightness and contrast are searched: the test split's exposure differs from train's. Pixel
        arithmetic stays in float32 in a mixed run: bfloat16 would round interpolated pixels and coordinates.
        """
        settings = self.augmentation
        steps = []
        if brightness:
            steps.append(layers.RandomBrightness(brightness, value_range=(0, 255), dtype="float32"))
        if contrast:
            steps.append(layers.RandomContrast(contrast, dtype="float32"))
        if any(settings.values()):
            steps.append(RandomAffine(**settings, fill_mode="nearest", dtype="float32"))
        return (
            keras.Sequential(steps, name="augmentation")
            if steps
            else layers.Identity(name="augmentation", dtype="float32")
        )


def _inside(kind: str, bounds: Any, value: Any) -> bool:
    """Whether `value` lies in a search_space entry of this kind: a min/max range (a number), else a list."""
    if kind in config.RANGE_KINDS:
        return (
            not isinstance(value, bool) and isinstance(value, int | float) and bounds["min"] <= value <= bounds["max"]
        )
    return value in bounds


def _declare(hp: kt.HyperParameters, kind: str, name: str, bounds: Any, default: Any) -> Any:
    """Keras Tuner's hyperparameter for one of `kind` (config.KINDS) over its search_space entry, declared on `hp`
    with the baseline's value as default (None past the baseline's layers); a stepped range of one point, or a
    boolean list of one value, is fixed."""
    if kind == "int":
        return hp.Int(name, bounds["min"], bounds["max"], default=default)
    if kind == "log":
        return hp.Float(name, bounds["min"], bounds["max"], sampling="log", default=default)
    if kind == "stepped" and bounds["min"] == bounds["max"]:
        return hp.Fixed(name, bounds["min"])
    if kind == "stepped":
        return hp.Float(name, bounds["min"], bounds["max"], step=bounds["step"], default=default)
    if kind == "boolean":
        return hp.Boolean(name, default=default) if len(bounds) == 2 else hp.Fixed(name, bounds[0])
    return hp.Choice(name, bounds, default=bounds[0] if default is None else default)  # past the baseline's: the first


def without_augmentation(model: keras.Model) -> keras.Model:
    """The trained model minus its training-only augmentation, sharing its weights: the model to save.

    Predictions are the same, since augmentation is off at inference, and the saved model reloads
    anywhere with plain Keras, without our RandomAffine layer.
    """
    inputs = keras.Input(model.input_shape[1:], name="pixels")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name != "augmentation":
            x = layer(x)
    return keras.Model(inputs, x, name=model.name)


def count_weighted_rows_only(model: keras.Model) -> keras.Model:
    """The compiled `model`, its loss, epoch loss and metrics counting only the rows of nonzero sample weight.

    data.to_dataset pads each split's last batch to full size with zero-weight rows, so that XLA compiles every
    step function for one batch shape. Keras divides a batch's weighted loss by all its rows and averages batch
    losses over an epoch by rows too: both would count the padding (and shrink the last batch's gradient).
    The metrics (compiled as weighted ones) see a weight of 1 per real row and 0 per padding row, so that they
    stay unweighted by class, as Keras' `metrics` are. So a padded batch trains and scores exactly as its real
    rows alone would. The methods are replaced on the instance, not in a subclass, so that the saved model
    stays a plain keras.Model that loads anywhere.
    """
    keras_loss, keras_metrics = model.compute_loss, model.compute_metrics
    ops = keras.ops

    def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if sample_weight is not None:
            rows = ops.cast(ops.shape(sample_weight)[0], sample_weight.dtype)
            real = ops.cast(ops.count_nonzero(sample_weight), sample_weight.dtype)
            sample_weight = sample_weight * (rows / ops.maximum(real, 1))
        return keras_loss(x, y, y_pred, sample_weight, training=training)

    def compute_metrics(x, y, y_pred, sample_weight=None):
        if sample_weight is None:
            return keras_metrics(x, y, y_pred, None)
        padding = ops.shape(sample_weight)[0] - ops.count_nonzero(sample_weight)
        # Every trainer has just added this batch's loss to the epoch's mean with the batch's row count as its
        # weight; the padding rows' share comes back out (Keras offers no public hook for that weight).
        loss = compute_loss(x, y, y_pred, sample_weight, training=False)
        compat.loss_tracker(model).update_state(loss, sample_weight=-ops.cast(padding, loss.dtype))
        return keras_metrics(x, y, y_pred, ops.cast(ops.not_equal(sample_weight, 0), "float32"))

    model.compute_loss = compute_loss
    model.compute_metrics = compute_metrics
    return model


def weighted_ensemble(models: list[keras.Model], weights: list[float], names: list[str]) -> keras.Model:
    """The chosen model as one Keras model: each member's probabilities times its weight, summed; members of
    weight 0 are left out, the heaviest comes first, and a single member is returned as it is. It saves and
    loads like any model here (`predict.py` serves it unchanged)."""
    kept = sorted((pair for pair in zip(weights, range(len(models))) if pair[0] > 0), key=lambda pair: -pair[0])
    if len(kept) == 1:
        return models[kept[0][1]]
    inputs = keras.Input(models[0].input_shape[1:], name="pixels")
    columns = []
    for _, index in kept:
        member = models[index]
        member.name = f"member_{names[index]}"  # the members share one name, and a model's layers need their own
        columns.append(layers.Reshape((2, 1), dtype="float32")(member(inputs)))
    mix = layers.Dense(1, use_bias=False, trainable=False, dtype="float32", name="weights")
    mixed = mix(layers.Concatenate(axis=-1, dtype="float32")(columns))
    mix.set_weights([np.asarray([weight for weight, _ in kept], dtype="float32").reshape(-1, 1)])
    outputs = layers.Reshape((2,), name="probabilities", dtype="float32")(mixed)
    return keras.Model(inputs, outputs, name="chest_xray_ensemble")
