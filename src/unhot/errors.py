"""unhot's error family: every error a user can cause or fix is an :class:`UnhotError`.

The CLI prints an :class:`UnhotError` as one line, ``unhot: error: ...`` (exit status 2), or
``unhot: training stopped: ...`` for a :class:`TrainingError` (exit status 1). Each message
names the file, row, key or value at fault. This module imports nothing heavy, so the CLI can
catch these errors without loading torch.
"""

from __future__ import annotations


class UnhotError(Exception):
    """Base of every error unhot reports as one line."""


class ConfigError(UnhotError, ValueError):
    """A config that cannot be used: names the key (dotted path) and what is valid."""


class ModelConfigError(UnhotError, ValueError):
    """A model that cannot be built: names the argument, its value and what is valid."""


class LabelError(UnhotError, ValueError):
    """Label arrays with the wrong shape, dtype or values."""


class DataError(UnhotError, ValueError):
    """A dataset that cannot be read: names the file, row or key at fault."""


class MetricsInputError(UnhotError, ValueError):
    """Metric inputs with the wrong shape, dtype or values."""


class RunError(UnhotError, RuntimeError):
    """A run folder that cannot be used as asked (a different run's files, a bad checkpoint, a
    path that cannot be written)."""


class IntegrityError(RunError):
    """A file whose SHA-256 differs from the one recorded when unhot wrote it."""


class TrainingError(UnhotError, RuntimeError):
    """Training cannot go on (a non-finite or collapsed loss); the last good checkpoint is
    kept."""
