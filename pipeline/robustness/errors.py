"""The errors of the robustness evaluation: bad input arrays, and configurations that cannot run."""

from __future__ import annotations

from pipeline.errors import ConfigError, NeuralRegError


class RobustnessInputError(NeuralRegError):
    """Bad input to a robustness evaluation (wrong shape, range, dtype, or more samples than the test set)."""


class RobustnessConfigError(ConfigError, RobustnessInputError):
    """A noise, corruption or attack configuration that cannot run; raised when it is resolved (at insert)."""
