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
