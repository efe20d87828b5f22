#!/usr/bin/env python3
"""STAS under sequence parallelism (issues 21 and 22): exactness and cost.

  op    one GPU: the cost of one steered block call of Wan 2.1 1.3B at 480x832x81 (32,760 tokens, CFG
        batch 2, hidden 1536, bf16) on one GPU (steer_fast, as STAS Model Patch runs it) against the
        sequence-parallel path on one rank's slice for 2 and 4 ranks (stas_core.shard.steer_shard_),
        its all-reduce real but on a one-rank NCCL group (the emulation the issue asks for): a
        steering call and a detecting call, and the all-reduce alone.
  usp   N GPUs (--world, NCCL; one spawned process per GPU): the same Wan with random bf16 weights and
        two planted massive-activation channels, sequence parallel by raylight's own USP forward
        (--forward raylight, the default: raylight's source from --raylight, $STAS_RAYLIGHT_SRC or
        ../shared/thirdparty/; xfuser's Ulysses attention replaced by exact attention over all-gathered
        keys and values, stas_harness/raylight.py) or through public ComfyUI hooks (--forward hooks,
        stas_harness/usp.py); STAS installed on every rank by STAS Model Patch (Ray)'s worker function.
        1. exactness: rank 0 also samples on one GPU; max |diff| of USP unpatched vs one GPU
           unpatched (what sequence parallelism alone changes) and of USP STAS vs one-GPU STAS;
        2. seconds per step, interleaved round by round: USP unpatched (twice: the A/A pair),
           USP + STAS default, USP + STAS on all blocks at every step.

Usage (ComfyUI source at $COMFYUI_PATH or --comfyui; see bench/prepare_offline.sh):
  python3 bench/bench_usp.py --sections op                 # one GPU
  python3 bench/bench_usp.py --sections usp --world 2 --raylight raylight-c049571.tar.gz   # two GPUs
CPU smoke test (gloo ranks, tiny Wan):
  python3 bench/bench_usp.py --device cpu --tiny --sections op,usp --world 2
Writes bench_usp.json and bench_usp.txt under --out (default $OUT, else bench/out/).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _repo import ROOT  # noqa: F401  (first: the repository root on sys.path)

from stas_harness.ranks import run_ranks

MA = (7, 100)   # planted massive-activation channels (residual-stream biases of every block)


def comfy_src(arg):
    src = arg or os.environ.get("COMFYUI_PATH")
    if not src or not (Path(src) / "comfy" / "model_patcher.py").exists():
        sys.exit("bench_usp: give --comfyui or set COMFYUI_PATH to a ComfyUI checkout")
    return str(Path(src).resolve())


def sizes(tiny):
    """(dim, ffn, heads, blocks, latent [B, C, T, H, W], text tokens)"""
    if tiny:
        return 128, 256, 2, 4, (1, 16, 3, 6, 10), 8
    return 1536, 8960, 12, 30, (1, 16, 21, 60, 104), 512


# -- op: one GPU ----------------------------------------------------------------------------------

def op_rank(rank, world, device, tiny, iters):
    import torch
    from stas_core import shard as S
    from stas_core import steer_fast as fast
    from stas_core.layout import BoundarySpec, steer_token_indices

    dev = torch.device(device if device == "cpu" else f"cuda:{rank}")
    grid = (3, 3, 5) if tiny else (21, 30, 52)
    d = 128 if tiny else 1536
    b, n = 2, grid[0] * grid[1] * grid[2]
    g = torch.Generator(device=dev).manual_seed(0)
    h = torch.randn(b, n, d, generator=g, device=dev).to(torch.bfloat16)
    h[:, :, MA[0]] += 300.0
    h[:, :, MA[1]] -= 200.0
    tok = steer_token_indices(grid, BoundarySpec())
    backend = fast.backend_for(dev)

    def call(detect):
        chans = torch.zeros(1, 64, dtype=torch.long, device=dev)
        chans[0, :2] = torch.tensor(MA)
        valid = torch.zeros(1, 64, dtype=torch.bool, device=dev)
        valid[0, :2] = not detect
        need = torch.full((1,), int(detect), dtype=torch.int32, device=dev)
        p = fast.StepParams(1.0, 0.0, 2.0, 50.0, detect, 0, n, tok.numel(), 4)
        return fast.SteerCall(chans, valid, need, tok.to(dev), torch.tensor([1.0, 0.0], device=dev),
                              torch.full((1,), 1.0, device=dev), p.pack()), p

    def timed(fn):
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
            for a, z in ev:
                a.record()
                fn()
                z.record()
            torch.cuda.synchronize(dev)
            return statistics.median(a.elapsed_time(z) for a, z in ev)
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(out)

    rows = []
    for detect in (False, True):
        c, p = call(detect)
        x = h.clone()

        def one():
            c.need.fill_(int(detect))
            fast.steer_block_(x, c, 0, 0)
        rows.append((f"one device ({backend.name}), {'detect + steer' if detect else 'steer'}", timed(one)))
        for w in (2, 4):
            sh = S.Shard(None, 0, w)   # rank 0 of w: the slice holding the first frame; one-rank group
            part = x[:, :-(-n // w)].clone()

            def sharded():
                c.need.fill_(int(detect))
                S.steer_shard_(part, sh, c, p, 0, 0, key=grid)
            rows.append((f"{w} ranks, one rank's slice, {'detect + steer' if detect else 'steer'}", timed(sharded)))
    m = torch.zeros(b, 4, device=dev)
    rows.append(("all-reduce MAX of [2, 4] float32 alone (one-rank group)",
                 timed(lambda: torch.distributed.all_reduce(m, op=torch.distributed.ReduceOp.MAX))))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    return dict(rows=rows, backend=backend.name, device=name, tokens=n, hidden=d)


# -- usp: N GPUs ----------------------------------------------------------------------------------

def usp_rank(rank, world, src, device, tiny, steps, rounds, raylight_src):
    import torch
    import torch.distributed as dist

    from stas_harness import comfy_env
    from stas_harness.models import random_state_dict, wan_module
    from stas_harness.ranks import install_xfuser_standin
    from stas_harness.usp import WanUSP

    comfy_env.import_comfyui(src, cpu=device == "cpu")
    if device != "cpu":
        torch.cuda.set_device(rank)
    install_xfuser_standin()
    pack = comfy_env.load_pack()
    rp = comfy_env.pack_module("nodes.ray_patch")
    dim, ffn, heads, blocks, shape, ctx_len = sizes(tiny)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    dev = "cpu" if device == "cpu" else f"cuda:{rank}"

    def make_model():
        module = wan_module(num_layers=blocks, dim=dim, ffn_dim=ffn, num_heads=heads, meta=True)
        sd = random_state_dict(module, seed=0, dtype=dtype, device=dev)
        for i in range(blocks):  # two massive-activation channels in the residual stream (cross-attention's
            sd[f"blocks.{i}.cross_attn.o.bias"][MA[0]] += 40.0  # output is added ungated)
            sd[f"blocks.{i}.cross_attn.o.bias"][MA[1]] -= 30.0
        return _load_sd(sd, dtype)

    model = make_model()  # one GPU (rank 0's reference)
    latent = torch.zeros(shape)
    pos, neg = comfy_env.text_cond(ctx_len, seed=1), comfy_env.text_cond(ctx_len, seed=2)
    settings = dict(alpha=1.0, blend=1.0, blocks="middle", channels="auto", threshold=50.0, top_k=4,
                    start_percent=0.0, end_percent=0.4, apply_to="cond", mask=None, profile=None)
    if raylight_src:  # raylight's own USP forward, its attention exact over gathered keys and values
        from stas_harness.raylight import Attention, unpack, usp_registry
        attention = Attention()
        registry = usp_registry(unpack(Path(raylight_src), Path(tempfile.mkdtemp())), attention)
        base = make_model()
        registry.inject(base, None, None, None, None)
        attention.length = shape[2] * (shape[3] // 2) * (shape[4] // 2)
        install = lambda m: m  # noqa: E731
        how = "raylight's USP forward"
    else:
        base, usp = model, WanUSP(blocks, world, rank)
        install = usp.install
        how = "USP through ComfyUI's hooks (stas_harness/usp.py)"
    variants = [("USP unpatched", base), ("USP unpatched (A/A)", base),
                ("USP + STAS default", rp.patch_on_worker(base, settings)),
                ("USP + STAS all blocks, every step", rp.patch_on_worker(base, {**settings, "blocks": "all",
                                                                                "end_percent": 1.0}))]
    variants = [(name, install(m)) for name, m in variants]

    def run(m, n_steps):
        if device != "cpu":
            torch.cuda.synchronize()
        dist.barrier()
        t0 = time.perf_counter()
        out = comfy_env.sample(m, latent, steps=n_steps, cfg=5.0, positive=pos, negative=neg)
        if device != "cpu":
            torch.cuda.synchronize()
        return out, (time.perf_counter() - t0) / n_steps

    res = {"exact": {}}
    outs = {name: run(m, steps)[0] for name, m in variants if "A/A" not in name and "all" not in name}
    if rank == 0:  # one GPU, the same weights and noise
        one = comfy_env.sample(model, latent, steps=steps, cfg=5.0, positive=pos, negative=neg)
        one_stas = comfy_env.sample(comfy_env.stas(model, **{k: v for k, v in settings.items()}), latent, steps=steps,
                                    cfg=5.0, positive=pos, negative=neg)
        res["exact"] = {
            "USP unpatched vs one GPU unpatched": float((outs["USP unpatched"] - one).abs().max()),
            "USP + STAS default vs one-GPU STAS default": float((outs["USP + STAS default"] - one_stas).abs().max()),
            "one-GPU STAS vs one GPU unpatched (what STAS changes; 0 would mean nothing was steered)":
                float((one_stas - one).abs().max()),
        }
    dist.barrier()
    times = {name: [] for name, _ in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, m in order:
            times[name].append(run(m, steps)[1])
    base = statistics.median(times["USP unpatched"])
    res["rows"] = [(name, statistics.median(t), statistics.median(t) / base, (max(t) - min(t)) / statistics.median(t))
                   for name, t in times.items()]
    res["device"] = torch.cuda.get_device_name(rank) if device != "cpu" else "CPU"
    res["title"] = (f"{how}, Wan {'tiny' if tiny else '2.1 1.3B'} (dim {dim}, {blocks} blocks), latent {list(shape)}, "
                    f"{world} ranks, {steps} euler steps, cfg 5, {rounds} rounds, {str(dtype).replace('torch.', '')}")
    del pack
    return res if rank == 0 else None


def _load_sd(sd, dtype):
    import comfy.sd
    mp = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"dtype": dtype})
    assert mp is not None
    return mp


def table(title, header, rows):
    out = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r) + " |")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="op,usp")
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--comfyui")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--forward", default="raylight", choices=["raylight", "hooks"],
                    help="raylight: raylight's own USP forward (its source: --raylight, $STAS_RAYLIGHT_SRC or "
                         "../shared/thirdparty/raylight-*.tar.gz); hooks: stas_harness/usp.py")
    ap.add_argument("--raylight", help="raylight's source archive or checkout")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(Path(__file__).parent / "out"))
    a = ap.parse_args()
    backend = "gloo" if a.device == "cpu" else "nccl"
    sections = a.sections.split(",")
    text, data = [], {"argv": sys.argv[1:]}
    if "op" in sections:
        r = run_ranks(1, op_rank, a.device, a.tiny, a.iters or (3 if a.tiny else 200), backend=backend)[0]
        data["op"] = r
        text.append(table(f"One steered block call, {r['tokens']} tokens, hidden {r['hidden']}, batch 2 (CFG), bf16, "
                          f"{r['backend']} backend ({r['device']})", ["variant", "ms (median)"], r["rows"]))
    if "usp" in sections:
        src = comfy_src(a.comfyui)
        ray_src = None
        if a.forward == "raylight":
            from stas_harness.raylight import source
            ray_src = a.raylight or source()
            if ray_src is None or not Path(ray_src).exists():
                sys.exit("bench_usp: raylight's source not found: give --raylight (archive or checkout) or "
                         "--forward hooks")
        r = run_ranks(a.world, usp_rank, src, a.device, a.tiny, a.steps or (2 if a.tiny else 4),
                      a.rounds or (1 if a.tiny else 3), str(ray_src) if ray_src else None, backend=backend,
                      timeout=3600)[0]
        data["usp"] = r
        text.append(table(f"Exactness: {r['title']} ({r['device']})", ["comparison", "max |diff|"],
                          list(r["exact"].items())))
        text.append(table(f"Seconds per step, interleaved: {r['title']} ({r['device']})",
                          ["variant", "s / step (median)", "ratio to USP unpatched", "spread (max-min)/median"],
                          r["rows"]))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_usp.json").write_text(json.dumps(data, indent=1))
    (out / "bench_usp.txt").write_text("\n".join(text))
    print("\n".join(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
