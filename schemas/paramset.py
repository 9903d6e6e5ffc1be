"""Configuration tables keyed by the hash of their parameters (the DataJoint Elements "paramset" pattern).

A configuration is entered once and named by its hash, so two workers entering the same parameters get the same
row, and a result row's key says exactly which parameters made it.
"""

from __future__ import annotations

import hashlib
import json

import datajoint as dj


def params_hash(params: dict) -> str:
    """32 hex digits of the MD5 of the parameters' canonical JSON (sorted keys)."""
    try:
        text = json.dumps(params, sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise ValueError(f"parameters must be plain JSON values (numbers, strings, lists, dicts): {err}") from err
    return hashlib.md5(text.encode()).hexdigest()


class ParamSet:
    """Mixin for a paramset table with attributes ``<hash_attr>``, ``<name_attr>`` and ``params``."""

    hash_attr: str
    name_attr: str

    @classmethod
    def insert_params(cls, name: str, params: dict, **extra) -> dict:
        """Insert a named parameter set (idempotent) and return its key.

        The same parameters under another name return the existing row's key; a name already used for other
        parameters is an error, so a name always means one configuration.
        """
        digest = params_hash(params)
        key = {cls.hash_attr: digest}
        table = cls()
        if table & key:
            return key
        if table & {cls.name_attr: name}:
            raise dj.DataJointError(f"{cls.__name__}: the name {name!r} is already used for other parameters. "
                                    "Fix: choose a new name for this configuration.")
        table.insert1({**key, cls.name_attr: name, "params": params, **extra})
        return key

    @classmethod
    def params_of(cls, key: dict) -> dict:
        return (cls() & key).fetch1("params")

    @classmethod
    def key_of(cls, name: str) -> dict:
        return (cls() & {cls.name_attr: name}).fetch1("KEY")
