"""Training concerns that are not the model: stage hand-off and prediction writing."""

from callbacks.handoff import StageHandoff
from callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter", "StageHandoff"]
