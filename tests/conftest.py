"""Shared fixtures: a seeded course network and a few made-up uint8 images."""

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
