"""The Kaggle chest X-ray folder layout turned into decoded in-memory images and Keras batches.

Layout: ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg, NORMAL = 0 and PNEUMONIA = 1.
Validation comes from train, grouped by patient; the 16 Kaggle val images join that pool.

One concern: images on disk and in memory. It knows nothing of models and imports neither Keras nor
TensorFlow at start (the PyDataset loads Keras when batches are asked for).
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from errors import DataError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")  # TensorFlow's decode_image's: a Keras user's folder reads
WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I")  # Pillow's modes for 16-bit (and 32-bit) grey
GREY_MODES = ("1", "L", "LA", *WIDE_GREY_MODES)
SHRINK_RATIOS = (8, 4)  # libjpeg's DCT-domain shrink, used when the short side is at least ratio x image_size
KAGGLE_HANDLE = "paultimothymooney/chest-xray-pneumonia"
DEFAULT_DATA_DIR = Path("data/chest_xray")
PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),  # PNEUMONIA: person12_bacteria_45.jpeg
    re.compile(r"^((?:NORMAL2-)?IM-\d+)-", re.IGNORECASE),  # NORMAL: IM-0115-0001.jpeg
)
PNEUMONIA_TYPE = re.compile(r"^person\d+_(bacteria|virus)_", re.IGNORECASE)


@dataclass
class Split:
    """One split's files, labels (0/1) and, once decoded, uint8 images (N, H, W, C)."""

    name: str
    files: list[Path]
    labels: np.ndarray
    images: np.ndarray | None = field(default=None, repr=False)
    skipped: list[Path] = field(default_factory=list)  # files left out because they did not decode

    def __len__(self) -> int:
        return len(self.files)

    @property
    def patients(self) -> set[str]:
        return {patient_id(path) for path in self.files}

    def subset(self, name: str, indices: np.ndarray) -> Split:
        return Split(name, [self.files[i] for i in indices], self.labels[indices])


@dataclass
class Splits:
    """The run's three splits: train and validation carved by patient from Kaggle's train, and Kaggle's test.
    Iterating gives them in that order; each knows its own name."""

    train: Split
    validation: Split
    test: Split

    def __iter__(self) -> Iterator[Split]:
        return iter((self.train, self.validation, self.test))

    def split(self, name: str) -> Split:
        """The split called `name` ("train", "validation" or "test")."""
        return {split.name: split for split in self}[name]


def patient_id(path: Path) -> str:
    """The patient a file belongs to, from its Kaggle name; an unknown name is its own patient."""
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(path.name)
        if match:
            return match.group(1).upper()
    return f"{path.parent.name}/{path.name}"


def pneumonia_type(path: Path) -> str | None:
    """The pneumonia type, "bacteria" or "virus", from a Kaggle file name (person12_virus_3.jpeg); else None."""
    match = PNEUMONIA_TYPE.match(path.name)
    return match.group(1).lower() if match else None


def find_dataset_root(path: Path) -> Path:
    """The folder holding train/ and test/ at or below `path` (the Kaggle zip nests a copy)."""
    if not path.exists():
        raise DataError(
            f"data directory {path} does not exist: pass --data-dir with the folder that holds train/ and test/"
        )
    if not path.is_dir():
        raise DataError(
            f"data directory {path} is a file, not a folder: pass --data-dir with the folder that holds train/ and test/"
        )
    queue = [path]
    while queue:
        folder = queue.pop(0)
        children = _subfolders(folder)
        names = {child.name for child in children}
        if names & {"train", "test"}:
            for split in ("train", "test"):
                if split not in names:
                    raise DataError(
                        f"{folder} has no {split}/ folder: the Kaggle layout needs train/ and test/ (val/ is optional)"
                    )
            return folder
        if len(folder.relative_to(path).parts) < 3:
            queue += [child for child in children if child.name != "__MACOSX"]
    raise DataError(f"no train/ and test/ folders found in {path}: pass --data-dir with the folder that holds them")


