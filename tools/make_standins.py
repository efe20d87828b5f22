"""Random-weight stand-ins for the model files the example workflows load, written under the
official ComfyUI repackaged file names into a models folder, so the workflows run unchanged on a
machine without the real weights (tests, the first run, a GPU smoke run).

    <ComfyUI's python> tools/make_standins.py --comfyui /path/to/ComfyUI --models DIR [--plant-ma] [NAME ...]
    <ComfyUI's python> tools/make_standins.py --full [--device cuda] --comfyui ... --models DIR [NAME ...]

Run it with the python that runs that ComfyUI: the diffusion models are built from ComfyUI's own
model classes (stas_harness/models.py) and loaded once through ComfyUI's own loader before they are
saved, so ComfyUI's detection recognises each file as the architecture its name says (Wan 2.1
T2V / I2V, Wan 2.2 TI2V 5B, Wan 2.2 A14B experts, HunyuanVideo, LTX-2 as a checkpoint that
holds only its diffusion model (ComfyUI 0.8.0 or later), Wan 2.2 S2V, and Wan Animate 2 (ComfyUI
0.33.0 or later)), only tiny; LoRAs (Wan 2.2 A14B's 4-step LoRAs, the lightx2v I2V step-distill LoRA
of the Animate 2 workflow) as small random LoRAs on the matching tiny model's self-attention.

Text encoders, CLIP vision, audio encoders and VAEs have fixed, multi-gigabyte architectures in ComfyUI, so for
those this writes placeholders unless --full is given: a one-tensor safetensors file under the
real name (the frontend and the server's file lists see the real names; loading one fails
loudly). The tests swap their loader nodes for tests/comfy_test_nodes stand-ins.

--plant-ma scales one output channel of every block's feed-forward projection, so the tiny
model has massive activations (channels far above the hidden state's mean) for STAS to detect.

--full writes every file at its real size and dtype instead (tools/full_standins.py): the
diffusion models, umt5-xxl, llava-llama3, CLIP-L, CLIP vision H and the three VAEs, with random
weights. That is about 100 GB for all of them; write on a GPU machine with --device cuda and
only the names one workflow needs. It also supplies ComfyUI's Llama-3 tokenizer.json where the
ComfyUI copy lacks it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# file name -> (models subfolder, builder key, seed)
DIFFUSION = {
    "wan2.1_t2v_1.3B_fp16.safetensors": ("t2v", 1),
    "wan2.2_ti2v_5B_fp16.safetensors": ("ti2v_5b", 2),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": ("t2v", 3),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": ("t2v", 4),
    "wan2.1_i2v_480p_14B_fp16.safetensors": ("i2v", 5),
    "hunyuan_video_t2v_720p_bf16.safetensors": ("hunyuan_video", 6),
    "wan2.2_s2v_14B_fp8_scaled.safetensors": ("s2v", 10),
    # The released file is int8 "convrot"-quantized; this stand-in is the same architecture in float32, which
    # ComfyUI's UNETLoader loads the same way (detection by keys plus the file's config metadata, see build()).
    "wan_animate_2_int8_convrot.safetensors": ("animate2", 11),
}
# single-file checkpoints under checkpoints/: only the diffusion model is written (model.diffusion_model.*,
# its config in the file's metadata as in the real file); the tests stand in for the VAEs it also holds
CHECKPOINTS = {"ltx-2-19b-dev-fp8.safetensors": ("ltxav", 7)}
PLACEHOLDERS = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": "text_encoders",
    "clip_l.safetensors": "text_encoders",
    "llava_llama3_fp8_scaled.safetensors": "text_encoders",
    "wan_2.1_vae.safetensors": "vae",
    "wan2.2_vae.safetensors": "vae",
    "hunyuan_video_vae_bf16.safetensors": "vae",
    "clip_vision_h.safetensors": "clip_vision",
    "wav2vec2_large_english_fp16.safetensors": "audio_encoders",
    "Wan2_1_VAE_bf16.safetensors": "vae",
}
# LTX-2's (ComfyUI 0.8.0+)
LTX2_PLACEHOLDERS = {"gemma_3_12B_it_fp4_mixed.safetensors": "text_encoders"}
# LoRAs under loras/: LoRA name -> (the stand-in diffusion model it fits, seed); --full: tools/full_standins.py
LORAS = {
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors": ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", 8),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors": ("wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", 9),
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors": ("wan_animate_2_int8_convrot.safetensors", 12),
}
# what a ComfyUI must have to load a stand-in: builder key -> (module, class, what is missing without it)
NEEDS = {"animate2": ("comfy.ldm.wan.model_animate2", "WanAnimate2Model", "no Wan Animate 2 (0.33.0 or later)"),
         "s2v": ("comfy.ldm.wan.model", "WanModel_S2V", "no Wan 2.2 S2V")}
MA_CHANNELS = (77,)     # planted massive-activation channel (--plant-ma)
MA_GAIN = 10000.0


def missing(kind: str) -> str | None:
    """Why this ComfyUI cannot load a stand-in of ``kind`` (None when it can)."""
    import importlib
    if kind not in NEEDS:
        return None
    module, cls, why = NEEDS[kind]
    try:
        return None if hasattr(importlib.import_module(module), cls) else why
    except ImportError:
        return why


# builder key -> the file's ``config`` metadata, for a model ComfyUI detects by it (Wan Animate 2's keys are
# Wan 2.1 I2V's; its real file says model_type animate2 there)
CONFIG = {"animate2": {"transformer": {"model_type": "animate2"}}}


def _wan_class(kind: str, seed: int):
    """Tiny Wan 2.2 S2V (WanModel_S2V) / Wan Animate 2 (WanAnimate2Model), 4 blocks of width 128 (one head,
    as ComfyUI's detection reads dim // 128) like the other tiny Wans, so the 4-step LoRA stand-ins fit S2V."""
    import importlib

    from stas_harness.models import _built, load_random
    module, cls, _ = NEEDS[kind]
    ops, where = _built(False)
    kw = {"in_dim": 36} if kind == "animate2" else {}
    with where:
        dm = getattr(importlib.import_module(module), cls)(dim=128, ffn_dim=256, num_heads=1, num_layers=4,
                                                          text_dim=4096, freq_dim=256, out_dim=16, operations=ops,
                                                          **{"in_dim": 16, **kw})
    meta = {"config": json.dumps(CONFIG[kind])} if kind in CONFIG else None
    mp = load_random(dm, seed=seed, **({"metadata": meta} if meta else {}))
    want = {"s2v": "WAN22_S2V", "animate2": "WAN_Animate2"}[kind]
    assert type(mp.model).__name__ == want, f"ComfyUI detected {type(mp.model).__name__}, not {want}"
    return mp


def build(kind: str, seed: int):
    """A tiny model of ``kind`` through ComfyUI's loader; returns its diffusion model's state dict."""
    from stas_harness.models import tiny_hunyuan_video, tiny_ltxav, tiny_wan_variant
    if kind == "ltxav":
        mp = tiny_ltxav(seed=seed)
    elif kind in NEEDS:
        mp = _wan_class(kind, seed)
    else:
        mp = tiny_hunyuan_video(seed=seed) if kind == "hunyuan_video" else tiny_wan_variant(kind, seed=seed)
    return {k: v.detach().to("cpu").contiguous() for k, v in mp.model.diffusion_model.state_dict().items()}


def plant_ma(sd: dict) -> dict:
    """Make MA_CHANNELS of the residual stream massive: scale those rows of each block's last
    feed-forward (Wan ``blocks.i.ffn.2``, HunyuanVideo ``img_mlp.2`` / ``linear2``, LTX-2 video ``ff.net.2``)
    projection."""
    for k, v in sd.items():
        if k.endswith(".weight") and (".ffn.2." in k or ".img_mlp.2." in k or ".ff.net.2." in k
                                      or (k.startswith("single_blocks.") and ".linear2." in k)):
            for c in MA_CHANNELS:
                if c < v.shape[0]:
                    v[c] *= MA_GAIN
    return sd


def lora_for(sd: dict, seed: int, rank: int = 4) -> dict:
    """A small LoRA (ComfyUI's lora_up / lora_down / alpha keys) on every block's self-attention projections
    of the diffusion model whose state dict is ``sd``."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if ".self_attn." in k and k.endswith(".weight") and v.dim() == 2:
            mod = "diffusion_model." + k[: -len(".weight")]
            out[mod + ".lora_up.weight"] = torch.randn(v.shape[0], rank, generator=g) * 0.05
            out[mod + ".lora_down.weight"] = torch.randn(rank, v.shape[1], generator=g) * 0.05
            out[mod + ".alpha"] = torch.tensor(float(rank))
    return out


def write_full(src: Path, models: Path, names: list[str], device: str, ma_gain: float) -> list[Path]:
    """Full-size stand-ins (tools/full_standins.py), each from its own fixed seed."""
    from tools import full_standins as fs
    unknown = [n for n in names if n not in fs.SPECS]
    if unknown:
        raise SystemExit(f"unknown stand-in {unknown}; known: {sorted(fs.SPECS)}")
    tok = fs.ensure_llama_tokenizer(src)
    if tok:
        print(f"wrote {tok} (stand-in: this ComfyUI copy has no Llama-3 tokenizer.json)")
    seeds = {n: i + 1 for i, n in enumerate(fs.SPECS)}
    return [fs.write(models, n, seed=seeds[n], device=device, ma_gain=ma_gain) for n in names]


def write(models: Path, names: list[str], plant: bool) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    from stas_harness.models import LTXAV_TINY, has_ltxav
    diffusion, loras = DIFFUSION, LORAS
    placeholders = {**PLACEHOLDERS, **LTX2_PLACEHOLDERS}
    out = []
    for name in names:
        meta = {"comfyui_stas": "random-weight stand-in, not a real model"}
        if name in CHECKPOINTS and not has_ltxav():
            print(f"skipped {name}: this ComfyUI has no LTX-2", flush=True)
            continue
        kind = (diffusion.get(name) or diffusion.get(loras.get(name, ("",))[0]) or ("",))[0]
        if missing(kind):
            print(f"skipped {name}: this ComfyUI has {missing(kind)}", flush=True)
            continue
        if name in diffusion or name in CHECKPOINTS:
            kind, seed = (diffusion if name in diffusion else CHECKPOINTS)[name]
            sd = build(kind, seed)
            if plant:
                sd = plant_ma(sd)
            path = models / "diffusion_models" / name
            if kind in CONFIG:
                meta["config"] = json.dumps(CONFIG[kind])
            if name in CHECKPOINTS:
                sd = {"model.diffusion_model." + k: v for k, v in sd.items()}
                meta["config"] = json.dumps({"transformer": {**LTXAV_TINY, "num_layers": 2}})
                path = models / "checkpoints" / name
        elif name in loras:
            sd = lora_for(build(*diffusion[loras[name][0]]), loras[name][1])
            path = models / "loras" / name
        elif name in placeholders:
            sd = {"comfyui_stas_placeholder": torch.zeros(1)}
            path = models / placeholders[name] / name
        else:
            raise SystemExit(f"unknown stand-in {name!r}; known: "
                             f"{sorted([*diffusion, *CHECKPOINTS, *placeholders, *loras])}")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(sd, str(path), metadata=meta)
        out.append(path)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, type=Path, help="ComfyUI checkout (its classes build the models)")
    ap.add_argument("--models", required=True, type=Path, help="models folder to write into (diffusion_models/, vae/, ...)")
    ap.add_argument("--plant-ma", action="store_true", help="give the diffusion models massive-activation channels")
    ap.add_argument("--full", action="store_true", help="real architectures at full size (GPU machine)")
    ap.add_argument("--device", default="cpu", help="with --full: where random tensors are drawn (cuda is faster)")
    ap.add_argument("--ma-gain", type=float, default=0.0,
                    help="with --full: scale planted massive-activation channel 77 by this (0 = none)")
    ap.add_argument("names", nargs="*", help="file names to write (default: all)")
    a = ap.parse_args(argv)
    from stas_harness.comfy_env import import_comfyui
    import_comfyui(a.comfyui.resolve(), cpu=a.device == "cpu")
    if a.full:
        written = write_full(a.comfyui.resolve(), a.models, a.names or [*DIFFUSION, *PLACEHOLDERS], a.device, a.ma_gain)
    else:
        written = write(a.models, a.names or [*DIFFUSION, *PLACEHOLDERS, *CHECKPOINTS, *LTX2_PLACEHOLDERS, *LORAS],
                        a.plant_ma)
    for p in written:
        print(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    import _repo  # noqa: F401  (run as a script: the repository root on sys.path, for stas_harness)
    raise SystemExit(main())
