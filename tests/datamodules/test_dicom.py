"""DICOM reading: real files written by pydicom come back inverted, windowed, flipped, cropped
and resized as the Geometry says, whatever their photometric interpretation, bit depth,
compression, laterality and view."""

from __future__ import annotations

import logging
import math

import numpy as np
import pydicom
import pytest
from dicom_factory import BREAST_VALUE, breast_image, marker_box, write_mammogram

from datamodules.dicom import DEFAULT_MARGIN, DicomReadError, load_image

HEIGHT, WIDTH = 236, 176  # ellipse edges off whole pixels: no rounding ties
INPUT_SIZE = (128, 96)
MARKER_DEPTH, MARKER_ROW, MARKER_SIZE = 60, 100, 8  # from the chest wall, in original pixels


def _marker_x(laterality: str) -> float:
    """The marker's centre column in the file: the chest wall is on the left of an L image and
    on the right of an R image (DICOM mammography convention)."""
    return MARKER_DEPTH if laterality == "L" else WIDTH - MARKER_DEPTH


def _expected_crop() -> tuple[int, int, int, int]:
    """The breast's bounding box in canonical (chest wall left) pixels, plus the margin; the
    analytic extent of `breast_image`'s half ellipse."""
    reach, half_height = 0.7 * WIDTH, 0.45 * HEIGHT
    pad = math.ceil(DEFAULT_MARGIN * max(HEIGHT, WIDTH))
    top = math.ceil(HEIGHT / 2 - half_height)
    bottom = math.floor(HEIGHT / 2 + half_height) + 1
    return 0, max(0, top - pad), math.floor(reach) + 1 + pad, min(HEIGHT, bottom + pad)


