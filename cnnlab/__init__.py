"""cnnlab: what a small convolutional network learns, as a one-session lab.

The notebook-facing names are re-exported here; each lives in the module of its
section (``cnnlab.data``, ``cnnlab.model``, ``cnnlab.device``, ``cnnlab.train``,
``cnnlab.filters``, ``cnnlab.activations``, ``cnnlab.occlusion``, ``cnnlab.embedding``,
``cnnlab.metrics``, ``cnnlab.probe``, ``cnnlab.views``, ``cnnlab.checks``,
``cnnlab.widgets``, ``cnnlab.lab``, ``cnnlab.pretrained``). Their layers (the course,
the explorers, the analyses, drawing, the base) and the one way imports run between
them are listed in ``cnnlab/_layers.py``.
"""

__version__ = "0.1.0"

from .activations import (
                          Firing,
                          dead_units,
                          extract_features,
                          feature_extractor,
                          firing_stats,
                          plot_firing,
                          plot_top_k,
                          top_k,
                          validate_units,
)
from .config import LabConfig, get_config
from .data import (
                          CLASSES,
                          DataError,
                          Split,
                          denormalize,
                          load_cifar10,
                          load_imagefolder,
                          load_lab_data,
                          normalize,
                          synthetic_cifar10,
                          to_display,
)
from .device import choose_precision, get_device
from .embedding import embed, plot_embedding, trustworthiness_score
from .filters import (activation_maps, conv_layers, conv_weight, filter_images,
                      plot_activation_maps, plot_filters)
from .metrics import plot_confusion
from .model import N_UNITS, build_model, first_linear_index, load_checkpoint, save_checkpoint
from .occlusion import (
                          occluded_images,
                          occlusion_maps,
                          occlusion_mask,
                          plot_occluded,
                          plot_occlusion,
                          top_k_occlusion,
)
from .pretrained import load_pretrained
from .probe import Layer, LayerError, Probe, last_spatial_layer, layers
from .train import Evaluation, History, evaluate, seed_everything, train_model, train_or_load
from .views import UnitViews, plot_unit_views, unit_views
from .widgets import (
                          attribution_explorer,
                          embedding_explorer,
                          filter_explorer,
                          occlusion_explorer,
                          unit_explorer,
)

__all__ = [
    "CLASSES", "N_UNITS", "DataError", "Evaluation", "History", "LabConfig", "Split",
    "activation_maps", "build_model", "choose_precision", "denormalize", "embed", "evaluate",
    "extract_features", "feature_extractor", "filter_images", "first_linear_index",
    "get_config", "get_device", "load_checkpoint", "load_cifar10", "load_imagefolder",
    "load_lab_data", "normalize", "occluded_images", "occlusion_mask", "occlusion_maps", "plot_activation_maps", "plot_confusion",
    "plot_embedding", "plot_filters", "plot_occluded", "plot_occlusion", "plot_top_k", "save_checkpoint",
    "seed_everything", "synthetic_cifar10", "to_display", "top_k", "top_k_occlusion",
    "train_model", "train_or_load", "trustworthiness_score", "validate_units",
    "unit_explorer", "occlusion_explorer", "filter_explorer", "embedding_explorer",
    "Firing", "dead_units", "firing_stats", "plot_firing",
    "UnitViews", "plot_unit_views", "unit_views", "attribution_explorer",
    "Layer", "LayerError", "Probe", "conv_layers", "conv_weight", "last_spatial_layer", "layers",
    "load_pretrained",
]
