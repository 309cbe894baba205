"""The layers of the package, top to bottom: the one table of which module is where.

A module imports modules of its own layer or of a layer below it, never one above
(``tests/test_imports.py`` reads every import, lazy ones inside functions included,
and fails on one that runs up):

- ``face``: the package's entry points; nothing imports them.
- ``course``: the lab as taught: CIFAR-10, the course network and its weights, the
  exercise checks, training, the headless lab run and its command line.
- ``explorers``: the slider explorers; they redraw the analyses' figures and
  recompute an analysis (cached) when a control asks for a new setting.
- ``analyses``: what is computed on a network, and the figure of each result. They
  know a :class:`cnnlab.Probe`, tensors and the configuration (class names, units,
  sizes come from there), nothing of CIFAR-10 or of the course network's layout.
- ``drawing``: figure plumbing shared by the plot functions; no computation.
- ``base``: the configuration, devices and precision, the registry of methods,
  pixels and their normalisation, argument checks, files and progress bars.
"""

from __future__ import annotations

#: Layer name -> its modules, from the top layer to the bottom one.
LAYERS: dict[str, tuple[str, ...]] = {
    "face": ("__init__", "__main__"),
    "course": ("cli", "lab", "checks", "pretrained", "train", "networks", "data", "model"),
    "explorers": ("widgets",),
    "analyses": ("views", "sanity", "featvis", "occlusion", "attribution", "activations",
                 "filters", "embedding", "metrics", "probe", "_inference"),
    "drawing": ("_figures",),
    "base": ("config", "device", "_memo", "_methods", "_pixels", "_validate", "_io", "_progress",
             "_layers"),
}


def depth(module: str) -> int:
    """How far down ``module``'s layer is: 0 for the top layer.

    Raises:
        KeyError: ``module`` is in no layer (a new module must be added to :data:`LAYERS`).
    """
    for i, modules in enumerate(LAYERS.values()):
        if module in modules:
            return i
    raise KeyError(f"cnnlab.{module} is in no layer: add it to LAYERS in cnnlab/_layers.py.")
