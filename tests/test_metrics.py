"""The confusion-matrix figure, on a matrix small enough to check by hand."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from cnnlab.metrics import plot_confusion

CLASSES = ("cat", "dog", "frog")
# Rows = true class: 4 cats (2 right), 5 dogs (4 right), 1 frog (0 right): 6 of 10.
CONFUSION = np.array([[2, 2, 0],
                      [1, 4, 0],
                      [0, 1, 0]])


def texts(ax):
    return [t.get_text() for t in ax.texts]


def test_normalised_rows_accuracy_labels_and_title():
    fig = plot_confusion(CONFUSION, CLASSES)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    shown = ax.get_images()[0].get_array()
    np.testing.assert_allclose(shown, [[0.5, 0.5, 0], [0.2, 0.8, 0], [0, 1, 0]])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (50%)", "dog (80%)",
                                                           "frog (0%)"]
    assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASSES)
    assert "overall accuracy 60.0%" in ax.get_title()
    assert texts(ax)[:3] == ["0.50", "0.50", "0.00"]


def test_counts_and_given_per_class_accuracy():
    fig = plot_confusion(CONFUSION, CLASSES, per_class_accuracy=[0.25, 1.0, 0.5],
                         normalize=False)
    ax = fig.axes[0]
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), CONFUSION)
    assert texts(ax) == ["2", "2", "0", "1", "4", "0", "0", "1", "0"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat (25%)", "dog (100%)",
                                                           "frog (50%)"]


def test_a_class_without_images_does_not_break_the_figure():
    confusion = CONFUSION.copy()
    confusion[2] = 0
    ax = plot_confusion(confusion, CLASSES).axes[0]
    assert np.isfinite(ax.get_images()[0].get_array()).all()
    assert ax.get_yticklabels()[2].get_text() == "frog (0%)"


def test_reuses_a_given_figure():
    fig = Figure()
    fig.add_subplot().plot([0, 1])
    assert plot_confusion(CONFUSION, CLASSES, fig=fig) is fig
    assert not fig.axes[0].lines


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"per_class_accuracy": [50.0, 80.0, 0.0]}, ["fractions in [0, 1]", "divide them by 100"]),
        ({"per_class_accuracy": [0.5, 0.8]}, ["shape (2,)", "expected (3,)"]),
        ({"confusion": np.zeros((2, 2))}, ["shape (2, 2)", "expected (3, 3) for 3 classes"]),
    ],
)
def test_errors_are_explained(kwargs, words):
    args = {"confusion": CONFUSION, "classes": CLASSES, **kwargs}
    with pytest.raises(ValueError) as info:
        plot_confusion(**args)
    for word in words:
        assert word in str(info.value)