def _subfolders(folder: Path) -> list[Path]:
    try:
        return sorted(child for child in folder.iterdir() if child.is_dir() and not child.name.startswith("."))
    except PermissionError:
        raise DataError(
            f"cannot read folder {folder}: permission denied; make it readable or pass another --data-dir"
        ) from None


def download_dataset(target: Path = DEFAULT_DATA_DIR) -> Path:
    """Fetch the public Kaggle dataset with kagglehub (no account needed) into target's parent."""
    try:
        import kagglehub

        print(f"Downloading {KAGGLE_HANDLE} with kagglehub into {target.parent} (about 1.2 GB)...")
        downloaded = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(target.parent)))
    except Exception as error:  # kagglehub raises many kinds; every one means "no data"
        raise DataError(
            f"could not download {KAGGLE_HANDLE} ({type(error).__name__}; offline?): download it by hand "
            f"and put its chest_xray folder at {target}, or pass --data-dir PATH"
        ) from None
    return find_dataset_root(downloaded)


def resolve_data_dir(data_dir: str | None) -> Path:
    """A named folder must hold the data; with none named, use data/chest_xray or download it."""
    if data_dir is not None:
        return find_dataset_root(Path(data_dir).expanduser())
    if DEFAULT_DATA_DIR.exists():
        return find_dataset_root(DEFAULT_DATA_DIR)
    return download_dataset(DEFAULT_DATA_DIR)


def list_split(root: Path, split: str) -> Split:
    """Every image file of one split, skipping hidden files and files that are not images."""
    files, labels = [], []
    for label, class_name in enumerate(CLASS_NAMES):
        folder = root / split / class_name
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: each split needs a NORMAL/ and a PNEUMONIA/ folder")
        try:
            found = sorted(
                path
                for path in folder.iterdir()
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()
            )
        except PermissionError:
            raise DataError(f"cannot read folder {folder}: permission denied; make it readable") from None
        if not found:
            raise DataError(f"{folder} holds no images (.jpeg, .jpg or .png): add its images or fix the path")
        files += found
        labels += [label] * len(found)
    return Split(split, files, np.array(labels, dtype=np.int64))


def split_by_patient(pool: Split, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): about `fraction` of each class, whole patients only."""
    patients = [patient_id(path) for path in pool.files]
    members: dict[str, list[int]] = {}
    for index, patient in enumerate(patients):
        members.setdefault(patient, []).append(index)
    rng = np.random.default_rng(seed)
    validation: list[int] = []
    for label in range(len(CLASS_NAMES)):
        # A patient goes with the class most of their images carry.
        groups = sorted(
            patient
            for patient, indices in members.items()
            if Counter(pool.labels[indices].tolist()).most_common(1)[0][0] == label
        )
        target = fraction * sum(len(members[patient]) for patient in groups)
        taken = 0
        for count, position in enumerate(rng.permutation(len(groups))):
            if taken >= target or count == len(groups) - 1:  # the last patient of a class stays in train
                break
            validation += members[groups[position]]
            taken += len(members[groups[position]])
    validation_indices = np.array(sorted(validation), dtype=np.int64)
    train_indices = np.setdiff1d(np.arange(len(pool)), validation_indices)
    return train_indices, validation_indices


def load_splits(root: Path, validation_fraction: float, seed: int) -> Splits:
    """train / validation / test file lists; Kaggle's 16-image val joins the pool validation is drawn from."""
    train = list_split(root, "train")
    if (root / "val").is_dir():
        kaggle_val = list_split(root, "val")
        train = Split("train", train.files + kaggle_val.files, np.concatenate([train.labels, kaggle_val.labels]))
    for label, class_name in enumerate(CLASS_NAMES):
        if np.sum(train.labels == label) < 2:
            raise DataError(f"{root / 'train' / class_name} needs at least 2 images to carve a validation split from")
    train_indices, validation_indices = split_by_patient(train, validation_fraction, seed)
    training, validation = train.subset("train", train_indices), train.subset("validation", validation_indices)
    _check_patients_per_class(root, training, validation)
    return Splits(training, validation, list_split(root, "test"))


