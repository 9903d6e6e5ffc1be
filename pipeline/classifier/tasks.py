"""Classification task data sets and their augmentation, as grayscale 32 x 32 images in [0, 1].

Tasks (the ``name`` given to :func:`load_task`); the named ones, with their number of classes, are ``TASKS``,
from which the schema's TaskDataset lookup is built:

- ``'cifar10-gray'`` / ``'cifar100-gray'``: the OFFICIAL python archives (``cifar-10-python.tar.gz`` /
  ``cifar-100-python.tar.gz``) read from ``root`` (default: env ``NEURALREG_DATA``, else ``./data``), their md5
  checked against the official checksums, converted to grayscale with the ITU-R 601 luma weights.
- ``'folder:<path>'``: one sub-folder of images per class; ``<path>/train`` and ``<path>/test`` if both exist,
  else a deterministic stratified split (20 % of each class, seeded) of ``<path>/<class>/*``.
- ``'digits'``: scikit-learn's embedded 8 x 8 digits, resized to 32 x 32 (bilinear), for the offline demo.

Augmentation (:func:`augment_batch`): reflect-pad 4, random crop back to the input size, random horizontal flip,
on a torch batch, seeded by a ``torch.Generator``. The paper augments in colour and then converts to grayscale;
the luma conversion is pixel-wise and linear, so padding, cropping and flipping commute with it and augmenting
the grayscale images is the same operation.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import NeuralRegError

IMAGE_SIZE = 32
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 (R, G, B), as PIL's convert('L')

# name -> (number of classes, description); 'folder:<path>' tasks are not listed (their classes are their folders).
TASKS: dict[str, tuple[int, str]] = {
    "digits": (10, "scikit-learn's 8x8 digits resized to 32x32: embedded, for the offline demo and tests"),
    "cifar10-gray": (10, "CIFAR-10 in grayscale (ITU-R 601 luma), from the official python archive"),
    "cifar100-gray": (100, "CIFAR-100 in grayscale (ITU-R 601 luma), from the official python archive"),
}


class TaskDataError(NeuralRegError):
    """Bad or missing task data: the message names the file, the field and the fix."""


@dataclass(frozen=True)
class CifarSpec:
    archive: str
    url: str
    md5: str
    folder: str
    train_members: tuple[str, ...]
    test_member: str
    meta_member: str
    label_key: bytes
    names_key: bytes


CIFAR_SPECS = {
    "cifar10-gray": CifarSpec(
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_members=tuple(f"data_batch_{k}" for k in range(1, 6)),
        test_member="test_batch",
        meta_member="batches.meta",
        label_key=b"labels",
        names_key=b"label_names",
    ),
    "cifar100-gray": CifarSpec(
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_members=("train",),
        test_member="test",
        meta_member="meta",
        label_key=b"fine_labels",
        names_key=b"fine_label_names",
    ),
}

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
FOLDER_TEST_FRACTION = 0.2
DIGITS_TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class TaskData:
    """A classification task in memory.

    train_x, test_x: (N, 1, 32, 32) float32 in [0, 1], grayscale.
    train_y, test_y: (N,) int64 in [0, n_classes).
    hflip: whether horizontal flips are a valid augmentation for this task (False for digits).
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    n_classes: int
    class_names: tuple[str, ...]
    hflip: bool = True

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if x.ndim != 4 or x.shape[1] != 1 or x.dtype != np.float32:
                raise TaskDataError(f"task {self.name!r}: {split}_x must be (N, 1, H, W) float32, "
                                    f"got {x.shape} {x.dtype}")
            if y.shape != (x.shape[0],) or y.dtype != np.int64:
                raise TaskDataError(f"task {self.name!r}: {split}_y must be ({x.shape[0]},) int64, "
                                    f"got {y.shape} {y.dtype}")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise TaskDataError(f"task {self.name!r}: {split}_y has labels outside [0, {self.n_classes})")
        if len(self.class_names) != self.n_classes:
            raise TaskDataError(f"task {self.name!r}: {len(self.class_names)} class_names for "
                                f"{self.n_classes} classes")


# ---------------------------------------------------------------------------------------------------------------
# entry point


