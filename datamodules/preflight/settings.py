"""The data check's thresholds, the problem kinds it reports as warnings (the kinds themselves
are named in `common.problems`), its errors, what it checks (`CheckSettings`) and what it found
(`CheckReport`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from common.defaults import IMAGE_SIZE, MODALITIES, SPLIT_FRACTIONS
from common.problems import BOX_LOST, CROP_SMALL, Problem, ProblemsError
from datamodules.dicom import DEFAULT_MARGIN

EXPECTED_MODALITY = "MG"
# An image whose whole extent, or whose breast crop, must be enlarged more than this to fill
# the model's input is "far smaller" than it (a 16x16 thumbnail, a wrong file, a breast not
# found: a near-black image with one bright pixel cropped to 5x5); the phantom's crops are
# enlarged at most 2.5x at 320x256.
MAX_UPSCALE = 4.0
# A breast crop keeping less than this share of the image's area is reported: the breast was
# probably not found (the phantom's keep 11% or more).
MIN_CROP_SHARE = 0.05
# A target box narrower or shorter than this many input pixels is too small to learn from.
MIN_TARGET_SIDE = 1.0
# Boxes may pass their image's edge by this many pixels (annotation tools round outward).
BOX_TOLERANCE = 1.0
# A cache entry and its DICOM read now may differ by the entry's uint16 rounding.
PIXEL_TOLERANCE = 2.0 / 65535

# Kinds reported without failing: the data still trains, but not quite as the table says.
WARNINGS = frozenset({CROP_SMALL, BOX_LOST})


class ImageProblem(Exception):
    """One image cannot be used: ``kind`` and ``reason`` (no path: the caller knows it)."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class DataCheckError(ProblemsError):
    """The data a run is about to train on or evaluate has problems (`setup_check`);
    ``problems`` lists every one."""

    subject = "the data"
    more = "all in DataCheckError.problems"


@dataclass
class CheckSettings:
    """What to check and how training reads it (a data config's ``init_args``)."""

    manifest: str
    lesions: str | None = None
    cache_dir: str | None = None
    image_size: tuple[int, int] = IMAGE_SIZE
    window: str = "dicom"
    margin: float = DEFAULT_MARGIN
    modalities: tuple[str, ...] = MODALITIES
    seed: int = 0
    split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS
    pathology_classes: dict[str, int] | None = None

    def __post_init__(self):
        from datamodules.values import RULES

        for name in (
            "image_size",
            "window",
            "margin",
            "modalities",
            "split_fractions",
            "pathology_classes",
        ):
            wrong = RULES[name](getattr(self, name))
            if wrong:
                raise ValueError(f"{name}: {wrong}")
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.modalities = tuple(self.modalities)
        self.split_fractions = tuple(float(v) for v in self.split_fractions)
        if self.pathology_classes is not None:
            self.pathology_classes = {
                str(key): int(value) for key, value in self.pathology_classes.items()
            }


@dataclass
class CheckReport:
    """What a check found: every problem (``problems``: training would fail or learn from
    other boxes than the tables say) and every warning (``warnings``: it trains, but not
    quite as the tables say), and how much it checked."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    pairs_checked: int = 0
    images_checked: int = 0
    seconds: float = 0.0

    def add(self, found: Iterable[Problem]) -> None:
        """Sort ``found`` into problems and warnings by kind (`WARNINGS`)."""
        for problem in found:
            (self.warnings if problem.kind in WARNINGS else self.problems).append(problem)

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for problem in self.problems + self.warnings:
            counts[problem.kind] = counts.get(problem.kind, 0) + 1
        return dict(sorted(counts.items()))

    def to_dict(self) -> dict:
        return {
            "pairs_checked": self.pairs_checked,
            "images_checked": self.images_checked,
            "seconds": round(self.seconds, 2),
            "problem_count": len(self.problems),
            "warning_count": len(self.warnings),
            "by_kind": self.by_kind(),
            "problems": [problem.to_dict() for problem in self.problems],
            "warnings": [problem.to_dict() for problem in self.warnings],
        }
