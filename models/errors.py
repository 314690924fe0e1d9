"""Errors a user of the models package can cause, each with a message saying what to do."""
from __future__ import annotations


class ModelError(Exception):
    """Base class of every error raised by the models package."""


class FeatureError(ModelError, ValueError):
    """Bars that features cannot be computed from (non-finite or non-positive values, bad spec)."""


class TrainingError(ModelError, ValueError):
    """A training configuration or data set that cannot train a model."""


class RegistryError(ModelError, LookupError):
    """A model reference that does not resolve, or a registry folder that is incomplete."""


class CompatibilityError(ModelError):
    """A stored model that does not fit what the caller expects (features, lookback, width, runtime)."""


class RuntimeUnavailable(ModelError, RuntimeError):
    """A runtime whose library or device is not present on this machine."""
