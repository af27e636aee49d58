import os
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DATA, make_layout, write_image

import data
from data import DataError


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person12_bacteria_45.jpeg", "PERSON12"),
        ("person12_virus_3.jpeg", "PERSON12"),
        ("IM-0115-0001.jpeg", "IM-0115"),
        ("NORMAL2-IM-0383-0001.jpeg", "NORMAL2-IM-0383"),
        ("scan.png", "NORMAL/scan.png"),
    ],
)
def test_patient_id_from_kaggle_names(name, patient):
    assert data.patient_id(Path("NORMAL") / name) == patient


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("person100_bacteria_475.jpeg", "bacteria"),
        ("person1_virus_6.jpeg", "virus"),
        ("PERSON7_VIRUS_2.JPEG", "virus"),
        ("IM-0115-0001.jpeg", None),
        ("NORMAL2-IM-0383-0001.jpeg", None),
        ("person3_fungus_1.jpeg", None),
        ("scan_virus_1.png", None),
    ],
)
def test_pneumonia_type_from_kaggle_names(name, kind):
    assert data.pneumonia_type(Path("PNEUMONIA") / name) == kind


def test_synthetic_pneumonia_images_name_both_types(synthetic_root):
    test = data.list_split(synthetic_root, "test")
    kinds = [data.pneumonia_type(path) for path, label in zip(test.files, test.labels) if label == 1]
    assert set(kinds) == {"bacteria", "virus"}
    assert all(data.pneumonia_type(path) is None for path, label in zip(test.files, test.labels) if label == 0)


@pytest.mark.skipif(not REAL_DATA.exists(), reason="needs ../shared/data/chest_xray")
def test_real_test_split_has_kaggles_patients_and_types():
    test = data.list_split(REAL_DATA, "test")
    kinds = [data.pneumonia_type(path) for path in test.files]
    assert (kinds.count("bacteria"), kinds.count("virus"), kinds.count(None)) == (
        242,
        148,
        int((test.labels == 0).sum()),
    )
    assert len(test.patients) == 427


def test_split_keeps_patients_whole_and_classes_balanced(synthetic_root):
    splits = data.load_splits(synthetic_root, 0.25, seed=1)
    train, validation = splits.train, splits.validation
    assert not train.patients & validation.patients
    for label in (0, 1):
        share = np.sum(validation.labels == label) / (
            np.sum(validation.labels == label) + np.sum(train.labels == label)
        )
        assert 0.15 <= share <= 0.35
    # Kaggle's val images join the pool validation is drawn from.
    val_files = {path.name for path in (synthetic_root / "val").rglob("*.*")}
    assert val_files <= {path.name for path in train.files + validation.files}


def test_split_is_deterministic_for_a_seed(synthetic_root):
    first = data.load_splits(synthetic_root, 0.2, seed=5).validation.files
    again = data.load_splits(synthetic_root, 0.2, seed=5).validation.files
    other = data.load_splits(synthetic_root, 0.2, seed=6).validation.files
    assert first == again
    assert first != other


def test_multi_image_patients_never_straddle_splits(tmp_path):
    root = make_layout(tmp_path / "ds", per_class=2)
    for shot in range(2, 6):  # one patient with five images
        write_image(root / "train" / "PNEUMONIA" / f"person1_virus_{shot}.jpeg")
    for seed in range(10):
        splits = data.load_splits(root, 0.3, seed)
        owners = [name for name in ("train", "validation") if "PERSON1" in splits.split(name).patients]
        assert len(owners) == 1


def test_finds_the_real_root_in_a_kaggle_download(tmp_path):
    download = tmp_path / "download"
    make_layout(download / "chest_xray" / "__MACOSX" / "junk")
    make_layout(download / "chest_xray" / "chest_xray")
    real = make_layout(download / "chest_xray")
    assert data.find_dataset_root(download) == real


def test_hidden_and_non_image_files_are_skipped(tmp_path):
    root = make_layout(tmp_path / "ds")
    (root / "train" / "NORMAL" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "train" / "NORMAL" / "notes.txt").write_text("not an image")
    split = data.list_split(root, "train")
    assert len(split) == 6
    assert all(not path.name.startswith(".") for path in split.files)


