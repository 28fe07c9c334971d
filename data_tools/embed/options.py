"""How to read one copy of EMBED: `EmbedOptions` (where the images lie, the frame and
orientation of the ROIs, the follow-up label window) and the choices each option allows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROI_FRAMES = ("chest-wall-left", "stored")
ORIENTATION_SOURCES = ("embed", "laterality", "pixels")
DEFAULT_LABEL_WINDOW = (180, 365)


@dataclass
class EmbedOptions:
    """How to read one copy of EMBED.

    ``images_root``: where ``anon_dicom_path`` values resolve once a start is removed: one of
    ``strip_prefixes`` (tried first) or of `KNOWN_PATH_PREFIXES`. ``roi_frame`` and
    ``orientation_from`` say how PNG-frame ROIs (``PNG_ROI_coords``, ``ROI_coords``) reach the
    stored pixels; ``DCM_ROI_coords`` are always stored pixels. ``label_window``: days after a
    screening BI-RADS 0 and after a 1/2 within which a follow-up's pathology is carried back
    (one number for both; 0 switches the rule off). ``relative_paths``: write image paths
    relative to the output folder instead of absolute.
    """

    images_root: Path
    strip_prefixes: tuple[str, ...] = ()
    roi_frame: str = "chest-wall-left"
    orientation_from: str = "embed"
    label_window: tuple[int, int] | int = DEFAULT_LABEL_WINDOW
    check_files: bool = True
    relative_paths: bool = False

    def __post_init__(self) -> None:
        if self.roi_frame not in ROI_FRAMES:
            raise ValueError(f"roi_frame must be one of {ROI_FRAMES}, got {self.roi_frame!r}")
        if self.orientation_from not in ORIENTATION_SOURCES:
            raise ValueError(
                f"orientation_from must be one of {ORIENTATION_SOURCES}, "
                f"got {self.orientation_from!r}"
            )
        window = self.label_window
        window = (window, window) if isinstance(window, (int, np.integer)) else tuple(window)
        if len(window) == 1:
            window = (window[0], window[0])
        if len(window) != 2 or any(int(days) != days or days < 0 for days in window):
            raise ValueError(
                "label_window must be one or two whole numbers of days >= 0, "
                f"got {self.label_window!r}"
            )
        self.label_window = (int(window[0]), int(window[1]))
        self.images_root = Path(self.images_root)
        self.strip_prefixes = tuple(self.strip_prefixes)

    @property
    def follow_up(self) -> bool:
        """Whether the follow-up label rule is on (a window above 0 days)."""
        return max(self.label_window) > 0
