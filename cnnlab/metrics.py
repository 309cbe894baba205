"""How well the trained network does: the confusion matrix, drawn.

The numbers come from :func:`cnnlab.train.evaluate` (accuracy, per-class
accuracy, confusion counts); :func:`plot_confusion` draws them with
scikit-learn's ``ConfusionMatrixDisplay``, each true class labelled with its
accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ._figures import new_figure


def plot_confusion(
    confusion: np.ndarray,
    classes: Sequence[str],
    per_class_accuracy: np.ndarray | None = None,
    fig: Figure | None = None,
    normalize: bool = True,
) -> Figure:
    """Draw a confusion matrix with per-class accuracy in the row labels.

    Args:
        confusion: (C, C) counts, rows = true class, columns = predicted class
            (``Evaluation.confusion``).
        classes: the C class names in label order.
        per_class_accuracy: (C,) fractions in [0, 1]; computed from ``confusion``
            (diagonal over row sums) if None.
        fig: figure to draw into (cleared first); a new one if None.
        normalize: show each row as fractions of its true class (True) or raw
            counts (False).

    Returns:
        The matplotlib Figure, titled with the overall accuracy.

    Raises:
        ValueError: shapes that do not match the number of classes, negative
            counts, or accuracies outside [0, 1] (percentages, say).

    Example:
        >>> result = evaluate(model, test)
        >>> plot_confusion(result.confusion, CLASSES, result.per_class_accuracy)
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    counts = np.asarray(confusion)
    n = len(classes)
    if counts.shape != (n, n):
        raise ValueError(
            f"confusion has shape {counts.shape}, expected ({n}, {n}) for {n} classes "
            "(rows = true class, columns = predicted)."
        )
    if (counts < 0).any():
        raise ValueError("confusion holds negative values; it must hold counts of images.")
    rows = counts.sum(axis=1)
    if per_class_accuracy is None:
        per_class = np.divide(np.diag(counts), rows, out=np.zeros(n), where=rows > 0)
    else:
        per_class = np.asarray(per_class_accuracy, dtype=np.float64)
        if per_class.shape != (n,):
            raise ValueError(
                f"per_class_accuracy has shape {per_class.shape}, expected ({n},)."
            )
        if (per_class < 0).any() or (per_class > 1).any():
            raise ValueError(
                f"per_class_accuracy must be fractions in [0, 1], got values up to "
                f"{per_class.max():g}. If they are percentages, divide them by 100."
            )
    total = counts.sum()
    accuracy = np.trace(counts) / total if total > 0 else 0.0
    if normalize:
        shown = np.divide(counts, rows[:, None], out=np.zeros(counts.shape),
                          where=rows[:, None] > 0)
        fmt = ".2f"
    else:
        shown, fmt = counts, "d" if np.issubdtype(counts.dtype, np.integer) else ".3g"
    fig = new_figure(fig, figsize=(8.5, 7.0))
    ax = fig.add_subplot()
    display = ConfusionMatrixDisplay(shown, display_labels=list(classes))
    display.plot(ax=ax, cmap="Blues", values_format=fmt, colorbar=True,
                 xticks_rotation=45)
    if normalize:
        display.im_.set_clim(0.0, 1.0)
    ax.set_yticks(np.arange(n), [f"{c} ({a:.0%})" for c, a in zip(classes, per_class)])
    ax.set_ylabel("True class (its accuracy)")
    ax.set_xlabel("Predicted class")
    what = "fraction of each true class" if normalize else "number of images"
    ax.set_title(f"Confusion matrix ({what}); overall accuracy {accuracy:.1%}")
    return fig
