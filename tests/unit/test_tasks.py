"""Task data: the CIFAR archive reader (official format, checksums, corrupt archives), folders, digits, augmentation."""

import io
import pickle
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.classifier.tasks import (CIFAR_SPECS, TASKS, TaskDataError, augment_batch, crop_flip, load_task,
                                       to_gray)

torch.set_num_threads(1)


def cifar_batches(rng, n_per_batch, n_classes, label_key):
    """Official-format batch dicts: b'data' (N, 3072) uint8 (R, G, B planes of 32 x 32), labels list."""
    data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
    labels = rng.integers(0, n_classes, n_per_batch).tolist()
    return {b"data": data, label_key: labels, b"batch_label": b"test"}


def write_archive(path, folder, members: dict):
    """A tar.gz with folder/<name> holding each pickled object (bytes are written as they are)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            raw = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def cifar10_members(rng, n=3):
    members = {f"data_batch_{k}": cifar_batches(rng, n, 10, b"labels") for k in range(1, 6)}
    members["test_batch"] = cifar_batches(rng, n, 10, b"labels")
    members["batches.meta"] = {b"label_names": [f"class{k}".encode() for k in range(10)]}
    return members


def test_cifar10_reads_official_format_and_converts_with_luma(tmp_path):
    members = cifar10_members(np.random.default_rng(0))
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    task = load_task("cifar10-gray", root=tmp_path, verify_checksum=False)
    assert task.train_x.shape == (15, 1, 32, 32) and task.train_x.dtype == np.float32
    assert task.test_x.shape == (3, 1, 32, 32) and task.train_y.dtype == np.int64
    assert task.n_classes == 10 and task.class_names[3] == "class3" and task.hflip
    # pixel (row 5, col 7) of the 2nd image of batch 2, by hand from the planes: 0.299 R + 0.587 G + 0.114 B
    raw = members["data_batch_2"][b"data"][1].astype(np.float64)
    r, g, b = raw[5 * 32 + 7], raw[1024 + 5 * 32 + 7], raw[2048 + 5 * 32 + 7]
    assert task.train_x[3 + 1, 0, 5, 7] == pytest.approx((0.299 * r + 0.587 * g + 0.114 * b) / 255, abs=1e-6)
    np.testing.assert_array_equal(task.train_y[:3], members["data_batch_1"][b"labels"])
    np.testing.assert_array_equal(task.test_y, members["test_batch"][b"labels"])
    assert 0.0 <= task.train_x.min() and task.train_x.max() <= 1.0


def test_luma_matches_pil_grayscale():
    rgb = np.random.default_rng(1).integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    ours = to_gray(rgb)[:, 0] * 255
    pil = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L"), np.float32) for im in rgb])
    assert np.abs(ours - pil).max() <= 1.0  # PIL rounds to integers


def test_cifar100_reads_fine_labels(tmp_path):
    rng = np.random.default_rng(2)
    members = {"train": cifar_batches(rng, 6, 100, b"fine_labels"), "test": cifar_batches(rng, 4, 100, b"fine_labels"),
               "meta": {b"fine_label_names": [f"c{k}".encode() for k in range(100)]}}
    write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    task = load_task("cifar100-gray", root=tmp_path, verify_checksum=False)
    assert task.train_x.shape == (6, 1, 32, 32) and task.n_classes == 100
    np.testing.assert_array_equal(task.train_y, members["train"][b"fine_labels"])


def test_checksum_is_verified_by_default(tmp_path):
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", cifar10_members(np.random.default_rng(0)))
    with pytest.raises(TaskDataError, match=CIFAR_SPECS["cifar10-gray"].md5):
        load_task("cifar10-gray", root=tmp_path)


def test_missing_archive_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NEURALREG_DATA", str(tmp_path))
    with pytest.raises(TaskDataError) as err:
        load_task("cifar10-gray")
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-python.tar.gz") in msg and "https://www.cs.toronto.edu" in msg


def test_not_a_tar_archive(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"this is not a gzip file" * 10)
    with pytest.raises(TaskDataError, match="not a readable tar.gz"):
        load_task("cifar10-gray", root=tmp_path, verify_checksum=False)


def test_bad_pickle_member(tmp_path):
    members = cifar10_members(np.random.default_rng(0))
    members["data_batch_3"] = b"\x80\x02garbage that is no pickle"
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(TaskDataError, match="data_batch_3.*not a readable pickle"):
        load_task("cifar10-gray", root=tmp_path, verify_checksum=False)


def test_wrong_shapes_and_missing_members(tmp_path):
    members = cifar10_members(np.random.default_rng(0))
    members["test_batch"][b"data"] = members["test_batch"][b"data"][:, :100]
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(TaskDataError, match=r"test_batch: b'data' must be \(N, 3072\)"):
        load_task("cifar10-gray", root=tmp_path, verify_checksum=False)
    members = cifar10_members(np.random.default_rng(0))
    del members["data_batch_5"]
    write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(TaskDataError, match="no member cifar-10-batches-py/data_batch_5"):
        load_task("cifar10-gray", root=tmp_path, verify_checksum=False)


def test_unknown_task_name():
    with pytest.raises(TaskDataError, match="unknown"):
        load_task("mnist")


def test_named_tasks_are_the_loaders_tasks_with_their_class_counts():
    assert set(TASKS) == set(CIFAR_SPECS) | {"digits"}
    assert {name: n for name, (n, _) in TASKS.items()} == {"digits": 10, "cifar10-gray": 10, "cifar100-gray": 100}
    assert load_task("digits").n_classes == TASKS["digits"][0]
    assert all(isinstance(description, str) and description for _, description in TASKS.values())


def test_digits_shapes_split_and_determinism():
    task = load_task("digits")
    assert task.train_x.shape == (1347, 1, 32, 32) and task.test_x.shape == (450, 1, 32, 32)
    assert task.train_x.dtype == np.float32 and task.train_y.dtype == np.int64
    assert task.train_x.min() >= 0.0 and task.train_x.max() == pytest.approx(1.0, abs=0.05)
    assert not task.hflip
    # stratified: every class in both splits in the same proportion (within one image)
    train_counts, test_counts = np.bincount(task.train_y, minlength=10), np.bincount(task.test_y, minlength=10)
    np.testing.assert_allclose(test_counts / (train_counts + test_counts), 0.25, atol=0.02)
    again = load_task("digits")
    np.testing.assert_array_equal(task.train_x, again.train_x)
    np.testing.assert_array_equal(task.test_y, again.test_y)


def test_folder_task_split_and_grayscale(tmp_path):
    for cls, colour in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for k in range(5):
            Image.new("RGB", (40, 20), colour).save(tmp_path / cls / f"{k}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    task = load_task(f"folder:{tmp_path}")
    assert task.class_names == ("cats", "dogs") and task.n_classes == 2
    assert task.train_x.shape == (8, 1, 32, 32) and task.test_x.shape == (2, 1, 32, 32)
    np.testing.assert_array_equal(np.sort(task.test_y), [0, 1])
    red = task.train_x[task.train_y == 0]
    np.testing.assert_allclose(red, round(0.299 * 255) / 255, atol=1 / 255)


def test_folder_with_train_and_test_subfolders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, value in (("a", 10), ("b", 200)):
            (tmp_path / split / cls).mkdir(parents=True)
            for k in range(n):
                Image.new("L", (8, 8), value).save(tmp_path / split / cls / f"{k}.png")
    task = load_task(f"folder:{tmp_path}")
    np.testing.assert_array_equal(task.train_y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(task.test_y, [0, 0, 1, 1])
    np.testing.assert_allclose(task.test_x[2:], 200 / 255, atol=1e-6)


def test_folder_without_classes_is_an_error(tmp_path):
    with pytest.raises(TaskDataError, match="at least 2 class"):
        load_task(f"folder:{tmp_path}")


def reference_crop_flip(x, dy, dx, flips, pad):
    out = []
    for img, oy, ox, f in zip(x.numpy(), dy.tolist(), dx.tolist(), flips.tolist()):
        p = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        c = p[:, oy:oy + img.shape[1], ox:ox + img.shape[2]]
        out.append(c[:, :, ::-1] if f else c)
    return np.stack(out)


def test_crop_flip_matches_per_image_reference():
    x = torch.rand(6, 1, 8, 10)
    dy, dx = torch.tensor([0, 1, 8, 4, 2, 7]), torch.tensor([8, 0, 3, 4, 5, 1])
    flips = torch.tensor([True, False, True, False, False, True])
    np.testing.assert_array_equal(crop_flip(x, dy, dx, flips, 4).numpy(), reference_crop_flip(x, dy, dx, flips, 4))


def test_augment_is_seeded_and_flip_configurable():
    x = torch.rand(16, 1, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(5))
    b = augment_batch(x, torch.Generator().manual_seed(5))
    c = augment_batch(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape
    assert torch.equal(augment_batch(x, torch.Generator(), pad=0, flip=False), x)
    flipped = augment_batch(x, torch.Generator().manual_seed(0), pad=0, flip=True)
    is_flip = [torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x)]
    assert 0 < sum(is_flip) < 16 and all(is_flip[k] or torch.equal(flipped[k], x[k]) for k in range(16))
