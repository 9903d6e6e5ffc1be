"""The one error family of neural-reg.

Every error that the project raises on purpose derives from :class:`NeuralRegError`; its message names what is
wrong (the file, the field) and the fix. The command line catches this one class and prints the message alone
(exit 2, no traceback; ``--debug`` shows it), so a good "Fix:" never reaches a user buried in a traceback.
"""

from __future__ import annotations


class NeuralRegError(ValueError):
    """Bad input, configuration or request; the message says what and how to fix it."""


class ConfigError(NeuralRegError):
    """A configuration (train, regulariser, predictor, target, noise, corruption, attack, experiment spec) that
    cannot run: raised when it is entered, never hours later in a worker."""