def _bright_box(image: np.ndarray, level: float = 0.75) -> list[int]:
    rows, columns = np.nonzero(image > level)
    return [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


@pytest.mark.parametrize("laterality,view", [("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")])
@pytest.mark.parametrize("compression", [None, "jpeg2000", "rle", "jpeg-lossless"])
@pytest.mark.parametrize("bits_stored", [12, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_marker_lands_where_expected(
    tmp_path, photometric, bits_stored, compression, laterality, view
):
    x = _marker_x(laterality)
    image = breast_image(
        HEIGHT, WIDTH, laterality, markers=[(x, MARKER_ROW, MARKER_SIZE)], burned_in_label=True
    )
    path = write_mammogram(
        tmp_path / "image.dcm", image, laterality, view, photometric, bits_stored, compression
    )
    out, geometry = load_image(path, INPUT_SIZE, laterality=laterality)

    assert out.dtype == np.float32 and out.shape == INPUT_SIZE
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert geometry.flip == (laterality == "R")
    assert geometry.crop_box == _expected_crop()  # the burned-in label is not in the crop
    # the marker (dense: bright after any inversion) is where the geometry maps its box
    expected = geometry.to_input(np.array([marker_box(x, MARKER_ROW, MARKER_SIZE)]))[0]
    np.testing.assert_allclose(_bright_box(out), expected, atol=1.0)
    # ... which is MARKER_DEPTH from the left (chest wall) edge, whatever the laterality
    assert abs((expected[0] + expected[2]) / 2 - MARKER_DEPTH * geometry.scale_x) < 0.5
    marker_area = (MARKER_SIZE * geometry.scale_x) * (MARKER_SIZE * geometry.scale_y)
    assert (out > 0.75).sum() <= 1.5 * marker_area  # nothing else is bright: no label, no inversion
    # chest wall on the left: tissue at the left edge, background right of the breast
    content_height, content_width = geometry.content_size
    middle = slice(content_height // 3, 2 * content_height // 3)
    assert out[middle, :3].mean() == pytest.approx(BREAST_VALUE, abs=0.02)
    assert out[:, content_width:].max() == 0.0
    tissue = out[middle, 5 : int(expected[0]) - 2]
    assert tissue.mean() == pytest.approx(BREAST_VALUE, abs=0.01)


def _window_case(tmp_path, name, photometric="MONOCHROME2", **tags):
    image = breast_image(HEIGHT, WIDTH, "L", markers=[(MARKER_DEPTH, MARKER_ROW, MARKER_SIZE)])
    return write_mammogram(tmp_path / name, image, "L", "CC", photometric, 12, **tags)


def _tissue_mean(path, window):
    out, geometry = load_image(path, INPUT_SIZE, window=window)
    middle = slice(geometry.content_size[0] // 3, 2 * geometry.content_size[0] // 3)
    return float(out[middle, 5:20].mean()), out


def test_dicom_window_is_applied_and_minmax_ignores_it(tmp_path):
    # 12-bit tissue at 0.45 * 4095 = 1843; LINEAR window c=1200 w=1600 maps it to
    # ((1843 - 1199.5) / 1599 + 0.5) = 0.902; background (0) falls below the window.
    path = _window_case(tmp_path, "window.dcm", window=(1200, 1600))
    tissue, out = _tissue_mean(path, "dicom")
    assert tissue == pytest.approx(0.902, abs=0.02)
    assert out.min() == 0.0 and out.max() == 1.0
    assert _tissue_mean(path, "minmax")[0] == pytest.approx(BREAST_VALUE, abs=0.01)


def test_window_on_monochrome1_is_inverted_after_windowing(tmp_path):
    # stored tissue 4095 - 1843 = 2252; window c=2895 w=1600 -> 0.098, inverted -> 0.902
    path = _window_case(tmp_path, "m1.dcm", photometric="MONOCHROME1", window=(2895, 1600))
    assert _tissue_mean(path, "dicom")[0] == pytest.approx(0.902, abs=0.02)


def test_voi_lut_sequence_is_applied(tmp_path):
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    path = _window_case(tmp_path, "lut.dcm", voi_lut=lut)
    assert _tissue_mean(path, "dicom")[0] == pytest.approx(np.sqrt(BREAST_VALUE), abs=0.01)


def test_rescale_slope_and_intercept_come_before_the_window(tmp_path):
    # rescaled tissue 2 * 1843 - 100 = 3586; window c=2300 w=3200 -> 0.902
    path = _window_case(tmp_path, "rescale.dcm", rescale=(2.0, -100.0), window=(2300, 3200))
    assert _tissue_mean(path, "dicom")[0] == pytest.approx(0.902, abs=0.02)
    assert _tissue_mean(path, "minmax")[0] == pytest.approx(BREAST_VALUE, abs=0.01)


def test_presentation_lut_shape_inverse_inverts(tmp_path):
    path = _window_case(tmp_path, "inverse.dcm")
    dataset = pydicom.dcmread(path)
    dataset.PresentationLUTShape = "INVERSE"
    dataset.save_as(path)
    assert _tissue_mean(path, "minmax")[0] == pytest.approx(1 - BREAST_VALUE, abs=0.01)


def test_laterality_from_tags_when_the_manifest_has_none_and_manifest_wins(tmp_path):
    right = breast_image(HEIGHT, WIDTH, "R")
    tagged = write_mammogram(tmp_path / "r.dcm", right, "R")
    assert load_image(tagged, INPUT_SIZE)[1].flip is True
    assert load_image(tagged, INPUT_SIZE, laterality="L")[1].flip is False  # manifest wins
    wrong_tags = write_mammogram(tmp_path / "wrong.dcm", right, "L")
    assert load_image(wrong_tags, INPUT_SIZE, laterality="R")[1].flip is True


def test_laterality_guessed_from_pixels_without_tags(tmp_path, caplog):
    untagged = write_mammogram(tmp_path / "r.dcm", breast_image(HEIGHT, WIDTH, "R"), None)
    with caplog.at_level(logging.WARNING, logger="datamodules.dicom"):
        out, geometry = load_image(untagged, INPUT_SIZE)
    assert geometry.flip is True
    assert out[:, :3].mean() > 0.3  # chest wall on the left
    assert str(untagged) in caplog.text and "laterality unknown" in caplog.text


def test_errors_name_the_file_and_no_patient_data(tmp_path):
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"not a dicom file" * 10)
    with pytest.raises(DicomReadError, match="garbage.dcm"):
        load_image(garbage, INPUT_SIZE)
    with pytest.raises(DicomReadError, match="missing.dcm"):
        load_image(tmp_path / "missing.dcm", INPUT_SIZE)
    path = write_mammogram(tmp_path / "cut.dcm", breast_image(HEIGHT, WIDTH), "L")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # pixel data cut short
    with pytest.raises(DicomReadError) as error:
        load_image(path, INPUT_SIZE)
    message = str(error.value)
    assert "cut.dcm" in message
    assert "Test^Phantom" not in message and "TEST-0001" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"window": (2000.0, 3000.0), "bits_stored": 12},
        {"voi_lut": (np.sqrt(np.arange(4096)) * 60).astype(np.uint16), "bits_stored": 12},
    ],
    ids=["minmax", "monochrome1", "window", "voi_lut"],
)
def test_the_value_table_windows_exactly_as_pixel_by_pixel(tmp_path, kwargs):
    """Large integer images are windowed through a table of their values: bit-identical."""
    from datamodules.dicom import _unit_range, read_dicom, to_unit_range

    path = write_mammogram(tmp_path / "m.dcm", breast_image(400, 320), **kwargs)
    pixels, dataset = read_dicom(path)
    assert pixels.dtype.kind == "u" and pixels.size > (1 << 16)
    for window in ("dicom", "minmax"):
        assert np.array_equal(
            to_unit_range(pixels, dataset, window), _unit_range(pixels, dataset, window)
        )
    signed = (pixels.astype(np.int32) - 30000).astype(np.int16)
    assert np.array_equal(
        to_unit_range(signed, dataset, "minmax"), _unit_range(signed, dataset, "minmax")
    )


@pytest.mark.parametrize("laterality", ["L", "R", None])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"window": (2000.0, 3000.0), "bits_stored": 12},
        {"voi_lut": (np.sqrt(np.arange(4096)) * 60).astype(np.uint16), "bits_stored": 12},
        {
            "voi_lut": (np.abs(np.sin(np.arange(4096) / 300)) * 4000).astype(np.uint16),
            "bits_stored": 12,
        },
    ],
    ids=["minmax", "monochrome1", "window", "voi_lut", "voi_lut_not_monotone"],
)
def test_load_image_windows_only_the_crop_and_gives_the_whole_image_path_exactly(
    tmp_path, kwargs, laterality
):
    """load_image keeps an integer image in stored values, finds the breast by comparing them
    and windows only the crop: its output and geometry equal windowing the whole image first,
    then the mask, the box, the crop and the resize in float (the rule as written)."""
    from datamodules.dicom import (
        BACKGROUND_THRESHOLD,
        Geometry,
        _unit_range,
        apply_geometry,
        breast_box,
        chest_wall_on_right,
        read_dicom,
    )

    side = laterality or "R"
    image = breast_image(
        400, 320, side, markers=[(60 if side == "L" else 260, 100, 8)], burned_in_label=True
    )
    path = write_mammogram(tmp_path / "m.dcm", image, laterality, **kwargs)  # None: no tags
    out, geometry = load_image(path, INPUT_SIZE, laterality=laterality)

    pixels, dataset = read_dicom(path)
    assert pixels.dtype.kind == "u" and pixels.size > (1 << 16)
    windowed = _unit_range(pixels, dataset, "dicom")
    flip = side == "R" if laterality else chest_wall_on_right(windowed)
    assert geometry.flip == (side == "R") == flip
    canonical = windowed[:, ::-1] if flip else windowed
    box = breast_box(canonical, DEFAULT_MARGIN, BACKGROUND_THRESHOLD)
    assert 0 < box[2] - box[0] < 320 or 0 < box[3] - box[1] < 400  # a real crop, not the image
    expected = Geometry.build(windowed.shape, flip, box, INPUT_SIZE)
    assert geometry == expected
    assert np.array_equal(out, apply_geometry(windowed, expected))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"photometric": "MONOCHROME1"},
        {"window": (2000.0, 3000.0), "bits_stored": 12},
        {
            "voi_lut": (np.abs(np.sin(np.arange(4096) / 300)) * 4000).astype(np.uint16),
            "bits_stored": 12,
        },
    ],
    ids=["minmax", "monochrome1", "window", "voi_lut_not_monotone"],
)
def test_the_value_tables_mask_equals_thresholding_the_windowed_values(tmp_path, kwargs):
    """``ValueTable.above`` (a comparison of stored values when the window crosses the threshold
    once, a gather otherwise) marks exactly the values whose windowed value exceeds it, at
    thresholds equal to a windowed value too (the boundary of ``>``), signed pixels included."""
    from datamodules.dicom import ValueTable, read_dicom

    path = write_mammogram(tmp_path / "m.dcm", breast_image(400, 320), **kwargs)
    pixels, dataset = read_dicom(path)
    signed = (pixels.astype(np.int32) - 30000).astype(np.int16)
    for image, window in ((pixels, "dicom"), (pixels, "minmax"), (signed, "minmax")):
        table = ValueTable.of(image, dataset, window)
        every = np.arange(table.low, table.low + table.table.size).astype(image.dtype)
        windowed = table.apply(every)
        for threshold in (0.05, 0.3, float(windowed[windowed.size // 3]), -1.0, 2.0):
            assert np.array_equal(table.above(every, threshold), windowed > threshold), threshold
        assert windowed.min() < 0.05 < windowed.max()


def test_the_breast_box_is_the_largest_components_and_ties_go_to_the_topmost_then_leftmost():
    """mask_box: the largest 8-connected component's box plus the margin (a diagonal touch
    joins, a gap does not); of two equal largest components the topmost, then leftmost."""
    from datamodules.dicom import mask_box

    mask = np.zeros((100, 80), dtype=bool)
    mask[10:20, 10:20] = True  # 100 px
    mask[20, 20] = True  # touches the block diagonally: 101 px, one component
    mask[50:60, 40:51] = True  # 110 px: the largest
    mask[70:80, 5:16] = True  # 110 px too, further down: loses the tie
    assert mask_box(mask, margin=0.0) == (40, 50, 51, 60)
    pad = math.ceil(0.05 * 100)
    assert mask_box(mask, margin=0.05) == (40 - pad, 50 - pad, 51 + pad, 60 + pad)
    mask[50:60, 40:51] = False
    mask[70:80, 60:71] = True  # the same row as the 5..16 one, to its right: loses
    assert mask_box(mask, margin=0.0) == (5, 70, 16, 80)
    mask[:] = False
    mask[0:3, 0:3] = True  # 9 px, and 4 more joined only diagonally: 13
    for step in range(3, 7):
        mask[step, step] = True
    mask[30:33, 30:34] = True  # 12 px: larger than 9, smaller than 13
    assert mask_box(mask, margin=0.0) == (0, 0, 7, 7)
    assert mask_box(np.zeros((30, 20), dtype=bool)) == (0, 0, 20, 30)
