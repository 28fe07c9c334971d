"""Training concerns that are not the model: prediction writing (stage hand-off follows)."""

from callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]
