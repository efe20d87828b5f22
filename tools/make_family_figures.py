"""Write the LTX-2 figures of docs/models.md (docs/screenshots/ltx2_*.png) with the pack's own nodes in a
real ComfyUI, in process on the CPU:

- ltx2_mask_preview.png: Boundary Mask Builder's preview of an LTX-2 audio-video latent (768x512, 97
  frames: 13 latent frames of 16 x 24 tokens, patch 1), given as the NestedTensor LTX-2 samplers use;
- ltx2_ma_visualizer_heatmaps_output.png: MA Visualizer's heatmaps of a tiny random-weight LTX-2 run
  steered at block 1 (the layout, not MAs: random weights have none).

    COMFYUI_PATH=~/.cache/comfyui-stas/testbeds/comfyui-0.33.0/src \\
        ~/.cache/comfyui-stas/testbeds/comfyui-0.33.0/venv/bin/python tools/make_family_figures.py [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    out = ap.parse_args(argv).out
    import numpy as np
    import torch
    from PIL import Image

    from stas_harness import comfy_env as ce, models
    torch.set_num_threads(1)
    ce.require_comfy()
    if not models.has_ltxav():
        raise SystemExit(f"ComfyUI {ce.comfy_version()} has no LTX-2: use 0.8.0 or later")
    import comfy.nested_tensor
    pk = ce.Pack()

    def save(img, name):
        Image.fromarray((img[0].clamp(0, 1).numpy() * 255).astype(np.uint8)).save(out / name)
        print(f"wrote {out / name}")

    lat = comfy.nested_tensor.NestedTensor((torch.zeros(1, 128, 13, 16, 24), torch.zeros(1, 8, 97, 16)))
    save(ce.run_node(pk.mask, latent={"samples": lat}, patch_hw=1)[1], "ltx2_mask_preview.png")

    mask = torch.ones(1, 8, dtype=torch.long)   # LTX text conditioning: an integer attention mask
    pos, neg = (ce.text_cond(seed=s, dim=128, attention_mask=mask) for s in (1, 2))
    steered = ce.stas(models.tiny_ltxav(2), blocks="1", channels="3,70", alpha=1.5, end_percent=1.0)
    rm, recording = ce.pack_module("nodes.ma_recorder").MARecorder.execute(
        model=steered, blocks="all", steps="all", record="cond", channels="3,70", top_k=2, token_stride=0,
        max_memory_mb=64).result
    lat = comfy.nested_tensor.NestedTensor((torch.zeros(1, 128, 5, 8, 12), torch.zeros(1, 8, 5, 16)))
    samples = ce.sample(rm, lat, steps=2, cfg=2.0, positive=pos, negative=neg)
    r = ce.pack_module("nodes.ma_visualizer").MAVisualizer.execute(
        recording=recording, latent={"samples": samples}, block=1, step=0, sample=0, chunk="cond", channel="max",
        threshold=50.0, log_scale=False, export=False, filename_prefix="x", mask=None).result
    save(r[1], "ltx2_ma_visualizer_heatmaps_output.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
