"""Training concerns that are not the model: stage hand-off, prediction writing, the
validation history, resuming after a time limit or pre-emption."""

from callbacks.handoff import StageHandoff
from callbacks.history import MetricsHistory
from callbacks.prediction_writer import PredictionWriter
from callbacks.requeue import Requeue

__all__ = ["MetricsHistory", "PredictionWriter", "Requeue", "StageHandoff"]
