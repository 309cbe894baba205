"""Networks of your own for the lab: built by name, weights loaded with clear errors."""

import pytest
import torch
from torch import nn

from cnnlab.networks import NetworkError, build_network, load_weights, torchvision_models


def test_torchvision_models_are_built_without_weights_and_with_the_classes_asked():
    model = build_network("resnet18", num_classes=3)
    assert model.fc.out_features == 3 and not model.training
    torch.manual_seed(0)
    import torchvision

    reference = torchvision.models.resnet18(weights=None, num_classes=3)
    assert set(model.state_dict()) == set(reference.state_dict())
    assert "resnet18" in torchvision_models() and "vgg11" in torchvision_models()


def test_a_function_of_your_own_by_module_and_name():
    model = build_network("cnnlab.model:build_model", num_classes=4)
    assert isinstance(model, nn.Sequential) and model[-1].out_features == 4


@pytest.mark.parametrize("spec, words", [
    ("resnet81", ["'resnet81' is not a torchvision", "The closest are resnet18",
                  "Valid names:", "alexnet", "package.module:function"]),
    ("cnnlab.model:build_modle", ["cnnlab.model has no 'build_modle'", "build_model"]),
    ("no_such_package_xyz:net", ["cannot import the module 'no_such_package_xyz'",
                                 "PYTHONPATH"]),
    ("cnnlab.model:N_UNITS", ["'N_UNITS' is not a function"]),
    ("cnnlab.model:model_device", ["calling model_device", "num_classes="]),
])
def test_bad_model_names_are_explained(spec, words):
    with pytest.raises(NetworkError) as info:
        build_network(spec, num_classes=3)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_weights_load_from_a_state_dict_a_checkpoint_dict_or_dataparallel(tmp_path):
    torch.manual_seed(1)
    trained = build_network("cnnlab.model:build_model", num_classes=3)
    state = trained.state_dict()
    for i, saved in enumerate((state, {"state_dict": state, "epoch": 3},
                               {f"module.{k}": v for k, v in state.items()})):
        torch.save(saved, tmp_path / f"{i}.pt")
        torch.manual_seed(2)
        model = load_weights(build_network("cnnlab.model:build_model", num_classes=3),
                             tmp_path / f"{i}.pt")
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_weights_that_do_not_fit_name_the_keys_and_shapes(tmp_path):
    torch.save(build_network("resnet18", num_classes=10).state_dict(), tmp_path / "w.pt")
    with pytest.raises(NetworkError, match=r"fc.weight \(10, 512\) in the file, \(3, 512\) "
                       r"in the model.*--num-classes"):
        load_weights(build_network("resnet18", num_classes=3), tmp_path / "w.pt")
    with pytest.raises(NetworkError) as info:
        load_weights(build_network("cnnlab.model:build_model"), tmp_path / "w.pt")
    assert "missing from the file: 0.weight" in str(info.value)
    assert "not in the model: conv1.weight" in str(info.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(NetworkError, match="holds a list, not a state_dict"):
        load_weights(build_network("resnet18"), tmp_path / "list.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(NetworkError, match="could not be read as a PyTorch file"):
        load_weights(build_network("resnet18"), tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_weights(build_network("resnet18"), tmp_path / "none.pt")