def _check_patients_per_class(root: Path, train: Split, validation: Split) -> None:
    """Train and validation each need a patient of each class, or nothing can be learned or chosen.

    split_by_patient keeps a class's last patient in train, so only a class of one patient fails here.
    """
    for label, class_name in enumerate(CLASS_NAMES):
        if np.any(validation.labels == label):
            continue
        patients = sorted({patient_id(path) for path, y in zip(train.files, train.labels) if y == label})
        images = int(np.sum(train.labels == label))
        where = f"{root / 'train' / class_name}" + (" and val/" if (root / "val").is_dir() else "")
        raise DataError(
            f"{where}: train and validation each need at least one {class_name} patient, but all {images} "
            f"{class_name} images belong to one patient ({', '.join(patients)}, read from the file names): add "
            f"{class_name} images of other patients (docs/protocol.md)"
        )


def channel_count(color_mode: str) -> int:
    """Image channels for a `color_mode` setting: rgb 3, grayscale 1."""
    return 3 if color_mode == "rgb" else 1


def decode_images(files: list[Path], image_size: int, channels: int) -> np.ndarray:
    """Decode and resize every file once into uint8 (N, size, size, channels); list every bad file."""
    images, decoded = _decode(files, image_size, channels)
    bad = [files[i] for i in np.flatnonzero(~decoded)]
    if bad:
        raise DataError(f"{len(bad)} file(s) could not be decoded as images: {_listing(bad)}; remove or replace them")
    return images


def _decode(files: list[Path], image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """The decoded images and a mask of the files that decoded; a bad file leaves zeros.

    Threads suffice: Pillow releases the GIL while it decodes and resizes.
    """
    images = np.zeros((len(files), image_size, image_size, channels), dtype=np.uint8)
    decoded = np.zeros(len(files), dtype=bool)

    def load(index: int) -> None:
        try:
            images[index] = _decode_and_resize(files[index], image_size, channels)
            decoded[index] = True
        except Exception:  # Pillow raises many kinds for a bad file (OSError, SyntaxError, EOFError, ...)
            pass  # left as zeros, and listed by the caller

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(load, range(len(files))))
    return images, decoded