def test_decodes_grayscale_rgb_and_png_of_any_size(tmp_path):
    files = [
        write_image(tmp_path / "a.jpeg", 50, "L"),
        write_image(tmp_path / "b.jpeg", 70, "RGB"),
        write_image(tmp_path / "c.png", 33, "L"),
        write_image(tmp_path / "d.png", 90, "RGB"),
    ]
    rgb = data.decode_images(files, 24, channels=3)
    gray = data.decode_images(files, 24, channels=1)
    assert rgb.shape == (4, 24, 24, 3) and rgb.dtype == np.uint8
    assert gray.shape == (4, 24, 24, 1)
    assert np.all(rgb[0, ..., 0] == rgb[0, ..., 1])  # grey replicated into RGB
    assert abs(int(rgb[0].mean()) - 128) <= 1


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing root", "does not exist"),
        ("root is a file", "is a file, not a folder"),
        ("missing split", "has no test/ folder"),
        ("missing class folder", "PNEUMONIA is missing"),
        ("empty class folder", "holds no images"),
        ("train with one class only", "train/PNEUMONIA is missing"),
    ],
)
def test_layout_errors_name_the_path(tmp_path, breakage, message):
    root = make_layout(tmp_path / "ds")
    target = root
    if breakage == "missing root":
        target = tmp_path / "absent"
    elif breakage == "root is a file":
        target = tmp_path / "file.txt"
        target.write_text("x")
    elif breakage == "missing split":
        for path in (root / "test").rglob("*.jpeg"):
            path.unlink()
        for folder in sorted((root / "test").rglob("*"), reverse=True):
            folder.rmdir()
        (root / "test").rmdir()
    elif breakage == "missing class folder":
        for path in (root / "test" / "PNEUMONIA").iterdir():
            path.unlink()
        (root / "test" / "PNEUMONIA").rmdir()
    elif breakage == "empty class folder":
        for path in (root / "train" / "NORMAL").iterdir():
            path.unlink()
    elif breakage == "train with one class only":
        for path in (root / "train" / "PNEUMONIA").iterdir():
            path.unlink()
        (root / "train" / "PNEUMONIA").rmdir()
    with pytest.raises(DataError, match=message) as error:
        data.load_splits(data.find_dataset_root(target), 0.3, seed=0)
    assert str(target if breakage in ("missing root", "root is a file") else root) in str(error.value)


def broken_images(root: Path) -> list[Path]:
    """A text file named .jpeg, a zero-byte file and a JPEG cut in half, added to a layout."""
    text = root / "train" / "NORMAL" / "IM-0099-0001.jpeg"
    text.write_text("this is text, not a JPEG")
    empty = root / "train" / "PNEUMONIA" / "person9_virus_1.jpeg"
    empty.write_bytes(b"")
    whole = write_noise_jpeg(root / "test" / "NORMAL" / "IM-0098-0001.jpeg")
    whole.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return [text, empty, whole]


def write_noise_jpeg(path: Path, side: int = 64) -> Path:
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side), dtype=np.uint8)).save(path)
    return path


def test_undecodable_files_are_all_listed(tmp_path):
    root = make_layout(tmp_path / "ds")
    broken = broken_images(root)
    splits = data.load_splits(root, 0.3, seed=0)
    with pytest.raises(DataError, match="3 file") as error:
        data.decode_splits(splits, 16, "rgb")
    assert all(str(path) in str(error.value) for path in broken)
    assert "--skip-bad-images" in str(error.value)


def test_undecodable_files_can_be_left_out_and_are_kept_for_the_report(tmp_path):
    root = make_layout(tmp_path / "ds")
    broken = broken_images(root)
    splits = data.load_splits(root, 0.3, seed=0)
    total = sum(len(split) for split in splits)
    data.decode_splits(splits, 16, "rgb", skip_bad=True)
    assert sum(len(split) for split in splits) == total - 3
    for split in splits:
        assert len(split.images) == len(split.labels) == len(split.files)
        assert not set(split.files) & set(broken)
    skipped = data.skipped_table(splits)
    assert sorted(skipped["file"]) == sorted(map(str, broken))
    assert set(skipped["class"]) == {"NORMAL", "PNEUMONIA"}


