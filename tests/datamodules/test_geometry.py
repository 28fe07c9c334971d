"""Geometry: boxes map to the model's input and back exactly; images follow the same map."""

from __future__ import annotations

import json
import pickle

import numpy as np
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from datamodules.dicom import Geometry, apply_geometry


@st.composite
def geometries(draw, max_side: int = 6000):
    height = draw(st.integers(8, max_side))
    width = draw(st.integers(8, max_side))
    x1 = draw(st.integers(0, width - 2))
    x2 = draw(st.integers(x1 + 1, width))
    y1 = draw(st.integers(0, height - 2))
    y2 = draw(st.integers(y1 + 1, height))
    input_size = (draw(st.integers(8, 2048)), draw(st.integers(8, 2048)))
    return Geometry.build((height, width), draw(st.booleans()), (x1, y1, x2, y2), input_size)


@st.composite
def geometry_and_boxes(draw):
    geometry = draw(geometries())
    height, width = geometry.original_size
    count = draw(st.integers(0, 5))
    boxes = []
    for _ in range(count):
        x1 = draw(st.floats(0, width - 1))
        y1 = draw(st.floats(0, height - 1))
        boxes.append(
            [
                x1,
                y1,
                draw(st.floats(x1 + 0.5, width + 0.0)),
                draw(st.floats(y1 + 0.5, height + 0.0)),
            ]
        )
    return geometry, np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


@settings(max_examples=300, deadline=None)
@given(geometry_and_boxes())
def test_to_original_of_to_input_returns_the_box_within_half_a_pixel(case):
    geometry, boxes = case
    for kind in ("float64", "float32", "torch"):
        if kind == "torch":
            source = torch.as_tensor(boxes, dtype=torch.float32)
            back = geometry.to_original(geometry.to_input(source)).numpy()
        else:
            back = geometry.to_original(geometry.to_input(boxes.astype(kind)))
        assert back.shape == boxes.shape
        assert np.abs(back - boxes).max(initial=0.0) <= 0.5


@settings(max_examples=300, deadline=None)
@given(geometries())
def test_build_keeps_the_aspect_ratio_and_pads_right_and_bottom(geometry):
    x1, y1, x2, y2 = geometry.crop_box
    content_height, content_width = geometry.content_size
    assert 1 <= content_height <= geometry.input_size[0]
    assert 1 <= content_width <= geometry.input_size[1]
    # one side fills the input; the other is the same scale up to rounding to whole pixels
    assert content_height == geometry.input_size[0] or content_width == geometry.input_size[1]
    assert abs(geometry.scale_x * (x2 - x1) - content_width) < 1e-6
    assert abs(geometry.scale_y * (y2 - y1) - content_height) < 1e-6
    scale = min(geometry.input_size[0] / (y2 - y1), geometry.input_size[1] / (x2 - x1))
    assert abs(content_width - scale * (x2 - x1)) <= 0.5 + 1e-9 or content_width == 1
    assert abs(content_height - scale * (y2 - y1)) <= 0.5 + 1e-9 or content_height == 1
    # the crop's corners land on the content's corners
    corners = geometry.to_input(np.array([[x1, y1, x2, y2]], dtype=np.float64))
    if geometry.flip:
        width = geometry.original_size[1]
        corners = geometry.to_input(np.array([[width - x2, y1, width - x1, y2]], dtype=np.float64))
    np.testing.assert_allclose(corners[0], [0, 0, content_width, content_height], atol=1e-6)


@settings(max_examples=80, deadline=None)
@given(geometries(max_side=400), st.data())
def test_a_bright_rectangle_lands_on_its_mapped_box(geometry, data):
    """The image path (flip, crop, cv2 resize, pad) and the box path agree within a pixel."""
    x1, y1, x2, y2 = geometry.crop_box
    if geometry.flip:  # the crop box is in flipped coordinates; draw in the original's
        width = geometry.original_size[1]
        x1, x2 = width - x2, width - x1
    scale = min(geometry.scale_x, geometry.scale_y)
    side = int(np.ceil(4 / scale))  # at least 4 input pixels wide
    assume(x2 - x1 >= side + 2 and y2 - y1 >= side + 2)
    left = data.draw(st.integers(x1, x2 - side))
    top = data.draw(st.integers(y1, y2 - side))
    image = np.zeros(geometry.original_size, dtype=np.float32)
    image[top : top + side, left : left + side] = 1.0
    out = apply_geometry(image, geometry)
    expected = geometry.to_input(np.array([[left, top, left + side, top + side]], dtype=float))[0]
    rows, columns = np.nonzero(out > 0.5)
    found = [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]
    np.testing.assert_allclose(found, expected, atol=1.0)
    assert out.shape == geometry.input_size
    content_height, content_width = geometry.content_size
    assert not out[content_height:, :].any() and not out[:, content_width:].any()


def test_geometry_survives_json_and_pickle():
    geometry = Geometry.build((4096, 3328), True, (10, 20, 2010, 4000), (1280, 1024))
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry
    assert pickle.loads(pickle.dumps(geometry)) == geometry
    assert len(pickle.dumps(geometry)) < 400


def test_box_mapping_examples():
    # 100x200 image, flipped, crop x 50..150 y 0..100, into 50x50: scale 0.5, no padding
    geometry = Geometry.build((100, 200), True, (50, 0, 150, 100), (50, 50))
    assert (geometry.scale_x, geometry.scale_y, geometry.padding) == (0.5, 0.5, (0, 0))
    # original x 120..140 -> flipped 60..80 -> cropped 10..30 -> scaled 5..15
    np.testing.assert_allclose(
        geometry.to_input(np.array([[120.0, 10.0, 140.0, 30.0]])), [[5, 5, 15, 15]]
    )
    tall = Geometry.build((400, 100), False, (0, 0, 100, 400), (100, 100))
    assert tall.padding == (75, 0) and tall.content_size == (100, 25)
    empty = tall.to_input(np.zeros((0, 4), dtype=np.float32))
    assert empty.shape == (0, 4) and empty.dtype == np.float32
    assert tall.to_input(torch.zeros((0, 4))).shape == (0, 4)
