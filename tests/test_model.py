import json
from pathlib import Path

import pytest
import torch

from ormbg.model import ORMBG, RSU

KEYS = json.loads((Path(__file__).parent / "data" / "ormbg_keys.json").read_text())


def test_published_state_dict_loads_strictly():
    model = ORMBG()
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == KEYS
    assert len(KEYS) == 798 and sum(p.numel() for p in model.parameters()) == 44_046_790
    published = {key: torch.zeros(shape, dtype=model.state_dict()[key].dtype) for key, shape in KEYS.items()}
    model.load_state_dict(published, strict=True)


@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_six_logit_maps_at_any_input_size(size):
    torch.manual_seed(0)
    model = ORMBG().eval()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, *size))
    assert len(outputs) == 6 and all(o.shape == (1, 1, *size) for o in outputs)
    assert any((o < 0).any() or (o > 1).any() for o in outputs), "logits, not probabilities"


def test_rsu_keeps_size_and_channels():
    block = RSU(5, 8, 4, 16).eval()
    with torch.no_grad():
        assert block(torch.randn(2, 8, 33, 45)).shape == (2, 16, 33, 45)
    flat = RSU(4, 8, 4, 16, dilated=True).eval()
    with torch.no_grad():
        assert flat(torch.randn(1, 8, 9, 7)).shape == (1, 16, 9, 7)


def test_a_narrow_ormbg_has_the_published_keys_and_loads_by_its_width(tmp_path):
    from safetensors.torch import save_file

    from ormbg.model import load_model

    tiny = ORMBG(width_divisor=8)
    assert list(tiny.state_dict()) == list(KEYS), "the same 798 keys, in order"
    assert sum(p.numel() for p in tiny.parameters()) < 44_046_790 / 50
    assert tiny.state_dict()["conv_in.weight"].shape[0] == 8
    save_file(tiny.state_dict(), str(tmp_path / "tiny.safetensors"))
    torch.save(ORMBG().state_dict(), tmp_path / "full.pth")
    assert load_model(tmp_path / "tiny.safetensors").width_divisor == 8
    assert load_model(tmp_path / "full.pth").width_divisor == 1
    with pytest.raises(ValueError, match="width_divisor"):
        ORMBG(width_divisor=3)
