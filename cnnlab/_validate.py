"""Private argument checks shared by every module, each rule written once.

Whole numbers (:func:`whole_number`), numbers in a range (:func:`number_in`)
and (N, D) feature arrays (:func:`feature_array`). Each error names the argument and its value,
says what is valid, and ends with the caller's advice. Unit lists have their own
teaching check, :func:`cnnlab.activations.validate_units`.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def is_whole(value, low: int | None = None) -> bool:
    """True for an integer (Python or NumPy, not bool) that is at least ``low``."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, (bool, np.bool_))
        and (low is None or value >= low)
    )


def whole_number(value, name: str, low: int = 1, high: int | None = None, *,
                 why: str = "", advice: str = "") -> int:
    """``value`` as an int, checked to be a whole number in ``low..high``.

    Args:
        value: what the caller was given.
        name: the argument's name, as the user wrote it.
        low, high: the valid range, inclusive; ``high=None`` for no upper bound.
        why: what is wrong with an out-of-range value, in the caller's words
            (e.g. "images per unit is not possible with 20 images"); by default
            the message says what the value must be.
        advice: a last sentence (e.g. "The lab uses 11."), after a space.

    Raises:
        TypeError: ``value`` is not an integer (floats such as 3.0 and bools too).
        ValueError: ``value`` is outside ``low..high``.
    """
    if high is not None:
        valid = f"an integer from {low} to {high}"
    elif low == 1:
        valid = "a positive integer (at least 1)"
    else:
        valid = f"an integer of at least {low}"
    tail = f" {advice}" if advice else ""
    if not is_whole(value):
        raise TypeError(
            f"{name}={value!r} is not a whole number ({type(value).__name__}): use "
            f"{valid}.{tail}"
        )
    if value < low or (high is not None and value > high):
        if why:
            raise ValueError(f"{name}={value!r} {why}: use {valid}.{tail}")
        raise ValueError(f"{name}={value!r} must be {valid}.{tail}")
    return int(value)


def number_in(value, name: str, low: float, high: float | None = None, *,
              advice: str = "") -> float:
    """``value`` as a float, checked to be a real number with ``low <= value <= high``.

    Raises:
        ValueError: ``value`` is not a real number (bools are refused) or is out of range.
    """
    valid = f"a number from {low:g} to {high:g}" if high is not None else f"a number >= {low:g}"
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not low <= value <= (np.inf if high is None else high)):
        tail = f" {advice}" if advice else ""
        raise ValueError(f"{name}={value!r} must be {valid}.{tail}")
    return float(value)


def feature_array(features, name: str = "features", dtype=None,
                  source: str = "extract_features", images=None) -> np.ndarray:
    """``features`` (array or tensor) as a numpy array of shape (N, D), N, D >= 1.

    ``source`` names the function that makes such an array, for the message. With
    ``images`` (the images the rows are of, (N, C, H, W)), there must be one row per image.

    Raises:
        ValueError: not 2-D, no rows or no columns, or not one row per image.
    """
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    features = np.asarray(features, dtype=dtype)
    if features.ndim != 2 or 0 in features.shape:
        raise ValueError(
            f"{name} must be a non-empty (N, D) array, one row per image (e.g. from "
            f"{source}), got shape {features.shape}."
        )
    if images is not None and len(images) != len(features):
        raise ValueError(
            f"images holds {len(images)} images but {name} has {len(features)} rows: "
            f"pass the images the {name} were computed from, e.g. "
            f"{name} = {source}(extractor, images)."
        )
    return features


def class_names(classes, n_units: int) -> tuple[str, ...] | None:
    """``classes`` (names of the units when they are a network's classes, as
    :attr:`cnnlab.Probe.classes`) as a tuple of ``n_units`` strings; None stays None.

    Raises:
        TypeError: one string instead of a list of names.
        ValueError: not one name per unit.
    """
    if classes is None:
        return None
    if isinstance(classes, str):
        raise TypeError(f"classes={classes!r} must be a list of names, one per unit.")
    classes = tuple(map(str, classes))
    if len(classes) != n_units:
        raise ValueError(f"classes has {len(classes)} names for {n_units} units: give one "
                         "name per unit (probe.classes), or None to number the units.")
    return classes