def test_leaving_out_the_last_image_of_a_class_is_an_error(tmp_path):
    root = make_layout(tmp_path / "ds", per_class=1, splits=("test",))
    make_layout(root, per_class=3, splits=("train",))
    (root / "test" / "NORMAL" / "IM-0001-0001.jpeg").write_text("not a JPEG")
    splits = data.load_splits(root, 0.3, seed=0)
    with pytest.raises(DataError, match=r"the test split has no NORMAL image left: replace those files"):
        data.decode_splits(splits, 16, "rgb", skip_bad=True)


def test_odd_but_valid_images_decode_to_the_right_pixels(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")  # 16-bit grey
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpeg")  # pure red in CMYK
    Image.new("P", (30, 30), 0).save(tmp_path / "palette.png")
    images = data.decode_images([tmp_path / name for name in ("deep.png", "cmyk.jpeg", "palette.png")], 8, 3)
    assert np.all(images[0] == round(40000 / 65535 * 255))
    assert np.allclose(images[1].reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=3)
    assert images.shape == (3, 8, 8, 3)


def smooth_xray(side: int, mode: str = "L"):
    """A smooth image with edges, like an X-ray: a gradient, two dark ellipses and a bright spot."""
    from PIL import Image

    y, x = np.mgrid[0:side, 0:side] / side
    pixels = 60 + 120 * y
    for centre in (0.3, 0.7):
        pixels -= 50 * (((x - centre) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1)
    pixels += 80 * np.exp(-((x - 0.6) ** 2 + (y - 0.4) ** 2) / 0.005)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert(mode) if mode != "L" else image


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_large_jpegs_shrunk_while_decoding_match_a_full_decode(tmp_path, mode, monkeypatch):
    smooth_xray(1000, mode).save(tmp_path / "big.jpeg", quality=95)  # 1000 >= 8 x 100: libjpeg shrinks by 8
    shrunk = data.decode_file(tmp_path / "big.jpeg", 100, 3)
    monkeypatch.setattr(data, "SHRINK_RATIOS", ())
    full = data.decode_file(tmp_path / "big.jpeg", 100, 3)
    difference = np.abs(shrunk.astype(int) - full.astype(int))
    assert difference.mean() < 1.0 and difference.max() <= 16


def test_the_shrink_applies_only_to_jpegs_at_least_4_times_larger(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    decoded_sides = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def recorded(image, mode, size):
        result = draft(image, mode, size)
        decoded_sides.append(image.size[0])  # the size libjpeg will decode at
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recorded)
    for side in (319, 320, 639, 640):
        smooth_xray(side).save(tmp_path / f"{side}.jpeg")
        data.decode_file(tmp_path / f"{side}.jpeg", 80, 1)
    assert decoded_sides == [319, 80, 160, 80]  # shrunk by 1, 4, 4 and 8


def test_png_and_grey_pixels_survive_decoding(tmp_path):
    from PIL import Image

    pixels = np.asarray(smooth_xray(32))
    Image.fromarray(pixels).save(tmp_path / "grey.png")
    Image.fromarray(np.stack([pixels, pixels // 2, 255 - pixels], axis=-1)).save(tmp_path / "colour.png")
    assert np.array_equal(data.decode_file(tmp_path / "grey.png", 32, 1)[..., 0], pixels)  # same size: untouched
    assert np.array_equal(data.decode_file(tmp_path / "grey.png", 32, 3), np.repeat(pixels[..., None], 3, axis=-1))
    colour = data.decode_file(tmp_path / "colour.png", 32, 3)
    assert np.array_equal(colour[..., 1], pixels // 2)
    grey = data.decode_file(tmp_path / "colour.png", 32, 1)[..., 0].astype(int)
    luma = (0.299 * pixels + 0.587 * (pixels // 2) + 0.114 * (255 - pixels.astype(int))).round()
    assert np.abs(grey - luma).max() <= 1


def test_decode_file_names_the_reason(tmp_path):
    (tmp_path / "text.jpeg").write_text("not an image")
    with pytest.raises(DataError, match=r"text\.jpeg: cannot identify image file"):
        data.decode_file(tmp_path / "text.jpeg", 16, 1)
    cut = write_noise_jpeg(tmp_path / "cut.jpeg")
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.raises(DataError, match=r"(?i)cut\.jpeg: .*truncated"):
        data.decode_file(cut, 16, 1)


def test_importing_data_imports_neither_tensorflow_nor_keras():
    import subprocess
    import sys

    code = "import sys, data; print(sorted({'tensorflow', 'keras'} & set(sys.modules)))"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_10000_pixel_image_decodes(tmp_path):
    from PIL import Image

    huge = Image.new("L", (10_000, 10_000), 0)
    huge.paste(255, (5_000, 0, 10_000, 10_000))  # left half black, right half white
    huge.save(tmp_path / "huge.jpeg")
    del huge
    (image,) = data.decode_images([tmp_path / "huge.jpeg"], 16, 1)
    assert image.shape == (16, 16, 1)
    assert image[:, :7].max() <= 3 and image[:, 9:].min() >= 252


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a folder whatever its permissions")
def test_unreadable_folder_is_one_sentence(tmp_path):
    root = make_layout(tmp_path / "ds")
    folder = root / "train" / "NORMAL"
    folder.chmod(0)
    try:
        with pytest.raises(DataError, match=f"cannot read folder {folder}: permission denied"):
            data.load_splits(root, 0.3, seed=0)
    finally:
        folder.chmod(0o755)


def test_class_weights_balance_the_classes():
    weights = data.class_weights(np.array([0] * 25 + [1] * 75))
    assert weights[0] == pytest.approx(2.0) and weights[1] == pytest.approx(2 / 3)
    assert 25 * weights[0] == pytest.approx(75 * weights[1])


def test_summary_table_counts(synthetic_root):
    splits = data.load_splits(synthetic_root, 0.25, seed=0)
    table = data.summary_table(splits)
    assert list(table.index) == ["train", "validation", "test"]
    assert table.loc["test", "NORMAL"] == 16 and table.loc["test", "PNEUMONIA"] == 16
    assert table["images"].sum() == sum(len(split) for split in splits)
    assert table.loc["test", "patients"] == 16  # two images per synthetic patient


def test_dataset_yields_uint8_images_and_one_hot_labels(synthetic_root):
    splits = data.load_splits(synthetic_root, 0.25, seed=0)
    data.decode_splits(splits, 32, "grayscale")
    batches = data.to_dataset(splits.test, 8)
    images, labels, weights = batches[0]
    assert images.dtype == np.uint8 and images.shape == (8, 32, 32, 1)
    assert labels.dtype == np.float32 and np.all(labels.sum(axis=1) == 1)
    assert np.array_equal(labels.argmax(axis=1), splits.test.labels[:8])
    assert weights.dtype == np.float32 and np.all(weights == 1)


def in_memory_split(count: int) -> data.Split:
    """A split whose image i is filled with the value i, so a batch shows which images it holds."""
    files = [Path(f"IM-{i:04d}-0001.jpeg") for i in range(count)]
    images = np.arange(count, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 1), np.uint8)
    return data.Split("train", files, np.arange(count) % 2, images)


def epoch_order(batches) -> list[int]:
    """The images of an epoch in order, each weighted row once (a padded batch's zero-weight rows left out)."""
    order = []
    for index in range(len(batches)):
        images, _, weights = batches[index]
        order += [int(value) for value in images[weights > 0, 0, 0, 0]]
    return order


def test_unshuffled_batches_keep_the_file_order():
    batches = data.to_dataset(in_memory_split(10), 4)
    assert len(batches) == 3  # the last batch holds the 2 images left
    assert epoch_order(batches) == list(range(10))
    batches.on_epoch_end()
    assert epoch_order(batches) == list(range(10))


def test_the_last_batch_is_padded_with_its_own_images_at_weight_0():
    images, labels, weights = data.to_dataset(in_memory_split(10), 4)[2]
    assert images.shape == (4, 4, 4, 1)  # one shape for every batch: XLA compiles each step once
    assert list(images[:, 0, 0, 0]) == [8, 9, 8, 9] and list(weights) == [1, 1, 0, 0]
    assert list(labels.argmax(axis=1)) == [0, 1, 0, 1]
    shuffled = data.to_dataset(in_memory_split(10), 4, shuffle=True, seed=3)
    images, _, weights = shuffled[2]
    assert list(weights) == [1, 1, 0, 0] and list(images[2:, 0, 0, 0]) == list(images[:2, 0, 0, 0])
    short = data.to_dataset(in_memory_split(10), 4, pad=False)[2]
    assert [len(part) for part in short] == [2, 2, 2]


def test_class_weights_weigh_each_image_by_its_class():
    split = in_memory_split(10)  # labels alternate 0, 1
    _, labels, weights = data.to_dataset(split, 4, class_weights={0: 2.0, 1: 0.5})[2]
    assert list(weights) == [2.0, 0.5, 0, 0]
    _, labels, weights = data.to_dataset(split, 4, class_weights={0: 2.0, 1: 0.5})[0]
    assert list(weights) == [2.0 if label == 0 else 0.5 for label in labels.argmax(axis=1)]


def test_shuffled_batches_change_every_epoch_and_repeat_for_a_seed():
    def orders(seed: int) -> list[list[int]]:
        batches = data.to_dataset(in_memory_split(50), 8, shuffle=True, seed=seed)
        epochs = []
        for _ in range(3):
            epochs.append(epoch_order(batches))
            batches.on_epoch_end()
        return epochs

    first = orders(seed=1)
    assert all(sorted(order) == list(range(50)) for order in first)  # every image once an epoch
    assert first[0] != first[1] != first[2] and first[0] != list(range(50))
    assert orders(seed=1) == first
    assert orders(seed=2) != first


def test_shuffled_labels_follow_their_images():
    split = in_memory_split(20)
    batches = data.to_dataset(split, 6, shuffle=True, seed=0)
    for index in range(len(batches)):
        images, labels, _ = batches[index]
        assert np.array_equal(labels.argmax(axis=1), split.labels[images[:, 0, 0, 0]])


def test_keras_trains_and_predicts_in_file_order_with_class_weights():
    import keras

    split = in_memory_split(10)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    model.compile("sgd", "categorical_crossentropy")
    batches = data.to_dataset(split, 4, shuffle=True, seed=0, class_weights={0: 2.0, 1: 0.5})
    model.fit(batches, epochs=2, verbose=0)
    predicted = model.predict(data.to_dataset(split, 4), verbose=0)
    assert len(predicted) == 12  # the padding rows come last
    expected = keras.ops.convert_to_numpy(model(split.images.astype("float32")))
    assert np.allclose(predicted[:10], expected, atol=1e-6)  # row i is file i


def test_synthetic_classes_differ_in_a_learnable_way(synthetic_root):
    splits = data.load_splits(synthetic_root, 0.25, seed=0)
    data.decode_splits(splits, 32, "grayscale")
    train = splits.train
    brightness = train.images.reshape(len(train), -1).mean(axis=1)
    assert brightness[train.labels == 1].mean() > brightness[train.labels == 0].mean() + 5


def test_offline_download_fails_with_one_sentence(tmp_path, monkeypatch):
    import kagglehub

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DataError, match="could not download .*offline.*data-dir"):
        data.download_dataset(tmp_path / "data" / "chest_xray")


@pytest.mark.skipif(not REAL_DATA.exists(), reason="../shared/data/chest_xray is only beside the development checkout")
def test_real_dataset_counts_and_patient_split():
    splits = data.load_splits(data.find_dataset_root(REAL_DATA), 0.1, seed=42)
    table = data.summary_table(splits)
    assert table.loc["test", "NORMAL"] == 234 and table.loc["test", "PNEUMONIA"] == 390
    assert table.loc[["train", "validation"], "NORMAL"].sum() == 1341 + 8
    assert table.loc[["train", "validation"], "PNEUMONIA"].sum() == 3875 + 8
    assert not splits.train.patients & splits.validation.patients
    assert 0.09 <= len(splits.validation) / (len(splits.train) + len(splits.validation)) <= 0.11
