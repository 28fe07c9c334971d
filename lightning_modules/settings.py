"""The settings every stage takes alike, each group one object validated where it is defined:
`OptimizerSettings` (AdamW and its schedule) and `EvaluationSettings` (FAUC-x and its CIs).

A stage takes them as ``optimizer`` and ``evaluation``; in a run config they are nested keys
(``model.init_args.optimizer.learning_rate``). Each class's ``problems`` says what is wrong
with a mapping of its values (every problem at once, by field): a stage raises it when it
takes the object (``of``), and ``config_checks.check_values`` reports it, by key, before any
class is built.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from common.defaults import HIT_MIN_DISTANCE
from datamodules.values import LR_SCHEDULES, RULES, Rule, number, one_of


@dataclass(frozen=True)
class Settings:
    """What both settings objects do: check their values by ``RULES`` (a rule per field) and
    ``_joint_problems`` (rules that join two fields), and turn into a plain dict. A dataclass
    itself: jsonargparse reads a class whose bases are all dataclasses as nested keys
    (``optimizer.learning_rate``), any other as a subclass to name (``class_path``)."""

    RULES: ClassVar[dict[str, Rule]] = {}

    @classmethod
    def problems(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(field, what is wrong) for every value in ``values`` that cannot work (fields left
        out take their defaults)."""
        problems = [
            (name, wrong)
            for name, rule in cls.RULES.items()
            if name in values and (wrong := rule(values[name]))
        ]
        if not problems:
            defaults = {item.name: item.default for item in fields(cls)}
            problems = cls._joint_problems({**defaults, **dict(values)})
        return problems

    @classmethod
    def _joint_problems(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        return []

    @classmethod
    def of(cls, value: Any):
        """``value`` as this class, checked (ValueError naming each field that cannot work):
        an instance, a mapping of fields (a checkpoint's hyperparameters hold plain dicts) or
        None (the defaults). The constructor itself does not check: jsonargparse builds these
        objects while it parses, before ``config_checks.check_values`` names the key."""
        if value is None:
            value = cls()
        elif not isinstance(value, cls):
            if not isinstance(value, Mapping):
                raise ValueError(f"{cls.__name__}: expected a mapping of settings, got {value!r}")
            unknown = sorted(set(value) - {item.name for item in fields(cls)})
            if unknown:
                raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)}")
            value = cls(**value)
        problems = cls.problems(asdict(value))
        if problems:
            raise ValueError("; ".join(f"{name}: {wrong}" for name, wrong in problems))
        return value

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OptimizerSettings(Settings):
    """AdamW and its learning-rate schedule, the same for every stage.

    The schedule does not depend on the GPU count: with ``global_batch_size`` set, gradients
    are accumulated over as many batches as make that many pairs per optimiser step on any
    number of devices and nodes.

    Args:
        learning_rate, weight_decay: AdamW's (the paper: learning rate 1.5e-4); with
            ``reference_batch_size``, the learning rate at a global batch of that many pairs.
        warmup_steps: linear warm-up steps (at ``reference_batch_size`` when it is set); then
            ``lr_schedule``: "cosine" (to zero at the last step) or "constant".
        global_batch_size: pairs per optimiser step, whatever the devices and nodes: the
            per-device ``batch_size`` of the data times devices times nodes times the gradient
            accumulation, which is set to make it. None: no accumulation (the global batch is
            then per-device batch x devices x nodes, and changes with them).
        reference_batch_size: the global batch ``learning_rate`` and ``warmup_steps`` are given
            for. At a global batch G the peak learning rate is ``learning_rate * G / reference``
            (linear scaling) and the warm-up ``ceil(warmup_steps * reference / G)`` steps (the
            same number of pairs). None: no scaling. Needs ``global_batch_size``.
    """

    learning_rate: float = 1.5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "cosine"
    global_batch_size: int | None = None
    reference_batch_size: int | None = None

    RULES = {
        "learning_rate": number(0, above=True),
        "weight_decay": number(0),
        "warmup_steps": number(0, integer=True),
        "lr_schedule": one_of(LR_SCHEDULES),
        "global_batch_size": number(1, integer=True, optional=True),
        "reference_batch_size": number(1, integer=True, optional=True),
    }

    @classmethod
    def _joint_problems(cls, values: dict[str, Any]) -> list[tuple[str, str]]:
        if values["reference_batch_size"] is not None and values["global_batch_size"] is None:
            return [
                (
                    "reference_batch_size",
                    "scales the learning rate to the global batch: set "
                    "optimizer.global_batch_size too",
                )
            ]
        return []

    def peak(self) -> tuple[float, int]:
        """The peak learning rate and the warm-up steps at ``global_batch_size``: scaled
        linearly from ``reference_batch_size`` when it is set (the same warm-up pairs)."""
        if self.reference_batch_size is None:
            return self.learning_rate, self.warmup_steps
        learning_rate = self.learning_rate * self.global_batch_size / self.reference_batch_size
        warmup = math.ceil(self.warmup_steps * self.reference_batch_size / self.global_batch_size)
        return learning_rate, warmup


@dataclass(frozen=True)
class EvaluationSettings(Settings):
    """How a detector's validation and test detections are scored (FAUC-x, Section 5).

    Args:
        fauc_max_fp: FAUC-x's cut-off, false positives per image (the paper's FAUC-1: 1).
        fauc_n_boot: the bootstrap replicates of its 95% CIs (on test and stand-alone
            validation; none inside ``fit``); 0: no CIs.
        hit_min_distance: the FROC hit rule's floor in original pixels (the paper's 100 px); it
            belongs to the data, whose pixel size it depends on: the CLI links it from the data
            config's ``hit_min_distance``.
    """

    fauc_max_fp: float = 1.0
    fauc_n_boot: int = 2000
    hit_min_distance: float = HIT_MIN_DISTANCE

    RULES = {
        "fauc_max_fp": number(0, above=True),
        "fauc_n_boot": number(0, integer=True),
        "hit_min_distance": RULES["hit_min_distance"],  # the data's rule: linked from it
    }


# The init argument each settings object comes in as, in every stage that takes it.
STAGE_SETTINGS: dict[str, type[Settings]] = {
    "optimizer": OptimizerSettings,
    "evaluation": EvaluationSettings,
}
