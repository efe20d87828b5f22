"""MA profile fingerprints at real size: same checkpoint matches on CPU and GPU, across dtypes, under an
in-place LoRA and ComfyUI's dynamic VRAM loading; another checkpoint of the same shape does not.

    python3 bench/profile_fingerprint.py --comfyui SRC [--python PY] [--tiny] [--cpu] [--out results.json]

Writes two random-weight checkpoints of the Wan 2.1 1.3B architecture (``--tiny``: 4 blocks of dim 128)
as bf16 safetensors in a temp folder, loads them the way UNETLoader does (comfy.sd.load_diffusion_model,
so ComfyUI 0.33's dynamic VRAM path on a GPU), and checks STAS's fingerprint of the model:
right after loading (weights on the CPU), after a sampler-style load onto the GPU with a LoRA-style
patch on every 1-D weight, loaded as fp16 and as fp8_e4m3fn, and against the other checkpoint.
Prints one line per case and the time one fingerprint takes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _repo  # noqa: F401  (first: the repository root on sys.path, bench/_repo.py)

from stas_harness.comfy_env import import_comfyui, load_pack, pack_module
from stas_harness.models import random_state_dict, wan_module


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--python", help="ComfyUI's python (re-runs this script with it)")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.python and os.path.abspath(a.python) != os.path.abspath(sys.executable):
        argv = [a.python, __file__] + [x for x in sys.argv[1:] if x != a.python and x != "--python"]
        return subprocess.call(argv)
    sys.argv = sys.argv[:1]
    import_comfyui(a.comfyui, cpu=a.cpu)
    import torch
    import comfy.model_management as mm
    import comfy.sd
    import comfy.utils
    load_pack()
    fingerprint = pack_module("nodes.fingerprint").model_fingerprint

    dims = dict(dim=128, ffn_dim=256, num_heads=2, num_layers=4) if a.tiny else \
        dict(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)
    meta_wan = wan_module(meta=True, **dims)  # Wan 2.1 T2V on the meta device: its keys and shapes
    results, tmp = {}, tempfile.mkdtemp()

    def write(seed):
        sd = random_state_dict(meta_wan, seed=seed, dtype=torch.bfloat16)
        path = os.path.join(tmp, f"wan_{seed}.safetensors")
        comfy.utils.save_torch_file(sd, path)
        return path

    high, low = write(11), write(12)
    base = comfy.sd.load_diffusion_model(high)
    t0 = time.perf_counter()
    ref = fingerprint(base)
    results["fingerprint_ms_after_load"] = 1000 * (time.perf_counter() - t0)
    results["patcher"] = type(base).__name__

    def case(name, model_or_fp, expect_match):
        fp = model_or_fp if not hasattr(model_or_fp, "model") else fingerprint(model_or_fp)
        why = ref.mismatch(fp)
        ok = (why is None) == expect_match
        results[name] = {"match": why is None, "expected": expect_match, "ok": ok, "why": why}
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {'match' if why is None else why}")

    case("same file loaded again", comfy.sd.load_diffusion_model(high), True)
    lora = base.clone()
    dm = lora.get_model_object("diffusion_model")
    lora.add_patches({f"diffusion_model.{n}": (torch.full_like(p, 0.01, device="cpu"),)
                      for n, p in dm.named_parameters() if p.ndim == 1}, 1.0)
    mm.load_models_gpu([lora])
    results["device_after_load"] = str(next(p for n, p in dm.named_parameters() if p.ndim == 1).device)
    t0 = time.perf_counter()
    fp = fingerprint(lora)
    results["fingerprint_ms_loaded"] = 1000 * (time.perf_counter() - t0)
    case("loaded on the device with an in-place LoRA", fp, True)
    mm.unload_all_models()
    case("loaded as fp16", comfy.sd.load_diffusion_model(high, model_options={"dtype": torch.float16}), True)
    if hasattr(torch, "float8_e4m3fn"):
        case("loaded as fp8_e4m3fn", comfy.sd.load_diffusion_model(high, model_options={"dtype": torch.float8_e4m3fn}),
             True)
    case("the other checkpoint (same shape)", comfy.sd.load_diffusion_model(low), False)
    print(json.dumps({k: v for k, v in results.items() if not isinstance(v, dict)}))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0 if all(v["ok"] for v in results.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    sys.exit(main())
