import keras
import keras_tuner as kt
import numpy as np
import pytest

import config
from hypermodel import BASELINE, ChestXRayHyperModel, baseline_hyperparameters, max_conv_blocks

CONFIG = config.load()


def hypermodel(image_size: int = 80, channels: int = 3, **space) -> ChestXRayHyperModel:
    return ChestXRayHyperModel(
        image_size, channels, {**CONFIG.search_space.as_dict(), **space}, CONFIG.augmentation.as_dict()
    )


def random_point(model: ChestXRayHyperModel, seed: int) -> kt.HyperParameters:
    """A random point of the space, sampled the way Keras Tuner's oracles do."""
    space = kt.HyperParameters()
    model.build(space)
    point = kt.HyperParameters()
    for parameter in space.space:
        point.merge([parameter])
        if point.is_active(parameter):
            point.values[parameter.name] = parameter.random_sample(seed)
            seed += 1
    return point


def test_baseline_is_exactly_the_published_cnn():
    model = hypermodel().build(baseline_hyperparameters())
    layers = [(layer.__class__.__name__, layer.output.shape[1:]) for layer in model.layers[1:]]
    assert layers == [
        ("Sequential", (80, 80, 3)),
        ("Rescaling", (80, 80, 3)),
        ("Conv2D", (78, 78, 64)),
        ("MaxPooling2D", (39, 39, 64)),
        ("Conv2D", (37, 37, 32)),
        ("MaxPooling2D", (18, 18, 32)),
        ("Conv2D", (16, 16, 128)),
        ("MaxPooling2D", (8, 8, 128)),
        ("Conv2D", (6, 6, 128)),
        ("MaxPooling2D", (3, 3, 128)),
        ("Flatten", (1152,)),
        ("Dropout", (1152,)),
        ("Dense", (512,)),
        ("Dense", (264,)),
        ("Dense", (2,)),
    ]
    # Shift, shear and zoom in one layer (augmentation.py), as ImageDataGenerator applied them.
    assert [layer.__class__.__name__ for layer in model.get_layer("augmentation").layers] == ["RandomAffine"]
    assert model.count_params() == 931_130
    assert sum(np.prod(w.shape) for w in model.trainable_weights) == 931_130
    assert model.layers[-1].activation.__name__ == "softmax"
    assert model.layers[-4].rate == pytest.approx(0.2)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)
    assert model.loss == "categorical_crossentropy"


def test_defaults_of_the_space_are_the_baseline():
    space = kt.HyperParameters()
    hypermodel().build(space)
    assert space.values == BASELINE


@pytest.mark.e2e
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_points_build_and_train_a_step(seed):
    model_maker = hypermodel(image_size=48)
    point = random_point(model_maker, seed * 100)
    model = model_maker.build(point)
    x = np.random.default_rng(seed).integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    history = model.fit(x, y, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    conv_layers = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(conv_layers) == point.values["conv_blocks"]
    assert [layer.filters for layer in conv_layers] == [point.values[f"filters_{i}"] for i in range(len(conv_layers))]


def test_learning_rate_reaches_rmsprop():
    point = baseline_hyperparameters()
    point.values["learning_rate"] = 0.0037
    model = hypermodel().build(point)
    assert isinstance(model.optimizer, keras.optimizers.RMSprop)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0037)


def test_depth_is_clamped_to_what_the_image_size_allows():
    assert max_conv_blocks(80) == 4 and max_conv_blocks(48) == 4 and max_conv_blocks(224) == 6
    model_maker = hypermodel(image_size=80, conv_blocks={"min": 2, "max": 7})
    assert model_maker.max_blocks == 4
    space = kt.HyperParameters()
    model_maker.build(space)
    (depth,) = [parameter for parameter in space.space if parameter.name == "conv_blocks"]
    assert depth.max_value == 4


def test_image_too_small_for_the_baseline_is_rejected():
    with pytest.raises(ValueError, match=r"image_size 32 \(--image-size or the config's image_size\) is too small"):
        hypermodel(image_size=32)


def test_space_must_contain_the_baseline():
    with pytest.raises(ValueError, match=r"search_space.filters must include the baseline's \[32\]"):
        hypermodel(filters=[64, 128])
    with pytest.raises(ValueError, match="search_space.learning_rate must include"):
        hypermodel(learning_rate={"min": 0.01, "max": 0.1})


