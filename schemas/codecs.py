"""The project's two DataJoint codecs for numeric arrays, found by any DataJoint client once neural-reg is installed.

``<ndarray>``: a numpy array as numpy's own ``.npy`` bytes in a LONGBLOB column (small arrays: image ids, pixels,
    histograms, per-sample distances). ``<blob>`` always zlib-compresses, which costs about 6.5 s to pack (and
    1.5 s to unpack) a paper-size 6000 x 8000 float32 matrix for almost no saving on neural data; ``.npy`` bytes
    take 0.2 s each way.
``<npfile@bulk>``: a numpy array (``.npy``) or a dict of arrays such as a model's weights (``.npz``), as one
    object in the DataJoint store ``bulk`` (a local folder, a shared disk, or an S3 / MinIO bucket: see
    ``neural_reg.stores``); the row holds its path, shape, size and SHA-256. Responses, similarity matrices,
    targets and trained weights live there, so the database holds no large row. Objects are schema-addressed
    (DataJoint 2.3.5's ``_schema/<schema>/<table>/<key>/<field>_<token>.npy``, the token random per write), so a
    row written after an older row was deleted never finds the older object under its own path; fetching checks
    the SHA-256 and names the row when the object is missing or damaged. ``<npy@store>`` and ``<object@store>``
    work on MariaDB too (only ``<blob@store>`` fails there); ``<npfile>`` is a ``SchemaCodec`` like them, so
    DataJoint's garbage collector (``python -m neural_reg.stores gc``) sees its objects as referenced.

Discovery: pyproject.toml declares both classes in the ``datajoint.codecs`` entry-point group, which DataJoint
2.3.5 loads (``datajoint.codecs._load_entry_points``) the first time a table names a codec it does not know, so a
plain ``import datajoint`` client (``dj.VirtualModule``) decodes these columns with no import of this project.
This module imports only numpy and DataJoint, so loading it that way stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import datajoint as dj
import numpy as np
from datajoint.builtin_codecs.schema import SchemaCodec

STORE = "bulk"  # the DataJoint store of <npfile@bulk> columns; its location is per lab (neural_reg.stores)


class StoredObjectError(dj.errors.DataJointError):
    """A row's object in a store is missing, damaged or not what the row recorded; the message names the row."""


def _check_numeric(array: np.ndarray, codec: str, what: str = "") -> None:
    if array.dtype == object:
        raise dj.DataJointError(f"<{codec}> holds numeric arrays{what}; use <blob> for Python objects")


class NdarrayCodec(dj.Codec):
    """A numpy array as ``.npy`` bytes in a LONGBLOB column: ``responses : <ndarray>``."""

    name = "ndarray"

    def get_dtype(self, is_store: bool) -> str:
        if is_store:
            raise dj.DataJointError(f"<ndarray> is stored in the table only; use <npfile@{STORE}> for a store")
        return "bytes"

    def encode(self, value, *, key=None, store_name=None) -> bytes:
        array = np.asarray(value)
        _check_numeric(array, "ndarray")
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        return buffer.getvalue()

    def decode(self, stored: bytes, *, key=None) -> np.ndarray:
        return np.load(io.BytesIO(stored), allow_pickle=False)


def pack(value) -> tuple[bytes, str, dict]:
    """(bytes, format, metadata) of an array (``.npy``) or a dict of arrays (``.npz``, uncompressed)."""
    buffer = io.BytesIO()
    if isinstance(value, dict):
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, item in value.items():
                array = np.asanyarray(item)
                _check_numeric(array, "npfile", f" (entry {name!r})")
                with archive.open(f"{name}.npy", "w", force_zip64=True) as out:
                    np.lib.format.write_array(out, array, allow_pickle=False)
        return buffer.getvalue(), "npz", {"keys": [str(k) for k in value]}
    array = np.asarray(value)
    _check_numeric(array, "npfile")
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue(), "npy", {"dtype": str(array.dtype), "shape": list(array.shape)}


def unpack(data: bytes, fmt: str):
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if fmt == "npz":
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    return loaded


def describe_row(meta: dict) -> str:
    """``schema.table`` row {key} column 'field', as the object's metadata recorded it at insert."""
    row = meta.get("row") or {}
    key = ", ".join(f"{k}={v}" for k, v in (row.get("key") or {}).items())
    return f"{row.get('schema', '?')}.{row.get('table', '?')} row ({key}) column '{row.get('field', '?')}'"


class NpfileCodec(SchemaCodec):
    """An array or a dict of arrays as one checksummed object in a store: ``similarity : <npfile@bulk>``."""

    name = "npfile"

    def validate(self, value) -> None:
        if isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(k, str) or np.asanyarray(v).dtype == object]
            if bad:
                raise dj.DataJointError(f"<npfile> takes a dict of numeric arrays with string keys; {bad[:3]} are not")
        elif np.asanyarray(value).dtype == object:
            raise dj.DataJointError("<npfile> holds numeric arrays (or a dict of them); use <blob> for Python objects")

    def encode(self, value, *, key=None, context=None, store_name=None) -> dict:
        schema, table, field, primary_key = self._extract_context(key, context)
        config = self._codec_config(key, context)
        data, fmt, meta = pack(value)
        path, _ = self._build_path(schema, table, field, primary_key, ext=f".{fmt}", store_name=store_name,
                                   config=config)
        self._get_backend(store_name, config=config).put_buffer(data, path)
        return {"path": path, "store": store_name, "format": fmt, **meta, "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "row": {"schema": schema, "table": table, "field": field,
                        "key": {k: str(v) for k, v in primary_key.items()}}}

    def decode(self, stored: dict, *, key=None, context=None):
        config = self._codec_config(key, context)
        store = stored.get("store")
        backend = self._get_backend(store, config=config)
        where = f"{backend.get_url(stored['path'])} in store '{store}'"
        try:
            data = backend.get_buffer(stored["path"])
        except (dj.errors.MissingExternalFile, FileNotFoundError):
            raise StoredObjectError(
                f"{describe_row(stored)}: its object {where} is missing. Fix: restore the object from a backup, "
                "or delete the row and compute it again (check that this machine's store setting points at the "
                "lab's store)") from None
        if len(data) != stored.get("size", len(data)) or hashlib.sha256(data).hexdigest() != stored["sha256"]:
            raise StoredObjectError(
                f"{describe_row(stored)}: its object {where} is damaged ({len(data)} bytes, SHA-256 does not match "
                f"the {stored.get('size')} bytes the row recorded). Fix: restore the object from a backup, or "
                "delete the row and compute it again")
        return unpack(data, stored.get("format", "npy"))