def load_task(name: str, root: str | os.PathLike | None = None, download: bool = False,
              verify_checksum: bool = True) -> TaskData:
    """Load a task by name: 'cifar10-gray', 'cifar100-gray', 'folder:<path>' or 'digits'.

    root: folder holding the CIFAR archives (default env NEURALREG_DATA, else ./data).
    download: fetch a missing CIFAR archive from its official address (needs a network).
    verify_checksum: check the CIFAR archive's md5 (turn off only for small test archives).
    """
    if name in CIFAR_SPECS:
        return load_cifar(name, root=root, download=download, verify_checksum=verify_checksum)
    if name.startswith("folder:"):
        return load_folder(name[len("folder:"):])
    if name == "digits":
        return load_digits()
    raise TaskDataError(f"task name {name!r} is unknown: use one of {sorted(TASKS)} or 'folder:<path>'")


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The folder with the data archives: ``root``, else env NEURALREG_DATA, else ./data."""
    return Path(root if root is not None else os.environ.get("NEURALREG_DATA", "data"))


# ---------------------------------------------------------------------------------------------------------------
# CIFAR


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of uint8 RGB images: (N, 3, H, W) uint8 -> (N, 1, H, W) float32 in [0, 1]."""
    w = np.asarray(LUMA_WEIGHTS, dtype=np.float32)
    gray = np.tensordot(rgb.astype(np.float32), w, axes=([1], [0]))  # (N, H, W)
    return (gray / 255.0).astype(np.float32)[:, None]


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_cifar(name: str, root=None, download: bool = False, verify_checksum: bool = True) -> TaskData:
    """Read grayscale CIFAR-10 / CIFAR-100 from the official python archive under ``root``."""
    spec = CIFAR_SPECS[name]
    path = data_root(root) / spec.archive
    if not path.is_file():
        if download:
            fetch(spec.url, path)
        else:
            raise TaskDataError(
                f"task {name!r}: archive {path} is missing. Put the official {spec.archive} there "
                f"(download it from {spec.url}, md5 {spec.md5}), set NEURALREG_DATA to the folder holding it, "
                "or call load_task(..., download=True) on a machine with a network")
    if verify_checksum:
        md5 = file_md5(path)
        if md5 != spec.md5:
            raise TaskDataError(f"task {name!r}: archive {path} has md5 {md5}, the official one is {spec.md5}: "
                                f"the file is corrupt or not the official archive; download it again from {spec.url}")
    return read_cifar_archive(path, spec, name)


def fetch(url: str, path: Path) -> None:
    """Download ``url`` to ``path`` atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            while block := response.read(1 << 20):
                f.write(block)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TaskDataError(f"could not download {url} to {path} ({err}); put the file there by hand") from err
    os.replace(tmp, path)


def read_cifar_archive(path: Path, spec: CifarSpec, name: str) -> TaskData:
    """Parse an official-format CIFAR tar.gz (pickled batches with b'data' (N, 3072) uint8 and labels)."""
    n_classes = TASKS[name][0]
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}

            def unpickle(member: str) -> dict:
                key = f"{spec.folder}/{member}"
                if key not in members:
                    raise TaskDataError(f"task {name!r}: archive {path} has no member {key}: it is not the "
                                        f"official {spec.archive}; download it again from {spec.url}")
                try:
                    # The official format is pickle; only archives the caller provides are read.
                    return pickle.load(io.BytesIO(tar.extractfile(members[key]).read()), encoding="bytes")
                except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                        ImportError, IndexError) as err:
                    raise TaskDataError(f"task {name!r}: member {key} of {path} is not a readable pickle "
                                        f"({err!r}); download the archive again from {spec.url}") from err

            train = [batch_arrays(unpickle(m), spec, n_classes, f"{path}:{m}") for m in spec.train_members]
            test = batch_arrays(unpickle(spec.test_member), spec, n_classes, f"{path}:{spec.test_member}")
            meta = unpickle(spec.meta_member)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise TaskDataError(f"task {name!r}: {path} is not a readable tar.gz archive ({err}); "
                            f"download it again from {spec.url}") from err
    names = meta.get(spec.names_key) if isinstance(meta, dict) else None
    if names is None or len(names) != n_classes:
        raise TaskDataError(f"task {name!r}: {path}:{spec.meta_member} must hold {spec.names_key!r} with "
                            f"{n_classes} names; download the archive again from {spec.url}")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    train_rgb = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return TaskData(name=name, train_x=to_gray(train_rgb), train_y=train_y, test_x=to_gray(test[0]),
                    test_y=test[1], n_classes=n_classes, class_names=class_names, hflip=True)


def batch_arrays(batch: dict, spec: CifarSpec, n_classes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (N, 3, 32, 32) uint8 RGB and (N,) int64 labels, validated."""
    if not isinstance(batch, dict) or b"data" not in batch or spec.label_key not in batch:
        raise TaskDataError(f"{where}: a batch must be a dict with b'data' and {spec.label_key!r}; "
                            "the archive is not in the official format")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[spec.label_key])
    n_pixels = 3 * IMAGE_SIZE * IMAGE_SIZE
    if data.ndim != 2 or data.shape[1] != n_pixels or data.dtype != np.uint8:
        raise TaskDataError(f"{where}: b'data' must be (N, {n_pixels}) uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise TaskDataError(f"{where}: {spec.label_key!r} must hold {data.shape[0]} integer labels, "
                            f"got shape {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise TaskDataError(f"{where}: labels must lie in [0, {n_classes})")
    return data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE), labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------
