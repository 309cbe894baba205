"""Progress suited to where it is shown: the one rule for every loop of the lab.

In a terminal or a notebook a tqdm bar redraws in place. Where nobody watches the output
live (stderr is a log file or a pipe: CI, ``nohup``, ``cnnlab lab > log``), a bar would
leave a carriage return and a line fragment per redraw, so there no bar is drawn and the
loops report one plain line per stage or per epoch instead (:func:`line`).
"""

from __future__ import annotations

import sys


def interactive() -> bool:
    """True where a bar can redraw in place: a Jupyter kernel, or stderr is a terminal."""
    if "ipykernel" in sys.modules:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def bar(iterable=None, *, show: bool = True, **kwargs):
    """A tqdm progress bar (``tqdm.auto``: a widget in a notebook), drawn only when
    ``show`` and :func:`interactive`; otherwise a silent pass-through of ``iterable``
    that still accepts ``update``, ``set_postfix`` and ``close``.

    Args:
        iterable: what to iterate over, or None with ``total=`` for manual updates.
        show: the caller's wish (its ``progress`` argument).
        **kwargs: tqdm's (``desc``, ``unit``, ``total``, ``leave``...).
    """
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not (show and interactive()), **kwargs)


def line(text: str, show: bool = True) -> None:
    """Print ``text`` as one line of progress where no bar is drawn (not interactive)."""
    if show and not interactive():
        print(text, flush=True)