def test_a_candidate_is_the_baseline_with_its_changes_each_inside_the_space():
    model = hypermodel()
    assert model.point_from({"batch_norm": True}, "c") == {**BASELINE, "batch_norm": True}
    assert model.point_from({"conv_blocks": 2}, "c")["filters_1"] == BASELINE["filters_1"]
    with pytest.raises(ValueError, match=r"candidates\[1\]: dropout 0.9 lies outside search_space.dropout"):
        model.point_from({"dropout": 0.9}, "candidates[1]")
    with pytest.raises(ValueError, match="units_0 100 lies outside search_space.dense_units"):
        model.point_from({"units_0": 100}, "c")
    with pytest.raises(ValueError, match="lies outside search_space.batch_norm"):
        model.point_from({"batch_norm": "yes"}, "c")
    with pytest.raises(ValueError, match="dense_layers 3 needs units_2: add them"):
        model.point_from({"dense_layers": 3}, "c")
    with pytest.raises(ValueError, match="c changes none of the baseline's values"):
        model.point_from({"dropout": 0.2}, "c")


def test_augmentation_acts_only_in_training():
    model = hypermodel(image_size=48).build(baseline_hyperparameters())
    augmentation = model.get_layer("augmentation")
    x = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3)).astype("float32")
    assert np.array_equal(augmentation(x, training=False), x)
    assert not np.array_equal(augmentation(x, training=True), x)


def test_grayscale_input_builds():
    model = hypermodel(channels=1).build(baseline_hyperparameters())
    assert model.input_shape == (None, 80, 80, 1)


def with_options(**values) -> kt.HyperParameters:
    point = baseline_hyperparameters()
    point.values.update(values)
    return point


def test_batch_norm_follows_every_conv_and_replaces_its_bias():
    model = hypermodel(image_size=48).build(with_options(batch_norm=True))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(convs) == len(norms) == BASELINE["conv_blocks"]
    assert not any(conv.use_bias for conv in convs)


def test_average_pooling_replaces_flatten():
    flat = hypermodel().build(baseline_hyperparameters())
    pooled = hypermodel().build(with_options(pooling="average"))
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in pooled.layers)
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in pooled.layers)
    # Dense 512 now reads 128 pooled channels instead of 3 x 3 x 128 values.
    assert flat.count_params() - pooled.count_params() == (1152 - 128) * 512


def test_label_smoothing_reaches_the_loss():
    model = hypermodel().build(with_options(label_smoothing=0.1))
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.1)


@pytest.mark.e2e
def test_brightness_and_contrast_augment_in_training_and_are_not_saved(tmp_path):
    from hypermodel import without_augmentation

    model = hypermodel(image_size=48).build(
        with_options(brightness=0.3, contrast=0.3, batch_norm=True, pooling="average")
    )
    steps = [layer.__class__.__name__ for layer in model.get_layer("augmentation").layers]
    assert steps[:2] == ["RandomBrightness", "RandomContrast"]
    x = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 3)).astype("float32")
    model.fit(x, np.eye(2, dtype="float32")[[0, 1, 0, 1]], epochs=1, verbose=0)
    saved = without_augmentation(model)
    saved.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_single_point_ranges_are_fixed_and_must_hold_the_baseline():
    space = kt.HyperParameters()
    hypermodel(brightness={"min": 0.0, "max": 0.0, "step": 0.1}, batch_norm=[False]).build(space)
    fixed = {parameter.name for parameter in space.space if isinstance(parameter, kt.engine.hyperparameters.Fixed)}
    assert {"brightness", "batch_norm"} <= fixed
    with pytest.raises(ValueError, match="search_space.contrast must include the baseline's 0.0"):
        hypermodel(contrast={"min": 0.1, "max": 0.3, "step": 0.1})
    with pytest.raises(ValueError, match="search_space.pooling must include the baseline's flatten"):
        hypermodel(pooling=["average"])


