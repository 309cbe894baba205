"""Shared fixtures: a seeded course network, a few made-up uint8 images, and the quick
model trained once per test session for the tests that run the notebook.

The whole run uses one checkpoint folder of its own (``CNNLAB_CHECKPOINTS``, set before
anything is collected): the user's saved models are never read or written, and the
notebook kernels and the browser's all reuse the one model trained here. The
lesson's kernels also share one memo (``cnnlab/_memo.py``, as the grader's kernels do):
the first kernel to run a cell's calls computes them, later kernels with exactly the
same inputs read the results."""

import os
import shutil
import tempfile
from pathlib import Path

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


SESSION: dict[str, Path] = {}

#: the modules that grade a made-up class in the sandbox. ``run.sh test`` runs the suite
#: on two pytest-xdist workers (``-n 2``): these on one, every other test on the other, in
#: file order as without xdist. They need none of the session's fixtures (no trained
#: model, no memo), so nothing here is made twice.
GRADING = ("test_autograder.py", "test_autograder_dask.py")


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, when it is installed
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class TwoLanes(LoadScopeScheduling):
        """Two work units: the grading modules, and everything else."""

        def _split_scope(self, nodeid: str) -> str:
            return "grading" if nodeid.split("::")[0].endswith(GRADING) else "lesson"

    return TwoLanes(config, log)


def pytest_configure(config):
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # an xdist worker: its share of the cores, for it and its children
        # (two processes each spinning two OpenMP threads on two cores run several times slower)
        threads = max(1, (os.cpu_count() or 1) // int(worker["workercount"]))
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    folder = Path(tempfile.mkdtemp(prefix="cnnlab-test-checkpoints-"))
    SESSION.update(checkpoints=folder, memo=folder / "memo")
    os.environ["CNNLAB_CHECKPOINTS"] = str(folder)


def pytest_unconfigure(config):
    if "checkpoints" in SESSION:
        shutil.rmtree(SESSION["checkpoints"], ignore_errors=True)


def lesson_kernel_memo() -> dict[str, str]:
    """The environment that gives a lesson kernel the run's shared memo."""
    memo = str(SESSION["memo"])
    return {"CNNLAB_MEMO": memo, "CNNLAB_MEMO_RECORD": memo}


@pytest.fixture(scope="session")
def quick_checkpoints():
    """A checkpoint folder holding the quick-profile model, trained here once with the
    notebook's own calls, and that checkpoint's path: the notebook runs and the browser
    tests all reuse it instead of training it each."""
    import cnnlab

    folder = SESSION["checkpoints"]
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
