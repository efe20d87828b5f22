"""A testbed built by scripts/build_testbeds.sh on a machine without an NVIDIA GPU has no CUDA build in it."""
from __future__ import annotations

import importlib.metadata
import shutil
import sysconfig
from pathlib import Path

import pytest

_PTH = Path(sysconfig.get_paths()["purelib"]) / "comfyui_stas_torch.pth"
pytestmark = [
    pytest.mark.skipif(not _PTH.exists(), reason="not a testbed python built by scripts/build_testbeds.sh"),
    pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA GPU"),
]


def test_no_cuda_package_without_a_gpu():
    import torch
    import torchaudio  # noqa: F401  ComfyUI imports both
    import torchvision  # noqa: F401

    names = sorted({d.metadata["Name"] for d in importlib.metadata.distributions()})
    assert [n for n in names if "cuda" in n.lower() or "nvidia" in n.lower()] == []
    assert torch.version.cuda is None, torch.__version__
