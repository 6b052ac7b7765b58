"""``--pretrained imagenet|none|PATH``: local files only, validated, clear errors."""

from __future__ import annotations

import pytest
import torch

from libmtl_repmtl.models import DilatedResNetEncoder, OfficeEncoder, PretrainedWeightsError, hub_checkpoint_dir
from libmtl_repmtl.models.pretrained import IMAGENET_FILES


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


def _tiny_state():
    torch.manual_seed(1)
    return DilatedResNetEncoder("tiny").state_dict()


def test_path_loads_state_dict(tmp_path):
    state = _tiny_state()
    path = tmp_path / "w.pt"
    torch.save({**state, "fc.weight": torch.zeros(3, 3)}, path)  # fc.* is ignored
    enc = DilatedResNetEncoder("tiny", str(path))
    assert enc.pretrained_source == str(path)
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_wrapped_and_module_prefixed_state_dict(tmp_path):
    state = _tiny_state()
    path = tmp_path / "w.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    enc = DilatedResNetEncoder("tiny", str(path))
    assert torch.equal(enc.conv1.weight, state["conv1.weight"])


def test_key_mismatch_is_clear(tmp_path):
    state = _tiny_state()
    state.pop("layer4.0.conv3.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(PretrainedWeightsError, match="missing key.*layer4.0.conv3.weight.*unexpected key.*extra"):
        DilatedResNetEncoder("tiny", str(path))


def test_shape_mismatch_is_clear(tmp_path):
    path = tmp_path / "office.pt"
    torch.save(OfficeEncoder("tiny").backbone.state_dict(), path)
    with pytest.raises(PretrainedWeightsError, match="shape mismatch"):
        DilatedResNetEncoder("tiny", str(path))


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no such file"):
        DilatedResNetEncoder("tiny", str(tmp_path / "absent.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="cannot read"):
        DilatedResNetEncoder("tiny", str(bad))


def test_imagenet_absent_names_files_folder_and_alternatives(hub_dir):
    assert hub_checkpoint_dir() == hub_dir
    with pytest.raises(PretrainedWeightsError) as info:
        OfficeEncoder("resnet18", "imagenet")
    msg = str(info.value)
    for part in (*IMAGENET_FILES["resnet18"], str(hub_dir), "--pretrained none", "--pretrained PATH"):
        assert part in msg
    with pytest.raises(PretrainedWeightsError, match="resnet50-19c8e357.pth or resnet50-0676ba61.pth"):
        DilatedResNetEncoder("resnet50", "imagenet")


def test_imagenet_found_in_hub_cache(hub_dir):
    import torchvision

    hub_dir.mkdir(parents=True)
    torch.manual_seed(3)
    ref = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(ref, hub_dir / IMAGENET_FILES["resnet18"][1])
    enc = OfficeEncoder("resnet18", "imagenet")
    assert enc.pretrained_source.endswith(IMAGENET_FILES["resnet18"][1])
    assert torch.equal(enc.backbone.layer4[1].conv2.weight, ref["layer4.1.conv2.weight"])


def test_tiny_has_no_imagenet_weights():
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights"):
        DilatedResNetEncoder("tiny", "imagenet")


def test_none_is_random_init():
    assert DilatedResNetEncoder("tiny", "none").pretrained_source == "none"
    assert OfficeEncoder("tiny", None).pretrained_source == "none"