def decode_file(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image file decoded exactly as training decodes it; DataError with the reason if it cannot be."""
    try:
        return _decode_and_resize(path, image_size, channels)
    except Exception as error:  # Pillow raises many kinds for a bad file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataError(f"{path}: {reason}") from None


def _decode_and_resize(path: Path, image_size: int, channels: int) -> np.ndarray:
    """A JPEG, PNG, GIF, BMP or WebP file, grayscale or colour, any size -> uint8 (size, size, channels).

    EXIF orientation is ignored, as TensorFlow's decode_image ignores it: an image looks as Keras' loaders show it.
    """
    mode = "RGB" if channels == 3 else "L"
    with Image.open(path, formats=DECODABLE_FORMATS) as image:
        if image.format == "JPEG":
            _draft(image, mode, image_size)
        image.load()  # raises here for a truncated or corrupt file
        # A grey image is resized before it is copied into RGB: a third of the work, the same pixels.
        image = as_mode(image, "L" if mode == "L" or image.mode in GREY_MODES else "RGB")
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)  # antialiased when shrinking
    pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    return pixels.reshape(image_size, image_size, channels)


def _draft(image: Image.Image, mode: str, image_size: int) -> None:
    """Let libjpeg shrink a JPEG at least 4 times larger than image_size by 4 or 8 while decoding.

    Full-size X-rays (up to 2,900 px) decode several times faster this way; the antialiased
    resize that follows does the rest. Smaller files (the 224 px copy at 80 px, say) decode in full.
    Asking for `mode` also lets libjpeg hand over a colour JPEG's luma directly when grey is wanted.
    """
    width, height = image.size
    ratio = next((ratio for ratio in SHRINK_RATIOS if min(width, height) >= ratio * image_size), 1)
    # draft picks the largest of 8, 4, 2, 1 that keeps the image at least this size.
    image.draft(mode, (width // ratio, height // ratio) if ratio > 1 else None)


def as_mode(image: Image.Image, mode: str) -> Image.Image:
    """8-bit grey ("L") or RGB; 16-bit grey is scaled to 8 bits, transparency dropped."""
    if image.mode in WIDE_GREY_MODES:
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(wide / 257), 0, 255).astype(np.uint8))
    return image if image.mode == mode else image.convert(mode)


def _listing(files: list[Path]) -> str:
    shown = ", ".join(map(str, files[:10]))
    return shown + (f" and {len(files) - 10} more" if len(files) > 10 else "")


def decode_splits(splits: Iterable[Split], image_size: int, color_mode: str, *, skip_bad: bool = False) -> None:
    """Fill each split's images in place, decoding all files in one pass so every bad file is listed.

    With `skip_bad`, files that do not decode are dropped from their split and kept in its `skipped`.
    """
    splits = list(splits)
    files = [path for split in splits for path in split.files]
    images, decoded = _decode(files, image_size, channel_count(color_mode))
    if not decoded.all() and not skip_bad:
        bad = [files[i] for i in np.flatnonzero(~decoded)]
        raise DataError(
            f"{len(bad)} file(s) could not be decoded as images: {_listing(bad)}; remove or replace them, "
            "or pass --skip-bad-images to run without them"
        )
    boundaries = np.cumsum([len(split) for split in splits])[:-1]
    for split, part, ok in zip(splits, np.split(images, boundaries), np.split(decoded, boundaries)):
        split.skipped = [path for path, good in zip(split.files, ok) if not good]
        split.files = [path for path, good in zip(split.files, ok) if good]
        split.labels, split.images = split.labels[ok], part[ok]
        for label, class_name in enumerate(CLASS_NAMES):
            if not np.any(split.labels == label):
                raise DataError(
                    f"without its {len(split.skipped)} undecodable file(s) ({_listing(split.skipped)}) the "
                    f"{split.name} split has no {class_name} image left: replace those files"
                )


def skipped_table(splits: Iterable[Split]) -> pd.DataFrame:
    """One row per image left out of a split because it could not be decoded."""
    rows = [
        {"split": split.name, "file": str(path), "class": path.parent.name}
        for split in splits
        for path in split.skipped
    ]
    return pd.DataFrame(rows, columns=["split", "file", "class"])


def to_dataset(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int | None = None,
    class_weights: dict[int, float] | None = None,
    pad: bool = True,
):
    """Batches of (uint8 images, one-hot float32 labels, float32 sample weights) that Keras' fit, evaluate and
    predict take on any backend. Each image's weight is its class weight (1 without class weights).

    Padded (the default), every batch has `batch_size` rows: the last one is filled up with repeats of its own
    images at weight 0, so that XLA compiles each step function for one shape only. Its zero-weight rows count in
    no loss or metric of a model built by hypermodel.py; predictions for them come after the split's own rows,
    so `predict(...)[:len(split)]` is the split's. Unshuffled, the batches follow the split's file order;
    shuffled, each epoch has a new order drawn from a generator seeded with `seed`, so a run repeats for a seed.
    """
    weights = np.ones(len(split), dtype=np.float32)
    if class_weights:
        weights = np.asarray([class_weights[label] for label in range(len(CLASS_NAMES))], np.float32)[split.labels]
    return _image_batches_class()(split.images, split.labels, weights, batch_size, shuffle=shuffle, seed=seed, pad=pad)


@functools.cache
def _image_batches_class() -> type:
    """The keras.utils.PyDataset subclass, defined on first use so that `import data` imports no Keras."""
    import keras

    class ImageBatches(keras.utils.PyDataset):
        """In-memory images, labels and weights in batches; slicing memory is cheap, so no workers."""

        def __init__(
            self,
            images: np.ndarray,
            labels: np.ndarray,
            weights: np.ndarray,
            batch_size: int,
            *,
            shuffle: bool,
            seed: int | None,
            pad: bool,
        ):
            super().__init__()
            self.images = images
            self.one_hot = np.eye(len(CLASS_NAMES), dtype=np.float32)[labels]
            self.weights = weights
            self.batch_size = batch_size
            self.shuffle = shuffle
            self.pad = pad
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(images)) if shuffle else None

        def __len__(self) -> int:
            return -(-len(self.images) // self.batch_size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            start = index * self.batch_size
            rows: slice | np.ndarray = slice(start, start + self.batch_size)
            if self.order is not None:
                rows = self.order[rows]
            real = min(self.batch_size, len(self.images) - start)
            if not self.pad or real == self.batch_size:
                return self.images[rows], self.one_hot[rows], self.weights[rows]
            rows = np.resize(np.arange(len(self.images))[rows], self.batch_size)  # this batch's images, repeated
            weights = self.weights[rows]
            weights[real:] = 0
            return self.images[rows], self.one_hot[rows], weights

        def on_epoch_end(self) -> None:
            if self.shuffle:
                self.order = self.rng.permutation(len(self.images))

    return ImageBatches


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency weights: n_images / (n_classes * n_class_images)."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    return {label: float(len(labels) / (len(CLASS_NAMES) * count)) for label, count in enumerate(counts)}


def summary_table(splits: Iterable[Split]) -> pd.DataFrame:
    """Images per split and class, and patients per split."""
    rows = {
        split.name: {
            **{class_name: int(np.sum(split.labels == label)) for label, class_name in enumerate(CLASS_NAMES)},
            "images": len(split),
            "patients": len(split.patients),
        }
        for split in splits
    }
    return pd.DataFrame.from_dict(rows, orient="index")


def image_counts(splits: Splits) -> dict[str, int]:
    """The images a run reads: the training pool (train and validation together, so that every seed's split counts
    alike) and test. Runs with the same counts on the same kind of data (real or generated) read the same dataset."""
    return {"pool": len(splits.train) + len(splits.validation), "test": len(splits.test)}


def make_synthetic_dataset(
    root: Path, *, train_patients: int = 24, test_patients: int = 8, size: int = 64, seed: int = 0
) -> Path:
    """Write a small learnable dataset in the Kaggle layout: PNEUMONIA lungs carry bright opacities.

    Each patient has two images; the files mix grayscale JPEG, RGB JPEG and PNG of varied sizes.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = {"train": train_patients, "val": 1, "test": test_patients}
    serial = 0
    for split, patients in counts.items():
        for label, class_name in enumerate(CLASS_NAMES):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(patients):
                number = serial = serial + 1
                for shot in range(2):
                    side = size + 8 * (serial % 3)
                    pixels = _synthetic_xray(rng, side, pneumonia=bool(label))
                    kind = "virus" if number % 3 == 0 else "bacteria"  # both types, as in Kaggle's names
                    stem = f"person{number}_{kind}_{shot}" if label else f"IM-{number:04d}-{shot + 1:04d}"
                    image = Image.fromarray(pixels)
                    if (number + shot) % 3 == 1:
                        image = image.convert("RGB")
                    suffix = ".png" if (number + shot) % 5 == 0 else ".jpeg"
                    image.save(folder / f"{stem}{suffix}")
    return root


def _synthetic_xray(rng: np.random.Generator, side: int, *, pneumonia: bool) -> np.ndarray:
    y, x = np.mgrid[0:side, 0:side] / side
    image = 150 + rng.normal(0, 12, (side, side))
    for centre in (0.3, 0.7):  # two dark lungs
        image -= 90 * (((x - centre) / 0.16) ** 2 + ((y - 0.5) / 0.3) ** 2 < 1)
    if pneumonia:
        for _ in range(3):
            cx, cy = rng.choice([0.3, 0.7]) + rng.uniform(-0.06, 0.06), rng.uniform(0.35, 0.65)
            image += 110 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * 0.06**2)))
    return np.clip(image, 0, 255).astype(np.uint8)
