"""Configuration tables keyed by the hash of their resolved parameters (the DataJoint Elements "paramset" pattern).

A configuration is resolved against its defaults and validated when it is inserted (a bad one fails there, not
in a worker hours later); the complete dict is what is stored and hashed, so a hash names exactly what runs,
whatever the presets in code say later. Two workers entering the same parameters get the same row; a
readable name is kept beside the hash.
"""

from __future__ import annotations

import hashlib
import json
import numbers

import numpy as np

from pipeline.errors import ConfigError


def plain(value):
    """Parameters as plain JSON values: numpy scalars and arrays (as a blob may return them) become Python ones."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()] if value.ndim else plain(value.item())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"parameter value {value!r} ({type(value).__name__}) is not a plain JSON value "
                      "(number, string, bool, None, list, dict)")


def params_hash(params: dict) -> str:
    """32 hex digits of the MD5 of the parameters' canonical JSON (sorted keys)."""
    return hashlib.md5(json.dumps(plain(params), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ParamSet:
    """Mixin for a paramset table with attributes ``<hash_attr>``, ``<name_attr>`` and ``params``.

    ``resolve(params) -> dict`` (a staticmethod of the table) completes and checks a configuration; it must be
    idempotent, so that resolving a stored configuration again changes nothing. The hash is over the resolved
    dict alone; a column beside it (a target's kind, a regulariser's target) is derived from that dict.
    """

    hash_attr: str
    name_attr: str

    @staticmethod
    def resolve(params: dict) -> dict:
        raise NotImplementedError

    @classmethod
    def insert_params(cls, name: str, params: dict, **extra) -> dict:
        """Resolve, check and insert a named configuration (idempotent); return its key.

        The same resolved parameters under another name return the existing row's key; a name already used for
        other parameters is an error, so a name always means one configuration.
        """
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ConfigError(f"{cls.__name__}: the name {name!r} must be a string of 1 to 64 characters. Fix: "
                              "choose a shorter name (an experiment spec's names are built from its 'name' and labels)")
        resolved = plain(cls.resolve(params))
        key = {cls.hash_attr: params_hash(resolved)}
        table = cls()
        if table & key:
            return key
        if table & {cls.name_attr: name}:
            raise ConfigError(f"{cls.__name__}: the name {name!r} is already used for other parameters. Fix: choose "
                              "a new name for this configuration (or delete the old one and what was computed "
                              "with it).")
        table.insert1({**key, cls.name_attr: name, "params": resolved, **extra})
        return key

    @classmethod
    def params_of(cls, key: dict) -> dict:
        """The stored, resolved parameters: exactly what the worker runs. Checked against the row's hash."""
        row = (cls() & key).fetch1()
        params = plain(row["params"])
        if params_hash(params) != row[cls.hash_attr]:
            raise ConfigError(f"{cls.__name__} {row[cls.name_attr]!r}: the stored parameters no longer hash to "
                              f"{row[cls.hash_attr]}; the row was edited by hand. Fix: delete it and enter the "
                              "configuration again.")
        return params

    @classmethod
    def key_of(cls, name: str) -> dict:
        return (cls() & {cls.name_attr: name}).fetch1("KEY")