@pytest.mark.e2e
def test_padded_batches_train_and_score_as_their_real_rows_alone(synthetic_root):
    """data.to_dataset pads last batches with zero-weight rows: one epoch on them gives the same logs and weights,
    to float noise, as on short last batches (dropout and augmentation off, so nothing is drawn at random)."""
    import data

    splits = data.load_splits(synthetic_root, 0.2, seed=3)
    data.decode_splits(splits, 48, "grayscale")
    space = config.load().search_space.as_dict()
    hypermodel = ChestXRayHyperModel(48, 1, space, {key: 0.0 for key in config.load().augmentation.as_dict()})
    hp = baseline_hyperparameters()
    hp.values.update(dropout=0.0, batch_norm=False)
    weights = {0: 1.5, 1: 0.75}
    results = []
    for pad in (False, True):
        keras.utils.set_random_seed(1)
        model = hypermodel.build(hp)
        train = data.to_dataset(splits.train, 12, shuffle=True, seed=5, class_weights=weights, pad=pad)
        validation = data.to_dataset(splits.validation, 12, pad=pad)
        assert len(train[len(train) - 1][0]) == (12 if pad else len(splits.train) % 12)
        history = model.fit(train, validation_data=validation, epochs=1, verbose=0, shuffle=False).history
        results.append((history, model.get_weights()))
    (short, short_weights), (padded, padded_weights) = results
    assert short.keys() == padded.keys() >= {"loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"}
    for key in short:
        assert padded[key] == pytest.approx(short[key], abs=1e-6), key
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(short_weights, padded_weights))


def test_the_saved_model_is_a_plain_keras_model(tmp_path):
    model = ChestXRayHyperModel(48, 1, config.load().search_space.as_dict(), {}).build(baseline_hyperparameters())
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded) is type(keras.Model(model.inputs, model.outputs))
    assert "compute_loss" not in vars(loaded)  # the padding-aware loss is the trained instance's alone


def test_keras_tuner_declares_the_space_in_the_order_it_has_always_drawn_it():
    # The order decides which points a seeded random search visits: a new hyperparameter goes last.
    space = kt.HyperParameters()
    hypermodel(image_size=48).declare(space)
    assert [parameter.name for parameter in space.space] == [
        "conv_blocks", "dense_layers", "dropout", "learning_rate", "batch_norm", "pooling", "brightness", "contrast",
        "label_smoothing", "filters_0", "filters_1", "filters_2", "filters_3", "units_0", "units_1", "units_2",
    ]  # fmt: skip
    declared = {parameter.name: parameter for parameter in space.space}
    assert declared["filters_3"].conditions[0].values == [4]  # active only in the deepest networks
    assert declared["units_2"].default == 64  # past the baseline's layers: the first choice
    # A point drawn by seed as Keras Tuner's oracles draw them, the same as before HYPERPARAMETERS declared the space.
    assert random_point(hypermodel(image_size=48), 7).values == {
        "conv_blocks": 2, "dense_layers": 1, "dropout": 0.2, "learning_rate": 0.0013893292827173778,
        "batch_norm": False, "pooling": "flatten", "brightness": 0.0, "contrast": 0.0, "label_smoothing": 0.1,
        "filters_0": 32, "filters_1": 64, "units_0": 64,
    }  # fmt: skip


def _counted_from_layers(model: keras.Model) -> tuple[float, float]:
    """Per image, the multiply-adds of a built model's convolutions and hidden dense layers (its 2-unit output
    left out) and the activations its convolutions write, read off the layers themselves."""
    multiply_adds = activations = 0.0
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, filters = layer.output.shape
            kernel_height, kernel_width, inputs, _ = layer.kernel.shape
            multiply_adds += height * width * kernel_height * kernel_width * inputs * filters
            activations += height * width * filters
        elif layer in dense[:-1]:
            multiply_adds += layer.kernel.shape[0] * layer.kernel.shape[1]
    return multiply_adds, activations


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_the_size_that_prices_a_point_is_the_size_of_the_model_it_builds(seed):
    # budget.point_work prices a trial from model_size; a change to the builder that model_size missed fails here.
    from hypermodel import model_size

    for channels, image_size in ((1, 80), (3, 64)):
        space = hypermodel(image_size=image_size, channels=channels)
        point = baseline_hyperparameters() if seed == 1 else random_point(space, seed * 11)
        model = space.build(point)
        assert model_size(point.values, image_size, channels) == _counted_from_layers(model), point.values
