"""Training concerns that are not the model: stage hand-off, prediction writing, the
validation history."""

from callbacks.handoff import StageHandoff
from callbacks.history import MetricsHistory
from callbacks.prediction_writer import PredictionWriter

__all__ = ["MetricsHistory", "PredictionWriter", "StageHandoff"]
