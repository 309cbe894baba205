"""Private helper shared by the plot functions."""

from __future__ import annotations

from matplotlib.figure import Figure


class LabFigure(Figure):
    """A matplotlib Figure whose text form names what it shows (:func:`describe`):
    ``<Figure: title>``, the ``text/plain`` beside its image in a notebook, read back as
    the image's alternative text where the notebook is turned into HTML."""

    def __repr__(self) -> str:
        text = describe(self)
        return f"<Figure: {text}>" if text else super().__repr__()


def new_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    """``fig`` cleared for reuse, or a new :class:`LabFigure` that pyplot does not track.

    Plot functions draw into what this returns, so nothing piles up in pyplot's
    list of open figures; Jupyter still displays a returned Figure.
    """
    if fig is None:
        return LabFigure(figsize=figsize, layout="constrained")
    fig.clear()
    return fig


def unit_word(classes) -> str:
    """What one unit of a figure is called: ``"class"`` when the units have class names
    (``classes``, as :attr:`cnnlab.Probe.classes`), else ``"unit"``."""
    return "unit" if classes is None else "class"


def unit_label(u: int, classes=None) -> str:
    """A unit's label in a figure: ``"unit 3"``, or ``"class 'cat'"`` when the units are
    classes (``classes``: one name per unit, in order)."""
    return f"unit {u}" if classes is None else f"class {classes[u]!r}"


#: One colour per class, in hue order: ten colours chosen (by a max-min search over an
#: sRGB grid) to stay apart for readers with normal colour vision and with each of the
#: three colour-vision deficiencies at full severity: every pair at least 17 apart in
#: CAM02-UCS after simulating deuteranopia, protanopia or tritanopia (matplotlib's tab10
#: has two colours 1.6 apart for protanopes). tests/test_embedding.py checks it with an
#: independent simulation.
CLASS_COLOURS = ("#d42a55", "#d4802a", "#2a5500", "#00d4aa", "#0000d4",
                 "#8080ff", "#d4aaff", "#aa80aa", "#805580", "#552a55")
#: Marker of classes 0-9, 10-19, ...: beyond ten classes the shape tells them apart.
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def class_style(c: int) -> dict:
    """The scatter style (colour and marker) of class ``c``."""
    n = len(CLASS_COLOURS)
    return {"color": CLASS_COLOURS[c % n], "marker": CLASS_MARKERS[c // n % len(CLASS_MARKERS)]}


#: Name of the Figure attribute that holds its alternative text.
ALT_ATTRIBUTE = "cnnlab_alt"


def set_alt(fig: Figure, text: str) -> Figure:
    """Attach ``text`` to ``fig`` as its alternative text (what a reader who cannot
    see the figure needs to know), read back with :func:`alt_text`."""
    setattr(fig, ALT_ATTRIBUTE, " ".join(str(text).split()))
    return fig


def alt_text(fig: Figure) -> str | None:
    """The alternative text :func:`set_alt` attached to ``fig``, or None."""
    return getattr(fig, ALT_ATTRIBUTE, None)


def describe(fig: Figure) -> str:
    """Alternative text for ``fig``: what :func:`set_alt` attached, else its title
    (``suptitle``), else its axes' titles (the first three different ones, joined by
    "; "); "" for a figure with no title at all."""
    if alt_text(fig):
        return alt_text(fig)
    suptitle = getattr(fig, "_suptitle", None)
    if suptitle is not None and suptitle.get_text().strip():
        return " ".join(suptitle.get_text().split())
    titles = []
    for ax in fig.axes:
        text = " ".join(ax.get_title().split())
        if text and text not in titles:
            titles.append(text)
    return "; ".join(titles[:3])
