"""bench/workflows_gpu.py's CPU-side parts: the unpatched twin of a saved workflow's prompt, the files its
loaders name (workflows 7 and 8 included), and seconds per step read from ComfyUI's progress bars."""
from __future__ import annotations

import importlib
import json
import sys

import pytest

from stas_harness.server import PACK_DIR


@pytest.fixture(scope="module")
def wg():
    sys.path.insert(0, str(PACK_DIR / "bench"))
    try:
        return importlib.import_module("workflows_gpu")
    finally:
        sys.path.remove(str(PACK_DIR / "bench"))


# workflow 8's shape: two experts, each UNETLoader -> LoraLoaderModelOnly -> ModelSamplingSD3 -> STAS -> sampler
PROMPT_8 = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "high.safetensors", "weight_dtype": "default"}},
    "2": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "lora_high.safetensors",
                                                          "strength_model": 1}},
    "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["2", 0], "shift": 5}},
    "11": {"class_type": "STASModelPatch", "inputs": {"model": ["3", 0], "alpha": 1}},
    "13": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["11", 0], "latent_image": ["10", 0]}},
    "4": {"class_type": "UNETLoader", "inputs": {"unet_name": "low.safetensors", "weight_dtype": "default"}},
    "12": {"class_type": "STASModelPatch", "inputs": {"model": ["4", 0], "alpha": 1}},
    "14": {"class_type": "KSamplerAdvanced", "inputs": {"model": ["12", 0], "latent_image": ["13", 0]}},
    "10": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 640}},
    "7": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "ltx.safetensors"}},
    "8": {"class_type": "LTXAVTextEncoderLoader", "inputs": {"text_encoder": "gemma.safetensors",
                                                             "ckpt_name": "ltx.safetensors"}},
    "9": {"class_type": "LTXVAudioVAELoader", "inputs": {"ckpt_name": "ltx.safetensors"}},
}


def test_unpatched_twin_bypasses_every_stas_model_patch(wg):
    twin = wg.unpatched_twin(PROMPT_8)
    assert set(PROMPT_8) - set(twin) == {"11", "12"}
    assert twin["13"]["inputs"]["model"] == ["3", 0] and twin["14"]["inputs"]["model"] == ["4", 0]
    assert twin["14"]["inputs"]["latent_image"] == ["13", 0]      # links not from STAS stay
    assert PROMPT_8["13"]["inputs"]["model"] == ["11", 0]          # the steered prompt is left as it was
    chained = {**PROMPT_8, "15": {"class_type": "STASModelPatch", "inputs": {"model": ["11", 0]}},
               "16": {"class_type": "KSampler", "inputs": {"model": ["15", 0]}}}
    assert wg.unpatched_twin(chained)["16"]["inputs"]["model"] == ["3", 0]
    assert wg.unpatched_twin(twin) is None


def test_needed_files_include_loras_and_ltx2_loaders(wg):
    assert wg.needed_files(PROMPT_8) == ["gemma.safetensors", "high.safetensors", "lora_high.safetensors",
                                         "low.safetensors", "ltx.safetensors"]


def test_every_shipped_workflow_with_a_model_loader_is_in_the_run_order(wg):
    names = {p.stem for p in (PACK_DIR / "example_workflows").glob("*.json")}
    assert {"7. LTX-2 with STAS", "8. Wan 2.2 A14B 4-step LoRA with STAS"} <= set(wg.ORDER) <= names
    for name in ("7. LTX-2 with STAS", "8. Wan 2.2 A14B 4-step LoRA with STAS", "10. Wan Animate 2 with STAS",
                 "11. Wan 2.2 S2V with STAS"):
        ui = json.loads((PACK_DIR / "example_workflows" / f"{name}.json").read_text())
        loaders = {n["type"] for n in ui["nodes"] if n["type"].endswith("Loader") or "Loader" in n["type"]}
        assert loaders <= set(wg.LOADER_FILES), loaders - set(wg.LOADER_FILES)


def test_seconds_per_step_from_progress_bars(wg):
    log = ("Requested to load WAN21\r"
           "  0%|          | 0/2 [00:00<?, ?it/s]\r 50%|#####     | 1/2 [00:06<00:06,  6.10s/it]\r"
           "100%|##########| 2/2 [00:12<00:00,  6.02s/it]\r100%|##########| 2/2 [00:12<00:00,  6.03s/it]\n"
           "loaded completely\n"
           "100%|##########| 2/2 [00:10<00:00,  5.01s/it]\n"
           "100%|##########| 20/20 [01:00<00:00,  3.00it/s]\n"
           "Prompt executed in 40.12 seconds\n")
    got = wg.sampling_steps(log)
    assert got["bars"] == [[2, 12, 6.03], [2, 10, 5.01], [20, 60, pytest.approx(1 / 3)]]
    assert got["steps"] == 24 and got["s_per_step"] == pytest.approx(82 / 24, abs=1e-3)
    assert got["s_per_step_rate"] == pytest.approx((2 * 6.03 + 2 * 5.01 + 20 / 3) / 24, abs=1e-3)
    assert wg.sampling_steps("no bars here")["s_per_step"] is None