# folder of images


def load_folder(path: str | os.PathLike) -> TaskData:
    """Images in ``path/<class>/`` (or ``path/train/<class>/`` and ``path/test/<class>/``), 32 x 32 grayscale."""
    root = Path(path)
    if not root.is_dir():
        raise TaskDataError(f"task 'folder:{path}': {root} is not a folder; give a folder with one "
                            "sub-folder of images per class")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files = class_files(root / "train")
        test_files = class_files(root / "test")
        if sorted(train_files) != sorted(test_files):
            raise TaskDataError(f"task 'folder:{path}': train/ and test/ must hold the same class folders, got "
                                f"{sorted(train_files)} and {sorted(test_files)}")
    else:
        train_files, test_files = split_files(class_files(root), FOLDER_TEST_FRACTION, SPLIT_SEED)
    class_names = tuple(sorted(train_files))
    train_x, train_y = read_images(train_files, class_names)
    test_x, test_y = read_images(test_files, class_names)
    return TaskData(name=f"folder:{path}", train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                    n_classes=len(class_names), class_names=class_names, hflip=True)


def class_files(folder: Path) -> dict[str, list[Path]]:
    """class name -> sorted image files of ``folder/<class>/``."""
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(f for f in sub.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
        if files:
            classes[sub.name] = files
    if len(classes) < 2:
        raise TaskDataError(f"{folder}: needs at least 2 class sub-folders holding images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}), found {len(classes)}")
    return classes


def split_files(classes: dict[str, list[Path]], test_fraction: float, seed: int):
    """Deterministic stratified split: a seeded permutation of each class's sorted files."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for name, files in classes.items():
        order = rng.permutation(len(files))
        n_test = int(round(test_fraction * len(files))) if len(files) > 1 else 0
        n_test = min(max(n_test, 1 if len(files) > 1 else 0), len(files) - 1)
        test[name] = [files[k] for k in sorted(order[:n_test])]
        train[name] = [files[k] for k in sorted(order[n_test:])]
    return train, test


def read_images(classes: dict[str, list[Path]], class_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Read, grayscale (ITU-R 601 luma, PIL's 'L') and resize to 32 x 32 -> (N, 1, 32, 32) float32, (N,) int64."""
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, name in enumerate(class_names):
        for file in classes.get(name, []):
            try:
                with Image.open(file) as im:
                    gray = im.convert("L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as err:
                raise TaskDataError(f"{file}: not a readable image ({err}); remove it or replace it") from err
            images.append(np.asarray(gray, dtype=np.float32) / 255.0)
            labels.append(label)
    x = np.stack(images)[:, None] if images else np.zeros((0, 1, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return x.astype(np.float32), np.asarray(labels, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# embedded digits


def load_digits() -> TaskData:
    """scikit-learn's 1797 digits: 8 x 8 (values 0..16) -> 32 x 32 bilinear, in [0, 1]; stratified 75/25 split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    digits = sk_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    x = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    x = x.clamp(0.0, 1.0).numpy().astype(np.float32)
    y = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_FRACTION, stratify=y,
                                           random_state=SPLIT_SEED)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return TaskData(name="digits", train_x=x[train_idx], train_y=y[train_idx], test_x=x[test_idx],
                    test_y=y[test_idx], n_classes=TASKS["digits"][0], class_names=tuple(str(k) for k in range(10)),
                    hflip=False)


# ---------------------------------------------------------------------------------------------------------------
# augmentation


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """Reflect-pad ``pad``, random crop back to (H, W), random horizontal flip (p = 0.5) of each image.

    x: (B, C, H, W) float on any device; generator: a CPU torch.Generator, so the draws (and the result) do
    not depend on the device. Returns a new (B, C, H, W) tensor.
    """
    b = x.shape[0]
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return crop_flip(x, offsets[0], offsets[1], flips, pad)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor, pad: int) -> torch.Tensor:
    """Reflect-pad by ``pad``, crop (H, W) at per-image offsets (dy, dx) in [0, 2 pad], flip where ``flips``.

    Vectorised with one gather (torch has no per-sample crop); x (B, C, H, W), dy, dx, flips (B,).
    """
    b, _, h, w = x.shape
    if pad == 0:
        out = x.clone()
    else:
        if pad >= min(h, w):
            raise ValueError(f"augmentation pad={pad} must be smaller than the image size {h} x {w}")
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        dev = x.device
        rows = dy.to(dev)[:, None] + torch.arange(h, device=dev)  # (B, H)
        cols = dx.to(dev)[:, None] + torch.arange(w, device=dev)  # (B, W)
        batch = torch.arange(b, device=dev)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        out = out.permute(0, 3, 1, 2).contiguous()
    flips = flips.to(x.device)
    return torch.where(flips[:, None, None, None], out.flip(-1), out)
