"""Private helper shared by the plot functions."""

from __future__ import annotations

from matplotlib.figure import Figure


def new_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    """``fig`` cleared for reuse, or a new Figure that pyplot does not track.

    Plot functions draw into what this returns, so nothing piles up in pyplot's
    list of open figures; Jupyter still displays a returned Figure.
    """
    if fig is None:
        return Figure(figsize=figsize, layout="constrained")
    fig.clear()
    return fig


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
