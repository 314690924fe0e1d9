"""tradeloop models: features, labels, networks, training, runtimes, registry, health, predictor.

Importing ``models`` (or ``tradeloop.models.features``, ``tradeloop.models.registry``, ``tradeloop.models.predictor``) never
imports torch: a backtest without a model does not pay torch's import. torch is imported
inside the functions that train or run a torch network; ONNX runtimes need no torch at all.
"""
from tradeloop.models.errors import (CompatibilityError, FeatureError, ModelError, RegistryError, RuntimeUnavailable,
                     TrainingError)

__all__ = ["CompatibilityError", "FeatureError", "ModelError", "RegistryError", "RuntimeUnavailable",
           "TrainingError"]
