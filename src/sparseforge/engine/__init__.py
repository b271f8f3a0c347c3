"""Training engine: :func:`fit`, callbacks, run directories, checkpoints, DDP helpers."""

from .checkpoint import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from .data import make_loader
from .fit import (
    Callback,
    CheckpointCallback,
    EvalCallback,
    FitState,
    LambdaCallback,
    evaluate_accuracy,
    fit,
    seed_everything,
)
from .progress import progress
from .run import Run

__all__ = [
    "Callback",
    "CheckpointCallback",
    "EvalCallback",
    "FitState",
    "LambdaCallback",
    "Run",
    "atomic_write_json",
    "atomic_write_text",
    "evaluate_accuracy",
    "fit",
    "load_checkpoint",
    "make_loader",
    "progress",
    "save_checkpoint",
    "seed_everything",
]
