"""EMBED's ROI text read without eval: the boxes of ``ROI_coords``, ``DCM_ROI_coords`` and
``PNG_ROI_coords`` as (ymin, xmin, ymax, xmax), and the match level of each ROI."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_TOKENS = re.compile(
    r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<bracket>[()\[\],])|(?P<space>\s+)"
)
_CLOSING = {"(": ")", "[": "]"}
_EMPTY_ROI_TEXTS = {"", "()", "[]", "[[]]", "(())", "[[[]]]", "nan"}


def _tokenize(text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKENS.match(text, position)
        if match is None:
            raise ValueError(f"unexpected character {text[position]!r} at position {position}")
        if match.lastgroup != "space":
            tokens.append(match.group())
        position = match.end()
    return tokens


def _parse_value(tokens: list[str], index: int):
    """(value, next index): a float or a list of values."""
    if index >= len(tokens):
        raise ValueError("the text ends before its brackets close")
    token = tokens[index]
    if token not in "()[],":
        return float(token), index + 1
    if token not in _CLOSING:
        raise ValueError(f"unexpected {token!r}")
    closing, items, index = _CLOSING[token], [], index + 1
    while True:
        if index >= len(tokens):
            raise ValueError(f"a {token!r} is never closed")
        if tokens[index] == closing:
            return items, index + 1
        item, index = _parse_value(tokens, index)
        items.append(item)
        if index < len(tokens) and tokens[index] == ",":
            index += 1
        elif index < len(tokens) and tokens[index] != closing:
            raise ValueError(f"expected ',' or {closing!r}, got {tokens[index]!r}")


def _collect_boxes(node) -> list[tuple[float, float, float, float]]:
    if not isinstance(node, list):
        raise ValueError("a number outside any box")
    if not node:
        return []  # an empty tuple: no box
    numbers = [isinstance(item, float) for item in node]
    if all(numbers):
        if len(node) != 4:
            raise ValueError(f"a box needs 4 numbers (ymin, xmin, ymax, xmax), got {len(node)}")
        return [tuple(node)]
    if any(numbers):
        raise ValueError("a box mixes numbers and brackets")
    return [box for item in node for box in _collect_boxes(item)]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA


def parse_roi_coords(text) -> list[tuple[float, float, float, float]]:
    """The boxes of one EMBED ROI value as (ymin, xmin, ymax, xmax), without eval.

    Reads ``ROI_coords`` (tuples: ``'((1, 2, 3, 4),)'``, boxes as lists nested in tuples
    ``'(([1, 2, 3, 4],),)'``) and ``DCM_ROI_coords``/``PNG_ROI_coords`` (lists nested by source
    image, ``'[[[1, 2, 3, 4]], [[5, 6, 7, 8]]]'``: ROI reference v1.2); empty tuples and lists
    are skipped, ``'()'`` and missing values have no box. Raises ValueError otherwise.
    """
    if _missing(text):
        return []
    text = str(text).strip()
    if text in _EMPTY_ROI_TEXTS:
        return []
    tokens = _tokenize(text)
    node, index = _parse_value(tokens, 0)
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index]!r} after the closing bracket")
    return _collect_boxes(node)


def _flatten(node) -> list[float]:
    if isinstance(node, float):
        return [node]
    return [value for item in node for value in _flatten(item)]


def parse_match_levels(text) -> list[float]:
    """The match level of each ROI of one image, in order, without eval.

    Reads ``ROI_match_level`` as the ROI reference v1.2 writes it (nested like the coordinates,
    levels quoted: ``"[['1', '2'], ['2']]"``) and ``match_level`` as a list, a tuple or one
    number (``'[1, 2]'``, ``'2'``, ``'2.0'``). Missing and empty values have no level.
    """
    if _missing(text):
        return []
    # the reference's own parser drops the quotes ("][',") before reading the numbers
    text = str(text).replace("'", "").replace('"', "").strip()
    if text in _EMPTY_ROI_TEXTS:
        return []
    tokens = _tokenize(text)
    node, index = _parse_value(tokens, 0)
    if index != len(tokens):
        raise ValueError(f"unexpected {tokens[index]!r} after the closing bracket")
    return _flatten(node)
