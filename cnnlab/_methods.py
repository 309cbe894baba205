"""The one registry of the lab's explanation methods: names, display names, kinds.

Every method the lab can show or test is registered here once; the gradient methods
(:mod:`cnnlab.attribution`), the side-by-side views (:mod:`cnnlab.views`), the sanity
checks (:mod:`cnnlab.sanity`) and the explorers (:mod:`cnnlab.widgets`) read their
lists, titles and labels from it. A method's options are its function's own keyword
arguments (:func:`cnnlab.attribution.attribute` reads them from the signature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    """One explanation method.

    Attributes:
        name: what callers pass (``"integrated_gradients"``).
        title: a figure column's title (may break over lines).
        label: the name in a sentence or a legend.
        kind: ``"gradient"`` (a function of :mod:`cnnlab.attribution`),
            ``"occlusion"``, ``"synthesis"`` (an image made to excite the unit),
            ``"control"`` (a map that ignores the model) or ``"baseline"`` (a random
            ranking, for the faithfulness curves).
        function: for a gradient method, the name of its function in
            :mod:`cnnlab.attribution`.
        seeded: whether it draws random numbers and takes a ``seed``.
    """

    name: str
    title: str
    label: str
    kind: str
    function: str | None = None
    seeded: bool = False


#: Every method, in the order the lab shows them.
REGISTRY: tuple[Method, ...] = (
    Method("occlusion", "occlusion", "occlusion", "occlusion"),
    Method("gradient", "gradient", "gradient", "gradient", "gradient"),
    Method("smoothgrad", "SmoothGrad", "SmoothGrad", "gradient", "smoothgrad", seeded=True),
    Method("integrated_gradients", "Integrated\nGradients", "Integrated Gradients",
           "gradient", "integrated_gradients"),
    Method("guided_backprop", "guided\nbackprop", "guided backprop", "gradient",
           "guided_backprop"),
    Method("grad_cam", "Grad-CAM", "Grad-CAM", "gradient", "grad_cam"),
    Method("contribution", "contribution\n(8x8, exact)", "contribution map", "gradient",
           "contribution_map"),
    Method("synthesized", "synthesized", "synthesized", "synthesis", seeded=True),
    Method("edges", "edges", "edge detector (control)", "control"),
    Method("random", "random", "random ranking", "baseline", seeded=True),
)

_BY_NAME = {m.name: m for m in REGISTRY}


def registered(name: str) -> Method:
    """The registered method called ``name`` (KeyError if none)."""
    return _BY_NAME[name]


def method_names(*kinds: str) -> tuple[str, ...]:
    """The names of the methods of these kinds: kind by kind in the order given, each
    kind in registry order."""
    return tuple(m.name for kind in kinds for m in REGISTRY if m.kind == kind)


def choose(given, among: Sequence[str], what: str = "methods", *,
           empty: bool = True) -> tuple[str, ...]:
    """``given`` (a name, names, or None for all of ``among``) checked against ``among``.

    Raises:
        ValueError: a name not in ``among`` (the message lists the valid ones), or no
            name at all when ``empty`` is False.
    """
    chosen = tuple(among) if given is None else (
        (given,) if isinstance(given, str) else tuple(given))
    unknown = [m for m in chosen if m not in among]
    if unknown:
        raise ValueError(f"{what} {unknown} are not known. Choose among {', '.join(among)}.")
    if not chosen and not empty:
        raise ValueError(f"{what} is empty: name at least one of {', '.join(among)}.")
    return chosen
