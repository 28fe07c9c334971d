"""The built-in synthetic paired phantom: FFDM and SM images of the same breasts, with the
complementary information of the paper's Section 3 designed in.

One physical scene per pair (a compressed breast in millimetres) is rendered onto each
modality's own pixel grid, so lesions sit at corresponding places in both images:

* FFDM projects all tissue: overlapping glandular slabs make mass-sized clutter and dense
  tissue around a mass takes its contrast, so masses hide in dense breasts; calcifications
  are small, sharp and bright.
* SM (synthesised from tomosynthesis) keeps little of the overlap, so masses, spiculated ones
  most, stand out even in dense breasts; calcifications are blurred and faint
  (``sm_calc_visibility``); pseudo-calcifications and pseudo-distortions appear in it alone.

Read in this order: ``cohort`` (knobs, patients, lesions), ``anatomy`` (grids, breast,
parenchyma), ``lesions`` (shapes, artefacts), ``render`` (the design table ``LOOKS`` and the
renderer), ``output`` (DICOM, CNR, rows), ``report`` (card, contact sheet), ``generate``
(the command).
"""

from data_tools.phantom.anatomy import Grid
from data_tools.phantom.cohort import PairPlan, PhantomSettings, plan_pairs
from data_tools.phantom.generate import generate, main
from data_tools.phantom.lesions import Finding
from data_tools.phantom.output import contrast_to_noise, generate_pair
from data_tools.phantom.render import LOOKS, lesion_box, lesion_signal, render_pair
from data_tools.phantom.report import cnr_summary

__all__ = [
    "LOOKS",
    "Finding",
    "Grid",
    "PairPlan",
    "PhantomSettings",
    "cnr_summary",
    "contrast_to_noise",
    "generate",
    "generate_pair",
    "lesion_box",
    "lesion_signal",
    "main",
    "plan_pairs",
    "render_pair",
]
