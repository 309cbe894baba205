"""Shared fixtures: a seeded course network, a few made-up uint8 images, and the quick
model trained once per test session for the tests that run the notebook."""

import os

import pytest
import torch

from cnnlab.model import build_model


@pytest.fixture
def model():
    """The course network with seeded random weights, in train mode (as built)."""
    torch.manual_seed(0)
    return build_model()


@pytest.fixture
def images():
    """Six seeded random uint8 images (6, 3, 32, 32)."""
    return torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(1))


def lesson_source() -> str:
    """CNNLAB_SOURCE for kernels that run the lesson: the real images when CNNLAB_DATA
    names them (and CNNLAB_SOURCE does not say synthetic), else made-up ones."""
    real = os.environ.get("CNNLAB_DATA") and os.environ.get("CNNLAB_SOURCE") != "synthetic"
    return "" if real else "synthetic"


@pytest.fixture(scope="session")
def quick_checkpoints(tmp_path_factory):
    """A checkpoint folder holding the quick-profile model, trained here once with the
    notebook's own calls, and that checkpoint's path: the notebook runs and the browser
    tests all reuse it instead of training it each."""
    import cnnlab

    folder = tmp_path_factory.mktemp("quick-checkpoints")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {"CNNLAB_PROFILE": "quick", "CNNLAB_CHECKPOINTS": str(folder),
                           "CNNLAB_SOURCE": lesson_source()}.items():
            patch.setenv(key, value)
        config = cnnlab.get_config()
        train, test = cnnlab.load_lab_data(config)
        _, info = cnnlab.train_or_load(config, train, test,
                                       device=cnnlab.get_device(verbose=False), progress=False)
    return folder, info["checkpoint"]


@pytest.fixture(scope="module")
def resnet():
    """A random-weight torchvision ResNet-18 with 10 classes, in eval mode."""
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()
