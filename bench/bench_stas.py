#!/usr/bin/env python3
"""STAS benchmark: what steering costs at the sizes people render.

Builds the real architectures from ComfyUI's own classes with random weights, loads them
through ComfyUI's own loader, runs them through ComfyUI's own sampler with this pack's nodes
(loaded the way ComfyUI loads custom nodes), and measures side by side in ONE process,
interleaved round by round:

  op       the steering op alone, with CUDA events: the straightforward torch version
           (steer.steer_) against the gated torch fallback and the Triton kernels, at Wan 2.1
           1.3B 480x832x81 (32,760 video tokens, CFG batch 2, hidden 1536), Wan 14B 720p,
           HunyuanVideo 720p, LTX-2 video stream (720p, 1080p) and Kandinsky 5 (Lite 512p, Pro
           768p) dims, each also as a ratio to Wan 14B; bit-exactness, temporaries and host syncs
           checked too.
  e2e      seconds per denoising step of Wan 2.1 1.3B at 480x832x81: unpatched (twice: the
           A/A pair shows the noise floor) vs STAS Model Patch at its defaults vs STAS on all
           blocks at every step vs the MA Recorder at its defaults; peak memory of each.
  mem14b   peak memory of the same variants at Wan 14B dims, 720x1280x81 (one step each).
  compile  ComfyUI's own TorchCompileModel node (inductor): unpatched vs STAS default,
           recompiles after the first step, graph breaks, compiled seconds per step.
  compile_settings  one compiled model under STAS settings changed from run to run (alpha,
           window, mask, apply_to, channels, auto detection, blocks): graphs compiled after run 1,
           and whether each change moves the compiled result as it moves the eager one.
  harden   the Triton path with NaN/Inf activations, an invalid far out-of-range table entry,
           strided inputs, and h on another GPU than the current one (2 GPUs).
  hunyuan  HunyuanVideo dims (hidden 3072) end to end at a size that fits, fewer blocks.
  families one table per video family, bf16, real widths and token counts, fewer blocks (named in
           each title): Wan 2.1 1.3B, Wan 2.2 TI2V 5B, HunyuanVideo 1.5, Kandinsky 5 Lite, Mochi 1,
           CogVideoX 1.5 5B, LTX-2 (video + audio); the e2e variants, s / step and peak memory each
           (--families picks some; a family this ComfyUI lacks, or that fails, is logged and skipped).
  gguf     the e2e variants on Wan 2.1 1.3B written as Q8_0 GGUF, loaded by ComfyUI-GGUF (in
           <comfyui>/custom_nodes; needs the gguf package), dequantized on the GPU.
  sweep    STAS Sweep at its defaults on Wan 2.1 1.3B at a 272x480x33 preview against the same renders
           made one by one (sample + decode), interleaved: time ratio and peak memory.

Usage (GPU; ComfyUI source at $COMFYUI_PATH or --comfyui):
  python3 bench/bench_stas.py --sections op,e2e,mem14b
  python3 bench/bench_stas.py --sections compile
  python3 bench/bench_stas.py --sections op,compile,compile_settings,harden
  python3 bench/bench_stas.py --sections families --steps 3 --rounds 3
CPU smoke test at a tiny size (what CI-like machines can run):
  python3 bench/bench_stas.py --device cpu --tiny

Prints a markdown table naming the card at the end; writes bench.json and bench.txt under
--out (default $OUT, else bench/out/).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

from _repo import ROOT as REPO  # first: the repository root on sys.path (bench/_repo.py)

from stas_harness.comfy_env import comfy_version, import_comfyui, load_pack, run_node, sample, text_cond
from stas_harness.models import hunyuan_video as build_hunyuan, wan as build_wan


# -- output ------------------------------------------------------------------------------------

class Report:
    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.txt = open(out_dir / "bench.txt", "a", buffering=1)
        self.data = {"sections": {}}
        self.tables = []

    def log(self, *a):
        line = " ".join(str(x) for x in a)
        print(line, flush=True)
        self.txt.write(line + "\n")

    def table(self, title, header, rows):
        self.tables.append((title, header, rows))
        self.log(render_table(title, header, rows))

    def save(self):
        with open(self.out_dir / "bench.json", "w") as f:
            json.dump(self.data, f, indent=1, default=str)


def render_table(title, header, rows):
    out = [f"\n### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


# -- ComfyUI and the pack ------------------------------------------------------------------------

def load_comfy(path: str, device: str, pack_dir: Path = REPO):
    """Import ComfyUI from ``path`` and load the pack at ``pack_dir`` with ComfyUI's own custom-node loader."""
    if not path or not (Path(path) / "comfy" / "model_patcher.py").exists():
        sys.exit(f"bench: ComfyUI source not found at {path!r}; pass --comfyui or set COMFYUI_PATH.")
    # on the CPU, sub-quadratic attention reads psutil (a graph break): use PyTorch's
    import_comfyui(path, cpu=device == "cpu", **({"use_pytorch_cross_attention": True} if device == "cpu" else {}))
    try:
        pack = load_pack(pack_dir)
    except AssertionError:
        sys.exit("bench: ComfyUI failed to load the pack (see its log above).")
    return pack, comfy_version()


def pack_module(pack, name):
    import importlib
    return importlib.import_module(f"{pack.__name__}.{name}")


# node_defaults / run_node (a node at its declared defaults), the model builders (build_wan, build_hunyuan:
# random weights from ComfyUI's own classes through its own loader), text_cond and sample come from
# stas_harness, shared with the tests.


# -- timing helpers -----------------------------------------------------------------------------------

def sync(device):
    import torch
    if device == "cuda":
        torch.cuda.synchronize()


def fmt_us(ms):
    return "n/a" if ms is None else f"{ms * 1000:.1f}"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def card_name(device):
    import torch
    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs)"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)"


# -- section: the op alone ----------------------------------------------------------------------------

def op_cases(tiny):
    if tiny:
        return [("tiny Wan (2x4x6 grid, D=128)", (2, 4, 6), 128, 0),
                ("tiny LTX-2 video stream (2x3x5 grid, D=256)", (2, 3, 5), 256, 0)]
    return [
        ("Wan 2.1 1.3B 480x832x81", (21, 30, 52), 1536, 0),
        ("Wan 14B 720x1280x81", (21, 45, 80), 5120, 0),
        ("HunyuanVideo 720x1280x129 single block", (33, 45, 80), 3072, 256),
        # LTX-2 19B video stream (inner dim 4096; VAE 8x time, 32x space, patch 1), 121 frames
        ("LTX-2 video stream 1280x704x121", (16, 22, 40), 4096, 0),
        ("LTX-2 video stream 1920x1088x121", (16, 34, 60), 4096, 0),
        # Kandinsky 5 video (HunyuanVideo VAE 4x time, 8x space; patch 1x2x2), 121 frames
        ("Kandinsky 5 Lite 768x512x121", (31, 32, 48), 1792, 0),
        ("Kandinsky 5 Pro 1280x768x121", (31, 48, 80), 4096, 0),
        # Wan 2.2 Animate 14B: the reference image is latent frame 0 (3,600 tokens before the video), 77 frames
        ("Wan 2.2 Animate 14B 720x1280x77 (+ reference frame)", (20, 45, 80), 5120, 3600),
        # MiniMax H3: its width 5376 on a 720p grid, 1,024 text / cond / audio tokens before
        ("width 5376 (MiniMax H3) 720x1280x81 grid, 1,024 tokens before", (21, 45, 80), 5376, 1024),
    ]


def op_reference(tiny):
    """The op case the others are compared with (issue 20: LTX-2 and Kandinsky 5 within 1.5x of it)."""
    return op_cases(tiny)[0 if tiny else 1]


def ratio_rows(iso, cases, ref):
    """Each case's isolated time over the reference case's, per dtype and variant (and per video token)."""
    rows = []
    n_ref = math.prod(ref[1])
    for (case, dname, name), t in iso.items():
        t_ref = iso.get((ref[0], dname, name))
        if case == ref[0] or t_ref is None or not t_ref:
            continue
        n = math.prod(cases[case])
        r = t / t_ref
        rows.append([case, dname, name, fmt_us(t), fmt_us(t_ref), f"{r:.2f}x", f"{r * n_ref / n:.2f}x",
                     "yes" if r <= 1.5 else "NO"])
    return rows


def time_isolated(fn, device, n):
    """Median of n single calls, GPU idle before each: launch latency + GPU time."""
    import torch
    if device != "cuda":
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1000)
        return median(ts)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(n):
        torch.cuda.synchronize()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1))
    return median(ts)


def time_back_to_back(fn, device, n):
    """Mean of n calls issued back to back: host submission cost where it exceeds GPU time."""
    import torch
    if device != "cuda":
        return None
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    e0.record()
    for _ in range(n):
        fn()
    e1.record()
    e1.synchronize()
    return e0.elapsed_time(e1) / n


def time_graph(fn, device, n=20, reps=20):
    """GPU time per call: n calls captured in a CUDA graph, replays timed (what a block costs
    inside a sampling step, where the host runs ahead of the GPU)."""
    import torch
    if device != "cuda":
        return None
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            fn()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                fn()
        g.replay()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(reps):
            e0.record()
            g.replay()
            e1.record()
            e1.synchronize()
            ts.append(e0.elapsed_time(e1) / n)
        return median(ts)
    except Exception as e:  # noqa: BLE001
        return f"n/a ({type(e).__name__})"


def extra_bytes(fn, device):
    """Peak bytes allocated during one call above what was allocated before it."""
    import torch
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def syncs(fn, device):
    """'none' if fn runs under torch.cuda.set_sync_debug_mode('error'), else the error."""
    import torch
    if device != "cuda":
        return "n/a"
    torch.cuda.synchronize()
    try:
        torch.cuda.set_sync_debug_mode("error")
        fn()
        return "none"
    except Exception as e:  # noqa: BLE001
        return f"SYNC ({str(e).splitlines()[0][:60]})"
    finally:
        torch.cuda.set_sync_debug_mode("default")


def mkcall(fast, chans, valid, need, tok, blend, sigma, *, prefix, n_visual, alpha=1.0, lo=None, hi=None,
           threshold=50.0, detect=False, n_chans=None):
    """A SteerCall as the patch builds one (a window that holds every sigma unless lo/hi are given)."""
    import torch
    big = float(torch.finfo(torch.float32).max)
    lo = -big if lo is None else lo
    hi = big if hi is None else hi
    p = fast.StepParams(alpha, lo, hi, threshold, detect, prefix, n_visual, tok.numel(),
                        chans.shape[-1] if n_chans is None else n_chans)
    return fast.SteerCall(chans, valid, need, tok, blend, sigma, p.pack())


def section_op(rep, pack, device, tiny, dtype_names, only=None):
    import torch
    core = lambda name: pack_module(pack, f"stas_core.{name}")  # noqa: E731
    layout, steer_mod, fast, channels = core("layout"), core("steer"), core("steer_fast"), core("channels")
    tk = fast._triton_module() if device == "cuda" else None
    rows, checks, iso_of = [], [], {}
    n_iso, n_b2b = (5, 5) if tiny else (200, 200)
    ref_case = op_reference(tiny)[0]
    for case, grid, D, prefix in op_cases(tiny):
        if only and case != ref_case and not any(o.lower() in case.lower() for o in only):
            continue
        for dname in dtype_names:
            dtype = getattr(torch, dname)
            B = 2
            N = grid[0] * grid[1] * grid[2]
            L = N + prefix
            g = torch.Generator(device=device).manual_seed(0)
            h = torch.randn(B, L, D, generator=g, device=device, dtype=torch.float32)
            ma = [7, D // 3, D // 2 + 1, D - 5]
            h[:, prefix:, ma] *= 60.0
            h = h.to(dtype)
            tok = layout.steer_token_indices(grid, layout.BoundarySpec()).to(device)
            chans = torch.tensor([ma], dtype=torch.long, device=device)
            valid = torch.ones(1, 4, dtype=torch.bool, device=device)
            need = torch.zeros(1, dtype=torch.int32, device=device)
            need_auto = torch.ones(1, dtype=torch.int32, device=device)
            chans_auto = torch.zeros(1, 4, dtype=torch.long, device=device)
            valid_auto = torch.zeros(1, 4, dtype=torch.bool, device=device)
            blend = torch.tensor([1.0, 0.0], device=device)
            sigma = torch.tensor([1.0, 1.0], device=device)
            rows_t = torch.tensor([0], device=device)
            ch0 = chans[0]
            fixed = mkcall(fast, chans, valid, need, tok, blend, sigma, prefix=prefix, n_visual=N)
            auto = mkcall(fast, chans_auto, valid_auto, need, tok, blend, sigma, prefix=prefix, n_visual=N,
                          detect=True)
            detecting = mkcall(fast, chans_auto, valid_auto, need_auto, tok, blend, sigma, prefix=prefix,
                               n_visual=N, detect=True)
            outside = mkcall(fast, chans, valid, need, tok, blend, sigma, prefix=prefix, n_visual=N,
                             lo=2.0, hi=3.0)  # a window this sigma is outside of
            variants = [
                ("steer_ (straightforward torch)",
                 lambda: steer_mod.steer_(h, prefix, N, tok, ch0, 1.0, 1.0, samples=rows_t)),
                ("gated torch fallback",
                 lambda: fast.steer_torch_(fast.view_of(h, fixed, fast.StepParams.unpack(fixed.params), 0, 0))),
            ]
            if tk is not None:
                def first_call():
                    need_auto.fill_(1)
                    fast.steer_block_(h, detecting, 0)
                variants += [
                    ("Triton, fixed channels (steer_block_)", lambda: fast.steer_block_(h, fixed, 0)),
                    ("Triton, auto channels, after detection", lambda: fast.steer_block_(h, auto, 0)),
                    ("Triton, auto channels, detecting (1st call; incl. a 1-value fill)", first_call),
                    ("Triton, outside the sigma window", lambda: fast.steer_block_(h, outside, 0)),
                ]
                if fast._OP is not None:
                    variants.append(("custom op (compiled path), fixed channels",
                                     lambda: fast._OP(h, fixed.chans, fixed.valid, fixed.need, fixed.token_idx,
                                                      fixed.blend, fixed.sigma, fixed.params, 0, 0)))
            for name, fn in variants:
                for _ in range(3):
                    fn()
                sync(device)
                iso = iso_of[(case, dname, name)] = time_isolated(fn, device, n_iso)
                b2b = time_back_to_back(fn, device, n_b2b)
                gr = time_graph(fn, device) if not tiny else None
                xb = extra_bytes(fn, device)
                sy = syncs(fn, device)
                rows.append([case, dname, name, fmt_us(iso), fmt_us(b2b),
                             gr if isinstance(gr, str) else fmt_us(gr),
                             "n/a" if xb is None else f"{xb / 2**20:.2f}", sy])
            hs_mb = B * L * D * h.element_size() / 2**20
            rep.log(f"[op] {case} {dname}: hidden state {hs_mb:.0f} MiB, {tok.numel()} steered tokens x 4 channels")
            checks += check_op(rep, fast, steer_mod, channels, tk, h, prefix, N, tok, device, dtype, f"{case} {dname}")
            del h
            gc.collect()
            if device == "cuda":
                torch.cuda.empty_cache()
    rep.table(f"Steering op alone, per steered block call (microseconds; {card_name(device)})",
              ["size", "dtype", "variant", "isolated (us)", "back-to-back (us)", "GPU time, graph (us)",
               "temporaries (MiB)", "host syncs"], rows)
    rep.table("Fast path = straightforward op (fresh random inputs)", ["case", "check", "result"], checks)
    ref = op_reference(tiny)
    ratios = ratio_rows(iso_of, {c[0]: c[1] for c in op_cases(tiny)}, ref)
    rep.table(f"Each size against {ref[0]} (isolated time; per token: divided by the ratio of video tokens)",
              ["size", "dtype", "variant", "isolated (us)", "reference (us)", "ratio", "ratio per token",
               "within 1.5x"], ratios)
    rep.data["sections"]["op"] = {"rows": rows, "checks": checks, "ratios": ratios}


def check_op(rep, fast, steer_mod, channels, tk, h0, prefix, N, tok, device, dtype, case):
    """Bit-exactness of the Triton path (or the fallback on CPU) against steer.steer_."""
    import torch
    out = []
    g = torch.Generator(device=device).manual_seed(1)
    B, L, D = h0.shape
    h = (torch.randn(B, L, D, generator=g, device=device) * 3).to(dtype)
    chans = torch.tensor([[1, D // 4, D // 2, D - 1]], device=device)
    valid = torch.tensor([[True, True, False, True]], device=device)
    need = torch.zeros(1, dtype=torch.int32, device=device)
    for lam, rl in ((1.0, [1.0, 0.0]), (0.5, [0.5, 0.5]), (0.37, [0.37, 0.0])):
        ref = h.clone()
        rows = torch.tensor([i for i, v in enumerate(rl) if v], device=device)
        steer_mod.steer_(ref, prefix, N, tok, chans[0], 1.3, lam, samples=rows, valid=valid[0])
        got = h.clone()
        fast.steer_block_(got, mkcall(fast, chans, valid, need, tok, torch.tensor(rl, device=device),
                                      torch.tensor([0.5], device=device), prefix=prefix, n_visual=N, alpha=1.3), 0)
        same = torch.equal(got, ref)
        d = (got.float() - ref.float()).abs().max().item()
        out.append([case, f"steer, blend {lam}", "bit-identical" if same else f"max |diff| {d:.3g}"])
    # detection on planted massive activations
    hp = h.clone()
    hp[:, prefix:, [5, D // 3]] *= 200.0
    ch = torch.zeros(1, 4, dtype=torch.long, device=device)
    ok = torch.zeros(1, 4, dtype=torch.bool, device=device)
    nd = torch.ones(1, dtype=torch.int32, device=device)
    fast.steer_block_(hp.clone(), mkcall(fast, ch, ok, nd, tok, torch.tensor([1.0, 0.0], device=device),
                                  torch.tensor([0.5], device=device), prefix=prefix, n_visual=N, detect=True), 0)
    idx, v, _ = channels.detect_ma_channels(hp.narrow(1, prefix, N), 50.0, 4)
    same = ch[0].tolist() == idx.tolist() and ok[0].tolist() == v.tolist() and nd.item() == 0
    out.append([case, "auto detection", "same channels" if same else f"{ch[0].tolist()} vs {idx.tolist()}"])
    for r in out:
        rep.log("[check]", *r)
    return out


def section_launch(rep, device):
    """Host cost of one launch on this machine: an empty Triton kernel, and a small torch op."""
    import torch
    if device != "cuda":
        rep.log("[launch] needs CUDA")
        return
    import triton
    import triton.language as tl

    @triton.jit
    def _one(x_ptr):
        tl.store(x_ptr, tl.load(x_ptr) + 1.0)

    @triton.jit
    def _many(a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s, t, BLOCK: tl.constexpr):
        tl.store(a, tl.load(a) + b + c + d + e + f + g + h + i + j + k + l + m + n + o + p + q + r + s + t)

    x = torch.zeros(16, device="cuda")
    ints = list(range(3, 22))
    cases = [("empty Triton kernel, 1 pointer arg", lambda: _one[(1,)](x)),
             ("empty Triton kernel, 1 pointer + 19 int args", lambda: _many[(1,)](x, *ints, BLOCK=16)),
             ("torch x.add_(1) (one eager op)", lambda: x.add_(1.0)),
             ("torch.empty(1024) (caching allocator)", lambda: torch.empty(1024, device="cuda"))]
    rows = []
    for name, fn in cases:
        for _ in range(5):
            fn()
        rows.append([name, fmt_us(time_isolated(fn, device, 300)), fmt_us(time_back_to_back(fn, device, 300))])
    rep.table(f"Host cost of one launch ({card_name(device)})", ["what", "isolated (us)", "back-to-back (us)"], rows)
    rep.data["sections"]["launch"] = rows


# -- section: one block call as the sampler makes it -------------------------------------------------

def section_block(rep, pack, device, tiny, dtype_names):
    """Host and GPU time of one steered block call from the block patch to the kernels, with the
    context the APPLY_MODEL wrapper builds (Wan 2.1 1.3B 480x832x81, batch 2: cond steered).
    Works with any checkout of the pack (--pack): it uses only the node and what it installs."""
    import torch
    import comfy.patcher_extension as pe
    smp = pack_module(pack, "nodes.stas_model_patch").StasModelPatch
    patching = pack_module(pack, "nodes.patching")
    D, layers, heads, lat = (128, 4, 2, (3, 8, 12)) if tiny else (1536, 30, 12, (21, 60, 104))
    grid = (lat[0], lat[1] // 2, lat[2] // 2)
    N = grid[0] * grid[1] * grid[2]
    rows = []
    for dname in dtype_names:
        dtype = getattr(torch, dname)
        base = build_wan(D, 256, heads, layers, dtype, device)
        ms = base.get_model_object("model_sampling")
        blk = 1 if tiny else 15
        variants = [("fixed channels", dict(blocks=str(blk), channels=f"7,{D // 3},{D // 2 + 1},{D - 5}")),
                    ("auto channels, after detection", dict(blocks=str(blk))),
                    ("outside the window", dict(blocks=str(blk), start_percent=0.5, end_percent=0.6))]
        for name, kw in variants:
            m = run_node(smp, base, **kw)[0]
            key, (wrapper,) = next((k, w) for k, w in m.wrappers[pe.WrappersMP.APPLY_MODEL].items()
                                   if k.startswith("comfyui-stas."))
            patch = m.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", blk)]
            g = torch.Generator(device=device).manual_seed(0)
            h = torch.randn(2, N, D, generator=g, device=device, dtype=torch.float32)
            h[:, :, [7, D // 3, D // 2 + 1, D - 5]] *= 60.0
            h = h.to(dtype)
            out = {"img": h}
            x = torch.zeros(2, 16, *lat, device=device, dtype=dtype)
            t = torch.full((2,), float(ms.percent_to_sigma(0.1)), device=device)
            run = patching.RunState(wrapper.plan.window.for_model(ms))
            seen = {}

            class Executor:  # stands for the model call: keeps the context, runs the block once
                class_obj = m.model

                def __call__(self, x, t, c_concat, c_crossattn, control, transformer_options, **kw):
                    seen["to"] = transformer_options
                    patch({"img": h, "transformer_options": transformer_options}, {"original_block": lambda a: out})

            for _ in range(3):  # three model calls: auto detection happens in the first
                wrapper(Executor(), x, t, None, None, None, {"cond_or_uncond": [0, 1], key + ".run": run})
                sync(device)
            args = {"img": h, "transformer_options": seen["to"]}
            extra = {"original_block": lambda a: out}
            fn = lambda: patch(args, extra)  # noqa: E731
            for _ in range(3):
                fn()
            sync(device)
            n = 5 if tiny else 300
            b2b = time_back_to_back(fn, device, n)
            if b2b is None:  # CPU: wall time of the call
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                b2b = (time.perf_counter() - t0) * 1000 / n
            gr = time_graph(fn, device) if not tiny else None
            rows.append([f"Wan 1.3B dims {'x'.join(map(str, lat))}" if not tiny else "tiny", dname, name,
                         fmt_us(time_isolated(fn, device, 5 if tiny else 200)), fmt_us(b2b),
                         gr if isinstance(gr, str) else fmt_us(gr), syncs(fn, device)])
        del base
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    rep.table(f"One steered block call, block patch to kernels (microseconds; {card_name(device)}; pack {pack.__name__})",
              ["size", "dtype", "variant", "isolated (us)", "back-to-back (us)", "GPU time, graph (us)", "host syncs"],
              rows)
    rep.data["sections"]["block"] = rows



# -- sections: end to end ---------------------------------------------------------------------------

def variants_for(pack, tiny, recorder_ok=True):
    """(name, make(model) -> patched model) for the e2e comparisons, built with the pack's nodes."""
    smp = pack_module(pack, "nodes.stas_model_patch").StasModelPatch
    out = [
        ("unpatched", lambda m: m),
        ("unpatched again (A/A)", lambda m: m),
        ("STAS default", lambda m: run_node(smp, m)[0]),
        ("STAS all blocks, every step", lambda m: run_node(smp, m, blocks="all", end_percent=1.0, threshold=1.0)[0]),
    ]
    rec = None
    try:
        rec = pack_module(pack, "nodes.ma_recorder")
    except ImportError:
        pass
    if recorder_ok and rec is not None:
        node = next((getattr(rec, n) for n in dir(rec) if n.endswith("Recorder")
                     and hasattr(getattr(rec, n), "define_schema")), None)
        if node is not None:
            out.append(("MA Recorder default", lambda m: run_node(node, m)[0]))
    return out


def run_e2e(rep, label, device, model, latent, ctx_tokens, steps, rounds, variants, cfg=5.0, extra_cond=None):
    import torch
    pos = text_cond(ctx_tokens, seed=1, **(extra_cond or {}))
    neg = text_cond(ctx_tokens, seed=2, **(extra_cond or {}))
    built = [(name, make(model)) for name, make in variants]
    times = {n: [] for n, _ in built}
    peaks = {n: [] for n, _ in built}
    errors = {}
    # warm-up: load weights, autotune kernels, first Triton compiles
    for name, m in built:
        try:
            sample(m, latent, 1, cfg, pos, neg)
        except Exception as e:  # noqa: BLE001
            errors[name] = f"{type(e).__name__}: {e}"
            rep.log(f"[{label}] {name} failed: {errors[name]}")
            traceback.print_exc()
    sync(device)
    for r in range(rounds):
        order = built[r % len(built):] + built[:r % len(built)]  # rotate: no variant always first
        for name, m in order:
            if name in errors:
                continue
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = time.perf_counter()
            sample(m, latent, steps, cfg, pos, neg)
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps)
            if device == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated())
        rep.log(f"[{label}] round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {times[n][-1]:.4f}s" for n, _ in built if times[n]))
    base = median(times["unpatched"])
    base_peak = max(peaks["unpatched"]) if peaks["unpatched"] else None
    rows = []
    for name, _ in built:
        if name in errors:
            rows.append([name, "failed", "", "", "", "", errors[name][:80]])
            continue
        med = median(times[name])
        # paired: each round's time over the unpatched time of the same round (slow drift of the card's clock
        # cancels), then the median over rounds
        paired = median([t / b for t, b in zip(times[name], times["unpatched"])])
        spread = (max(times[name]) - min(times[name])) / med if times[name] else float("nan")
        pk = max(peaks[name]) if peaks[name] else None
        rows.append([name, f"{med:.4f}", f"{med / base:.4f}", f"{paired:.4f}", f"{spread * 100:.2f}%",
                     "n/a" if pk is None else f"{pk / 2**20:.0f}",
                     "n/a" if pk is None else f"{(pk - base_peak) / 2**20:+.1f}"])
    return rows, {"times": times, "peaks": peaks, "errors": errors}


def e2e_header():
    return ["variant", "s / step (median)", "ratio to unpatched", "paired ratio (median of rounds)",
            "spread (max-min)/median", "peak MiB", "peak vs unpatched (MiB)"]


def section_e2e(rep, pack, device, tiny, dtype, steps, rounds):
    import torch
    if tiny:
        model = build_wan(128, 256, 2, 4, dtype, device)
        latent, ctx, title = torch.zeros(1, 16, 5, 8, 8), 8, "tiny Wan (4 blocks, dim 128), 5x8x8 latent"
    else:
        model = build_wan(1536, 8960, 12, 30, dtype, device)
        latent, ctx, title = torch.zeros(1, 16, 21, 60, 104), 512, "Wan 2.1 1.3B, 480x832x81 (32,760 tokens), CFG batch 2"
    rows, raw = run_e2e(rep, "e2e", device, model, latent, ctx, steps, rounds, variants_for(pack, tiny))
    rep.table(f"End to end: {title}, {steps} euler steps per run, {rounds} interleaved rounds, "
              f"{str(dtype).replace('torch.', '')} ({card_name(device)})", e2e_header(), rows)
    rep.data["sections"]["e2e"] = {"rows": rows, "raw": raw}
    del model
    cleanup(device)


def section_mem14b(rep, pack, device, tiny, dtype, layers):
    import torch
    if tiny:
        model = build_wan(256, 512, 2, layers, dtype, device)
        latent, title = torch.zeros(1, 16, 5, 16, 16), f"tiny Wan (dim 256, {layers} blocks)"
    else:
        model = build_wan(5120, 13824, 40, layers, dtype, device)
        latent, title = torch.zeros(1, 16, 21, 90, 160), f"Wan 14B dims ({layers} of 40 blocks), 720x1280x81 (75,600 tokens)"
    rows, raw = run_e2e(rep, "mem14b", device, model, latent, 512 if not tiny else 8, 1, 1,
                        [v for v in variants_for(pack, tiny) if "A/A" not in v[0]])
    rep.table(f"Peak memory, one step: {title}, CFG batch 2, {str(dtype).replace('torch.', '')} ({card_name(device)})",
              e2e_header(), rows)
    rep.data["sections"]["mem14b"] = {"rows": rows, "raw": raw}
    del model
    cleanup(device)


def section_hunyuan(rep, pack, device, tiny, dtype, steps, rounds):
    import torch
    if tiny:
        model = build_hunyuan(1, 1, dtype, device, hidden=128, heads=1)  # ComfyUI infers heads as hidden / 128
        latent, title = torch.zeros(1, 16, 3, 8, 8), "tiny HunyuanVideo"
    else:
        model = build_hunyuan(4, 8, dtype, device)
        latent, title = torch.zeros(1, 16, 16, 68, 120), "HunyuanVideo dims (hidden 3072; 4 double + 8 single blocks), 544x960x61"
    cond = {"guidance": 6.0}
    import comfy.conds  # noqa: F401
    variants = variants_for(pack, tiny)
    pooled = torch.randn(1, 768)
    rows, raw = run_e2e(rep, "hunyuan", device, model, latent, 64, steps, rounds, variants,
                        extra_cond={"pooled_output": pooled, **cond})
    rep.table(f"End to end: {title}, {steps} steps, {rounds} rounds ({card_name(device)})", e2e_header(), rows)
    rep.data["sections"]["hunyuan"] = {"rows": rows, "raw": raw}
    del model
    cleanup(device)


# -- section: families (one table per model family, real widths, fewer blocks) -----------------------

FAMILY_KEYS = ["wan13b", "wan22_5b", "hunyuan15", "kandinsky5_lite", "mochi", "cogvideox15", "ltx2"]


def _rand(*shape, seed=5):
    import torch
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def family_specs(tiny):
    """key -> build(dtype, device) -> (model, latent, text tokens, extra text_cond kwargs, title).

    Real widths (random weights, bf16) and real token counts, fewer blocks than the checkpoints (named in each
    title) so that one unpatched step stays near a second on an H200; ``tiny``: the same code paths at tiny widths.
    """
    import torch
    from stas_harness import models as M

    def wan13b(dtype, device):
        if tiny:
            return (M.wan(128, 256, 2, 2, dtype, device), torch.zeros(1, 16, 5, 8, 8), 8, {},
                    "tiny Wan 2.1 (dim 128, 2 blocks)")
        return (M.wan(1536, 8960, 12, 30, dtype, device), torch.zeros(1, 16, 21, 60, 104), 512, {},
                ("Wan 2.1 1.3B (dim 1536, ffn 8960, 12 heads; all 30 blocks), 480x832x81 = 21x60x104 latent "
                "(32,760 tokens), T5 text 512"))

    def wan22_5b(dtype, device):
        kw = M.WAN_VARIANTS["ti2v_5b"][1]   # in_dim = out_dim = 48
        if tiny:
            return (M.wan(128, 256, 2, 2, dtype, device, **kw), torch.zeros(1, 48, 5, 8, 8), 8, {},
                    "tiny Wan 2.2 TI2V 5B layout (dim 128, 2 blocks, 48-ch latent)")
        return (M.wan(3072, 14336, 24, 10, dtype, device, **kw), torch.zeros(1, 48, 31, 44, 80), 512, {},
                ("Wan 2.2 TI2V 5B (dim 3072, ffn 14336, 24 heads, 48-ch latent; 10 of 30 blocks), 704x1280x121 = "
                "31x44x80 latent (27,280 tokens), T5 text 512"))

    def hunyuan15(dtype, device):
        if not M.has_hunyuan_video15():
            raise RuntimeError("this ComfyUI has no HunyuanVideo 1.5")
        # T2V conds as the 1.5 text encoder gives them (Qwen2.5-VL 3584, byT5 glyph tokens 1472, no pooled output);
        # byT5 on both cond and uncond, so CFG runs as one batch of 2
        if tiny:
            return (M.hunyuan_video15(2, dtype, device, hidden=128, heads=1), torch.zeros(1, 32, 3, 6, 6), 8,
                    dict(dim=3584, pooled_output=None, conditioning_byt5small=_rand(1, 5, 1472, seed=11)),
                    "tiny HunyuanVideo 1.5 (hidden 128, 2 double blocks)")
        return (M.hunyuan_video15(8, dtype, device), torch.zeros(1, 32, 31, 30, 53), 512,
                dict(dim=3584, pooled_output=None, conditioning_byt5small=_rand(1, 64, 1472, seed=11)),
                ("HunyuanVideo 1.5 (hidden 2048, 16 heads, patch 1x1x1, 65 in / 32 out channels; 8 of 54 double "
                "blocks, no single), 480x848x121 = 31x30x53 latent (49,290 tokens), Qwen text 512 + byT5 64, T2V"))

    def kandinsky5_lite(dtype, device):
        if not M.has_kandinsky5():
            raise RuntimeError("this ComfyUI has no Kandinsky 5")
        cond = lambda: dict(dim=3584, pooled_output=_rand(1, 768, seed=11))  # noqa: E731
        if tiny:
            return (M.kandinsky5(2, dtype, device, model_dim=128, ff_dim=256, time_dim=64, num_text_blocks=1),
                    torch.zeros(1, 16, 3, 8, 8), 8, cond(), "tiny Kandinsky 5 (dim 128, 2 visual blocks)")
        return (M.kandinsky5(8, dtype, device), torch.zeros(1, 16, 31, 64, 96), 256, cond(),
                ("Kandinsky 5 Video Lite (dim 1792, ff 7168, time 512, 14 heads, 2 text blocks; 8 of 32 visual "
                "blocks), 512x768x121 = 31x64x96 latent (47,616 tokens), Qwen text 256 + CLIP pooled 768"))

    def mochi(dtype, device):
        n = 8 if tiny else 256
        cond = dict(dim=256 if tiny else 4096, attention_mask=torch.ones(1, n, dtype=torch.long))
        if tiny:
            return (M.mochi(2, dtype, device, config=M.MOCHI_TINY), torch.zeros(1, 12, 3, 8, 8), n, cond,
                    "tiny Mochi (hidden 128, 2 blocks)")
        return (M.mochi(6, dtype, device), torch.zeros(1, 12, 28, 60, 106), n, cond,
                ("Mochi 1 (hidden 3072 / text stream 1536, 24 heads, mlp 4x; 6 of 48 blocks), 480x848x163 = "
                "28x60x106 latent (44,520 tokens), T5 text 256"))

    def cogvideox15(dtype, device):
        if not M.has_cogvideox():
            raise RuntimeError("this ComfyUI has no native CogVideoX")
        if tiny:
            return (M.cogvideox(2, dtype, device, heads=2, time_embed_dim=64), torch.zeros(1, 16, 3, 8, 8), 8, {},
                    "tiny CogVideoX 1.5 layout (2 heads x 64, 2 blocks)")
        return (M.cogvideox(6, dtype, device), torch.zeros(1, 16, 21, 96, 170), 226, {},
                ("CogVideoX 1.5 5B (48 heads x 64 = 3072, time 512, Linear patch 2x2x2; 6 of 42 blocks), "
                "768x1360x81 = 21x96x170 latent (11x48x85 = 44,880 tokens), T5 text 226"))

    def ltx2(dtype, device):
        if not M.has_ltxav():
            raise RuntimeError("this ComfyUI has no LTX-2 (comfy.ldm.lightricks.av_model)")
        import comfy.nested_tensor
        n = 8 if tiny else 1024
        if tiny:
            v, a, cfgd, title = (1, 128, 3, 4, 4), 5, M.LTXAV_TINY, "tiny LTX-2 (video 128 / audio 64, 2 blocks)"
            model = M.ltxav(2, dtype, device, config=M.LTXAV_TINY)
        else:
            v, a, cfgd = (1, 128, 16, 22, 38), 126, M.LTXAV_REAL
            title = ("LTX-2 19B dims (video 32x128 = 4096, audio 32x64 = 2048, Gemma text 2 x 3840; 8 of 48 blocks), "
                     "704x1216x121 = 16x22x38 video latent (13,376 tokens) + 126 audio latents (5 s at 25/s), "
                     "text 1024")
            model = M.ltxav(8, dtype, device)
        latent = comfy.nested_tensor.NestedTensor((torch.zeros(*v), torch.zeros(1, 8, a, 16)))
        return (model, latent, n,
                dict(dim=2 * cfgd["caption_channels"], attention_mask=torch.ones(1, n, dtype=torch.long)), title)

    return {"wan13b": wan13b, "wan22_5b": wan22_5b, "hunyuan15": hunyuan15, "kandinsky5_lite": kandinsky5_lite,
            "mochi": mochi, "cogvideox15": cogvideox15, "ltx2": ltx2}


def section_families(rep, pack, device, tiny, steps, rounds, only=None, variants=None):
    """Per model family: s / step and peak memory of each variants_for() variant (run_e2e), bf16, CFG 5."""
    import torch
    dtype = torch.bfloat16
    specs = family_specs(tiny)
    keys = [k for k in FAMILY_KEYS if not only or k in only]
    out = rep.data["sections"].setdefault("families", {})
    for key in keys:
        t0 = time.perf_counter()
        model = None
        try:
            model, latent, ctx, extra, title = specs[key](dtype, device)
            rep.log(f"[families] {key}: {type(model.model).__name__} built in {time.perf_counter() - t0:.1f}s; {title}")
            chosen = [v for v in variants_for(pack, tiny)
                      if not variants or v[0] == "unpatched" or any(w.lower() in v[0].lower() for w in variants)]
            rows, raw = run_e2e(rep, f"families/{key}", device, model, latent, ctx, steps, rounds, chosen,
                                extra_cond=extra)
            rep.table(f"{title}; {type(model.model).__name__}, CFG 5 (batch 2), {steps} euler steps per run, "
                      f"{rounds} interleaved rounds, bfloat16 ({card_name(device)})", e2e_header(), rows)
            out[key] = {"title": title, "model_base": type(model.model).__name__, "rows": rows, "raw": raw}
        except Exception as e:  # noqa: BLE001  (one family's failure must not stop the others)
            rep.log(f"[families] {key} FAILED: {type(e).__name__}: {e}")
            rep.log(traceback.format_exc())
            out[key] = {"error": f"{type(e).__name__}: {e}"}
            rep.table(f"{key}: failed", ["error"], [[f"{type(e).__name__}: {e}"[:200]]])
        finally:
            del model
            cleanup(device)
        rep.log(f"[families] {key} took {time.perf_counter() - t0:.1f}s")
        rep.save()


# -- section: profile (where a variant's extra time goes, by CUDA kernel) --------------------------------

def section_profile(rep, pack, device, tiny, steps, family):
    """One ``steps``-step run of each variant of one family under torch.profiler: per kernel name, the
    device time of each variant minus the unpatched run's (the kernels a patch adds, or makes slower)."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    model, latent, ctx, extra, title = family_specs(tiny)[family](torch.bfloat16, device)
    pos = text_cond(ctx, seed=1, **(extra or {}))
    neg = text_cond(ctx, seed=2, **(extra or {}))
    built = [(n, make(model)) for n, make in variants_for(pack, tiny) if "A/A" not in n]
    for _, m in built:   # warm-up
        sample(m, latent, 1, 5.0, pos, neg)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    per, totals, walls = {}, {}, {}
    for name, m in built:
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=acts) as prof:
            sample(m, latent, steps, 5.0, pos, neg)
            sync(device)
        walls[name] = (time.perf_counter() - t0) / steps
        k = {}
        for e in prof.key_averages():
            dt = getattr(e, "device_time_total", None)
            if dt is None:
                dt = getattr(e, "cuda_time_total", 0)
            if device != "cuda":
                dt = e.self_cpu_time_total
            if dt and (device != "cuda" or e.device_type == torch.autograd.DeviceType.CUDA):
                k[e.key] = (k.get(e.key, (0, 0))[0] + dt, k.get(e.key, (0, 0))[1] + e.count)
        per[name] = k
        totals[name] = sum(v[0] for v in k.values())
        rep.log(f"[profile/{family}] {name}: device time {totals[name] / 1e3 / steps:.1f} ms/step, wall "
                f"{walls[name]:.4f} s/step (profiled)")
    base = per["unpatched"]
    rows = [[n, f"{totals[n] / 1e3 / steps:.1f}", f"{(totals[n] - totals['unpatched']) / 1e3 / steps:+.2f}",
             f"{totals[n] / totals['unpatched']:.4f}", f"{walls[n]:.4f}"] for n, _ in built]
    rep.table(f"Profile: {title}, {steps} euler steps, CFG 5, bfloat16 ({card_name(device)})",
              ["variant", "device time (ms / step)", "vs unpatched (ms / step)", "ratio", "wall s / step (profiled)"],
              rows)
    for name, _ in built[1:]:
        diff = sorted(((v[0] - base.get(key, (0, 0))[0], key, v[1] - base.get(key, (0, 0))[1])
                       for key, v in per[name].items()), reverse=True)[:10]
        rep.table(f"Profile, {name}: the kernels whose device time grew most over unpatched (per step)",
                  ["kernel", "extra ms / step", "extra launches / step"],
                  [[key[:90], f"{d / 1e3 / steps:+.3f}", f"{c / steps:+.0f}"] for d, key, c in diff])
    rep.data["sections"].setdefault("profile", {})[family] = {"rows": rows}
    del model, built
    cleanup(device)


# -- section: gguf (Wan 2.1 1.3B through ComfyUI-GGUF, Q8_0, dequantized on the GPU) -------------------

def section_gguf(rep, pack, device, tiny, steps, rounds, comfy_src):
    """The e2e variants on Wan 2.1 1.3B written as a Q8_0 GGUF and loaded by ComfyUI-GGUF's UnetLoaderGGUF."""
    import tempfile
    import torch
    import folder_paths
    from stas_harness import gguf as G
    from stas_harness import models as M
    gdir = G.comfyui_gguf_dir(comfy_src)
    if gdir is None:
        raise RuntimeError(f"no ComfyUI-GGUF in {comfy_src}/custom_nodes")
    mappings = G.load_comfyui_gguf(gdir)
    dim, ffn, heads, layers = (128, 256, 2, 2) if tiny else (1536, 8960, 12, 30)
    sd = M.random_state_dict(M.wan_module(num_layers=layers, dim=dim, ffn_dim=ffn, num_heads=heads, meta=True))
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    G.write_gguf(sd, tmp / "wan_q8.gguf", "Q8_0")
    del sd
    rep.log(f"[gguf] Q8_0 file written in {time.perf_counter() - t0:.1f}s ({(tmp / 'wan_q8.gguf').stat().st_size / 2**20:.0f} MiB)")
    folder_paths.add_model_folder_path("unet", str(tmp))
    folder_paths.add_model_folder_path("diffusion_models", str(tmp))
    loader = mappings["UnetLoaderGGUF"]()
    model = getattr(loader, loader.FUNCTION)("wan_q8.gguf")[0]
    latent = torch.zeros(1, 16, 5, 8, 8) if tiny else torch.zeros(1, 16, 21, 60, 104)
    title = ("tiny Wan through ComfyUI-GGUF" if tiny else
             "Wan 2.1 1.3B as Q8_0 GGUF (ComfyUI-GGUF, dequantized on the GPU), 480x832x81 (32,760 tokens), T5 text 512")
    rows, raw = run_e2e(rep, "gguf", device, model, latent, 8 if tiny else 512, steps, rounds, variants_for(pack, tiny))
    rep.table(f"{title}; {G.comfyui_gguf_version(gdir)}, CFG 5 (batch 2), {steps} euler steps per run, {rounds} "
              f"interleaved rounds ({card_name(device)})", e2e_header(), rows)
    rep.data["sections"]["gguf"] = {"rows": rows, "raw": raw}
    del model
    cleanup(device)


# -- section: sweep (STAS Sweep against the renders it stands for) ------------------------------------

def section_sweep(rep, pack, device, tiny, rounds):
    """STAS Sweep at its defaults (4 variants + the baseline, 10 steps) on Wan 2.1 1.3B at a 272x480x33 preview,
    against the same 5 renders made one by one (sample + VAE decode), interleaved; with a random full-size Wan VAE."""
    import comfy.ldm.wan.vae as wv
    import comfy.sd
    import torch
    from stas_harness import models as M
    sweep_node = pack_module(pack, "nodes.sweep")
    dtype = torch.bfloat16
    if tiny:
        model, latent, ctx = build_wan(128, 256, 2, 4, dtype, device), torch.zeros(1, 16, 3, 8, 8), 8
        vae = comfy.sd.VAE(sd=M.random_state_dict(wv.WanVAE(dim=96, z_dim=16), scale=0.02))
    else:
        model, latent, ctx = build_wan(1536, 8960, 12, 30, dtype, device), torch.zeros(1, 16, 9, 34, 60), 512
        with torch.device("meta"):
            shapes = wv.WanVAE(dim=96, z_dim=16)
        vae = comfy.sd.VAE(sd=M.random_state_dict(shapes, scale=0.02, device=device))
    pos, neg = text_cond(ctx, seed=1), text_cond(ctx, seed=2)
    node = sweep_node.StasSweep
    kw = {i.id: i.default for i in node.define_schema().inputs if getattr(i, "default", None) is not None}
    kw.update(model=model, positive=pos, negative=neg, latent_image={"samples": latent}, vae=vae, seed=1,
              sampler_name="euler", scheduler="simple")
    steps, cfg = kw["steps"], kw["cfg"]
    variants = sweep_node.sw.grid(sweep_node.sw.parse_floats(kw["alphas"], "alphas"),
                                  sweep_node.sw.parse_blocks_list(kw["blocks"]), sweep_node.sw.parse_windows(kw["windows"]))
    smp = pack_module(pack, "nodes.stas_model_patch").StasModelPatch
    singles = [model] + [smp.execute(model, **sweep_node.stas_settings(v))[0] for v in variants]

    def run_sweep():
        with torch.inference_mode():
            node.execute(**kw)

    def run_singles():
        for m in singles:
            out = sample(m, latent, steps, cfg, pos, neg, seed=1)
            with torch.inference_mode():
                vae.decode(out)

    runs = {"STAS Sweep (1 node)": run_sweep, f"{len(singles)} single renders + decodes": run_singles}
    times = {n: [] for n in runs}
    peaks = {n: [] for n in runs}
    for fn in runs.values():   # warm-up: loads, kernels
        fn()
    for r in range(rounds):
        order = list(runs.items())[r % 2:] + list(runs.items())[:r % 2]
        for name, fn in order:
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if device == "cuda":
                peaks[name].append(torch.cuda.max_memory_allocated())
        rep.log(f"[sweep] round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in runs))
    names = list(runs)
    base = median(times[names[1]])
    rows = []
    for n in names:
        pk = max(peaks[n]) if peaks[n] else None
        rows.append([n, f"{median(times[n]):.3f}", f"{median(times[n]) / base:.4f}",
                     "n/a" if pk is None else f"{pk / 2**20:.0f}"])
    rep.table(f"STAS Sweep at its defaults ({len(variants)} variants + baseline, {steps} steps, CFG {cfg}) vs the same "
              f"renders one by one, {'tiny Wan' if tiny else 'Wan 2.1 1.3B, 272x480x33 preview (4,590 tokens)'}, "
              f"bfloat16, {rounds} interleaved rounds ({card_name(device)})",
              ["run", "s (median)", "ratio to single renders", "peak MiB"], rows)
    rep.data["sections"]["sweep"] = {"rows": rows, "times": times, "peaks": peaks}
    del model, singles
    cleanup(device)


def compile_setup(device, tiny, dtype, backend):
    """Wan 2.1 1.3B dims (tiny on CPU), its conds, and ``compiled(m)``: TorchCompileModel's output."""
    import torch
    import comfy_extras.nodes_torch_compile as ntc
    if tiny:
        model = build_wan(128, 256, 2, 4, dtype, device)
        latent, ctx = torch.zeros(1, 16, 5, 8, 8), 8
    else:
        model = build_wan(1536, 8960, 12, 30, dtype, device)
        latent, ctx = torch.zeros(1, 16, 21, 60, 104), 512
    pos, neg = text_cond(ctx, seed=1), text_cond(ctx, seed=2)

    def compiled(m):
        if backend == "inductor":
            return ntc.TorchCompileModel.execute(m, "inductor")[0]
        from comfy_api.torch_helpers import set_torch_compile_wrapper
        c = m.clone()
        set_torch_compile_wrapper(model=c, backend=backend, options={"guard_filter_fn": ntc.skip_torch_compile_dict})
        return c

    return model, latent, pos, neg, compiled


def section_compile(rep, pack, device, tiny, dtype, steps, backend):
    """TorchCompileModel (ComfyUI's node) on the unpatched and the STAS-patched model."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters
    model, latent, pos, neg, compiled = compile_setup(device, tiny, dtype, backend)
    smp = pack_module(pack, "nodes.stas_model_patch").StasModelPatch

    variants = [("unpatched", model), ("STAS default", run_node(smp, model)[0]),
                ("STAS all blocks, every step", run_node(smp, model, blocks="all", end_percent=1.0, threshold=1.0)[0])]
    # eager references, and where a single-block replace patch's memory goes: ComfyUI's Wan loop keeps
    # the last patched block's output bound to its local ``out`` until the next patched block
    noop = model.clone()
    mid = len(model.get_model_object("diffusion_model").blocks) // 2
    noop.set_model_patch_replace(lambda args, extra: extra["original_block"](args), "dit", "double_block", mid)
    eager_ref, mem_rows = {}, []
    for name, m in variants + [("no-op replace patch on the middle block (not STAS)", noop)]:
        for rep_i in range(2):
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            out = sample(m, latent, steps, 5.0, pos, neg)
            pk = torch.cuda.max_memory_allocated() if device == "cuda" else None
        eager_ref[name] = out
        mem_rows.append([name, "n/a" if pk is None else f"{pk / 2**20:.0f}"])
    if device == "cuda":
        b = float(mem_rows[0][1])
        for r in mem_rows:
            r.append(f"{float(r[1]) - b:+.1f}")
    rep.table(f"Eager peak memory, {steps}-step runs ({card_name(device)})",
              ["variant", "peak MiB", "vs unpatched (MiB)"], mem_rows)
    rows, raw = [], {}
    for name, m in variants:
        torch._dynamo.reset()
        counters.clear()
        cm = compiled(m)
        sync(device)
        t0 = time.perf_counter()
        out1 = sample(cm, latent, 1, 5.0, pos, neg)   # compiles
        sync(device)
        t_compile = time.perf_counter() - t0
        g1 = dict(counters["stats"])
        ts, pk = [], None
        for _ in range(2):
            sync(device)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            out = sample(cm, latent, steps, 5.0, pos, neg)
            sync(device)
            ts.append((time.perf_counter() - t0) / steps)
            if device == "cuda":
                pk = torch.cuda.max_memory_allocated()
        g2 = dict(counters["stats"])
        breaks = sum(counters["graph_break"].values())
        recompiles = g2.get("unique_graphs", 0) - g1.get("unique_graphs", 0)
        diff = (out.float() - eager_ref[name].float()).abs().max().item()
        rows.append([name, f"{t_compile:.1f}", f"{min(ts):.4f}", str(g1.get("unique_graphs", 0)), str(recompiles),
                     str(breaks), f"{diff:.3g}", "n/a" if pk is None else f"{pk / 2**20:.0f}"])
        raw[name] = {"stats_after_step1": g1, "stats_after": g2, "graph_breaks": dict(counters["graph_break"]),
                     "times": ts}
        rep.log(f"[compile] {name}: {rows[-1]}")
        del cm, out, out1
        cleanup(device)
    base = float(rows[0][2])
    for r in rows:
        r.insert(3, f"{float(r[2]) / base:.4f}")
    rep.table(f"torch.compile via ComfyUI's TorchCompileModel ({backend}): {steps}-step runs after the compiling one "
              f"({card_name(device)})",
              ["variant", "first 1-step run incl. compile (s)", "s / step compiled (best of 2 runs)", "ratio",
               "graphs after step 1", "new graphs after step 1 (recompiles)", "graph breaks",
               "max |compiled - eager| of the latent", "peak MiB"], rows)
    rep.data["sections"]["compile"] = {"rows": rows, "raw": raw}
    del model
    cleanup(device)


def section_compile_settings(rep, pack, device, tiny, dtype, steps, backend):
    """One compiled model (TorchCompileModel's output, cached as in a re-queued workflow) under STAS
    Model Patch whose settings, blocks and presence change from run to run. Random weights carry no
    massive activation, so the base setting lists channels. A run took effect when the compiled run
    moves away from the compiled base run as much as the eager run moves from the eager base run;
    new settings must add no graph, a new layout (blocks, STAS bypassed, a second node) one."""
    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters
    model, latent, pos, neg, compiled = compile_setup(device, tiny, dtype, backend)
    smp = pack_module(pack, "nodes.stas_model_patch").StasModelPatch
    bmb = pack_module(pack, "nodes.boundary_mask").BoundaryMaskBuilder
    first_only = bmb.execute(True, False, 1.0, 1.0, "rows")[0]
    base = dict(channels="7,100", alpha=2.0)
    stas = lambda m, **kw: run_node(smp, m, **{**base, **kw})[0]  # noqa: E731
    seq = [("base: channels 7,100, alpha 2", stas), ("alpha 0.3", lambda m: stas(m, alpha=0.3)),
           ("end_percent 0.6", lambda m: stas(m, end_percent=0.6)),
           ("mask: first frame only", lambda m: stas(m, mask=first_only)),
           ("apply_to both", lambda m: stas(m, apply_to="both")),
           ("channels 7,100,90", lambda m: stas(m, channels="7,100,90")),
           ("channels auto, threshold 1", lambda m: stas(m, channels="auto", threshold=1.0)),
           ("base again", stas),
           # layouts: each compiles once
           ("STAS bypassed (layout)", lambda m: m), ("STAS back", stas),
           ("blocks 1 (layout)", lambda m: stas(m, blocks="1")),
           ("a second node on block 2 (layout)", lambda m: stas(stas(m, blocks="1"), blocks="2")),
           ("the second removed", lambda m: stas(m, blocks="1", alpha=0.5))]
    torch._dynamo.reset()
    counters.clear()
    cm = compiled(model)
    rows, g0, ref = [], None, None
    for name, build in seq:
        sync(device)
        t0 = time.perf_counter()
        got = sample(build(cm), latent, steps, 5.0, pos, neg).float()
        sync(device)
        t = time.perf_counter() - t0
        want = sample(build(model), latent, steps, 5.0, pos, neg).float()
        ref = ref or (got, want)
        g = counters["stats"].get("unique_graphs", 0)
        g0 = g if g0 is None else g0
        d_c, d_e = (got - ref[0]).abs().max().item(), (want - ref[1]).abs().max().item()
        took = "base" if not rows else ("yes" if abs(d_c - d_e) <= 0.1 * max(d_e, 1e-30) or d_c == d_e
                                        else "NO")
        rows.append([name, f"{t:.2f}", str(g), str(g - g0), f"{(got - want).abs().max().item():.3g}",
                     f"{d_c:.3g}", f"{d_e:.3g}", took])
        rep.log(f"[compile-settings] {rows[-1]}")
        del got, want
        cleanup(device)
    rep.table(f"One compiled model, STAS settings and layout changed between runs ({steps}-step runs; "
              f"{card_name(device)})",
              ["run", "s (incl. any compile)", "graphs so far", "new graphs since run 1", "max |compiled - eager|",
               "change vs base, compiled", "change vs base, eager", "took effect"], rows)
    rep.data["sections"]["compile_settings"] = {"rows": rows}
    del model, cm, ref
    cleanup(device)


def section_harden(rep, pack, device, tiny):
    """On the GPU: the Triton path with NaN/Inf activations, an invalid table
    entry holding a far out-of-range index, strided inputs, and another current device."""
    import torch
    core = lambda name: pack_module(pack, f"stas_core.{name}")  # noqa: E731
    fast, layout = core("steer_fast"), core("layout")
    rows = []
    dev = torch.device(device)
    grid = (3, 4, 6) if tiny else (21, 30, 52)
    N, P, D = grid[0] * grid[1] * grid[2], 7, 128 if tiny else 1536
    tok = layout.steer_token_indices(grid, layout.BoundarySpec()).to(dev)

    def case(name, fn):
        try:
            res = fn()
            sync(device)
        except Exception as e:  # noqa: BLE001
            res = f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:80]}"
        rows.append([name, res])
        rep.log(f"[harden] {name}: {res}")

    def detect(h, k=4):
        c = torch.full((1, k), -1, dtype=torch.long, device=dev)
        v = torch.zeros(1, k, dtype=torch.bool, device=dev)
        n = torch.ones(1, dtype=torch.int32, device=dev)
        fast.steer_block_(h, mkcall(fast, c, v, n, tok, torch.ones(2, device=dev), torch.tensor([0.5], device=dev),
                                     prefix=P, n_visual=N, detect=True), 0)
        return c, v, n

    def poisoned(kind):
        h = torch.randn(2, P + N, D, device=dev, dtype=torch.bfloat16)
        h[:, P:, 11] *= 200
        if kind == "nan_all":
            h[:] = float("nan")
        elif kind == "nan_channel":
            h[:, P:, D - 1] = float("nan")
        elif kind == "inf":
            h[1, P + N // 2, 40] = float("inf")
        c, v, n = detect(h)
        inside = bool(((c >= 0) & (c < D)).all().item())
        return (f"channels {c[0].tolist()} valid {v[0].tolist()}: "
                + ("in range" if inside else "OUT OF RANGE") + (", flag cleared" if n.item() == 0 else ", FLAG SET"))

    for kind in ("nan_all", "nan_channel", "inf"):
        case(f"auto detection, {kind}", lambda kind=kind: poisoned(kind))

    def garbage_entry():
        if not fast.uses_triton(torch.zeros(1, device=dev)):
            return "n/a: the torch fallback bounds-checks every index"
        h = torch.randn(2, P + N, D, device=dev, dtype=torch.bfloat16)
        bad = torch.tensor([[5, 10**12, 2, 10**12]], device=dev)
        sane = torch.tensor([[5, 30, 2, 31]], device=dev)
        valid = torch.tensor([[True, False, True, False]], device=dev)
        need = torch.zeros(1, dtype=torch.int32, device=dev)
        rl, sg = torch.ones(2, device=dev), torch.tensor([0.5], device=dev)
        a, b = h.clone(), h.clone()
        fast.steer_block_(a, mkcall(fast, bad, valid, need, tok, rl, sg, prefix=P, n_visual=N), 0)
        fast.steer_block_(b, mkcall(fast, sane, valid, need, tok, rl, sg, prefix=P, n_visual=N), 0)
        return "same as a sane table" if torch.equal(a, b) else "DIFFERS"
    case("invalid table entry 10**12 (never read)", garbage_entry)

    def strided():
        h = torch.randn(2, P + N, D, device=dev, dtype=torch.bfloat16)
        c = torch.tensor([[5, D // 2, 2, 9]], device=dev)
        v = torch.ones(1, 4, dtype=torch.bool, device=dev)
        need = torch.zeros(1, dtype=torch.int32, device=dev)
        sig_s = torch.tensor([[0.5, 9.0], [0.5, 9.0]], device=dev).t()[0]
        rl_s = torch.tensor([1.0, 7.0, 1.0], device=dev)[::2]
        tok_s = torch.stack([tok, tok]).t()[:, 0]
        a, b = h.clone(), h.clone()
        fast.steer_block_(a, mkcall(fast, c, v, need, tok_s, rl_s, sig_s, prefix=P, n_visual=N), 0)
        fast.steer_block_(b, mkcall(fast, c, v, need, tok.clone(), torch.ones(2, device=dev),
                                    torch.tensor([0.5, 0.5], device=dev), prefix=P, n_visual=N), 0)
        return "same as contiguous" if torch.equal(a, b) and not torch.equal(a, h) else "DIFFERS"
    case("strided sigma / blend / tokens", strided)

    def other_device():
        if torch.cuda.device_count() < 2:
            return "skipped: one GPU"
        h = torch.randn(2, P + N, D, device="cuda:1", dtype=torch.bfloat16)
        h[:, P:, 11] *= 200
        ref = h.to("cuda:0")
        d1 = torch.device("cuda:1")
        c = torch.zeros(1, 4, dtype=torch.long, device=d1)
        v = torch.zeros(1, 4, dtype=torch.bool, device=d1)
        n = torch.ones(1, dtype=torch.int32, device=d1)
        with torch.cuda.device(0):
            fast.steer_block_(h, mkcall(fast, c, v, n, tok.to(d1), torch.ones(2, device=d1),
                                        torch.tensor([0.5], device=d1), prefix=P, n_visual=N, detect=True), 0)
        torch.cuda.synchronize(d1)
        c0 = torch.zeros(1, 4, dtype=torch.long, device="cuda:0")
        v0 = torch.zeros(1, 4, dtype=torch.bool, device="cuda:0")
        n0 = torch.ones(1, dtype=torch.int32, device="cuda:0")
        fast.steer_block_(ref, mkcall(fast, c0, v0, n0, tok.to("cuda:0"), torch.ones(2, device="cuda:0"),
                                      torch.tensor([0.5], device="cuda:0"), prefix=P, n_visual=N, detect=True), 0)
        return "same as on its own device" if torch.equal(h.cpu(), ref.cpu()) else "DIFFERS"
    case("h on cuda:1 while cuda:0 is current", other_device)
    rep.table(f"Hardened Triton path ({card_name(device)})", ["case", "result"], rows)
    rep.data["sections"]["harden"] = {"rows": rows}


def cleanup(device):
    import torch
    gc.collect()
    if device == "cuda":
        import comfy.model_management as mm
        mm.unload_all_models()
        mm.soft_empty_cache()
        torch.cuda.empty_cache()


# -- main ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (CPU smoke test)")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH", str(REPO / ".comfyui")))
    ap.add_argument("--sections", default="op,e2e,mem14b",
                    help="comma list of op,launch,e2e,mem14b,hunyuan,families,gguf,sweep,compile,compile_settings,harden")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    ap.add_argument("--op-dtypes", default="float16,bfloat16")
    ap.add_argument("--op-cases", default="",
                    help="section op: comma list of words a case's name contains (the reference case always runs)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--layers14b", type=int, default=8, help="blocks of the 14B-dims model (40 in the real one)")
    ap.add_argument("--families", default="",
                    help="section families: comma list of " + ",".join(FAMILY_KEYS) + " (default: all); always bf16")
    ap.add_argument("--variants", default="",
                    help="section families: comma list of words a variant's name contains (unpatched always runs)")
    ap.add_argument("--compile-backend", default="inductor")
    ap.add_argument("--compile-steps", type=int, default=3)
    ap.add_argument("--pack", default=str(REPO),
                    help="the pack checkout to measure (another one, e.g. the previous commit's, for a side-by-side)")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "bench" / "out"))
    a = ap.parse_args()

    import torch
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench: no CUDA device; use --device cpu --tiny")
    rep = Report(Path(a.out))
    pack, cv = load_comfy(a.comfyui, a.device, Path(a.pack).resolve())
    try:
        import triton
        tv = triton.__version__
    except ImportError:
        tv = "not installed"
    fast = pack_module(pack, "stas_core.steer_fast")
    env = {"card": card_name(a.device), "torch": torch.__version__, "triton": tv, "comfyui": cv,
           "python": platform.python_version(), "argv": sys.argv,
           "fast path": "Triton" if (a.device == "cuda" and fast._triton_module() is not None) else "torch fallback"}
    rep.data["env"] = env
    rep.log("[env]", json.dumps(env))
    dtype = getattr(torch, a.dtype)
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    for s in sections:
        t0 = time.perf_counter()
        try:
            if s == "op":
                section_op(rep, pack, a.device, a.tiny, [d for d in a.op_dtypes.split(",") if d],
                           [c.strip() for c in a.op_cases.split(",") if c.strip()])
            elif s == "block":
                section_block(rep, pack, a.device, a.tiny, [d for d in a.op_dtypes.split(",") if d])
            elif s == "e2e":
                section_e2e(rep, pack, a.device, a.tiny, dtype, a.steps, a.rounds)
            elif s == "profile":
                for fam in ([f for f in a.families.split(",") if f] or ["mochi"]):
                    section_profile(rep, pack, a.device, a.tiny, a.steps, fam)
            elif s == "mem14b":
                section_mem14b(rep, pack, a.device, a.tiny, dtype, a.layers14b if not a.tiny else 2)
            elif s == "launch":
                section_launch(rep, a.device)
            elif s == "hunyuan":
                section_hunyuan(rep, pack, a.device, a.tiny, dtype, a.steps, a.rounds)
            elif s == "families":
                section_families(rep, pack, a.device, a.tiny, a.steps, a.rounds,
                                 [f.strip() for f in a.families.split(",") if f.strip()],
                                 [v.strip() for v in a.variants.split(",") if v.strip()])
            elif s == "gguf":
                section_gguf(rep, pack, a.device, a.tiny, a.steps, a.rounds, a.comfyui)
            elif s == "sweep":
                section_sweep(rep, pack, a.device, a.tiny, a.rounds)
            elif s == "compile":
                section_compile(rep, pack, a.device, a.tiny, dtype, a.compile_steps,
                                a.compile_backend if a.device == "cuda" else "aot_eager")
            elif s == "compile_settings":
                section_compile_settings(rep, pack, a.device, a.tiny, dtype, a.compile_steps,
                                         a.compile_backend if a.device == "cuda" else "aot_eager")
            elif s == "harden":
                section_harden(rep, pack, a.device, a.tiny)
            else:
                rep.log(f"[bench] unknown section {s!r}")
        except Exception as e:  # noqa: BLE001  (one failed section must not lose the others)
            rep.log(f"[bench] section {s} FAILED: {type(e).__name__}: {e}")
            rep.log(traceback.format_exc())
            rep.data["sections"][s] = {"error": f"{type(e).__name__}: {e}"}
        rep.log(f"[bench] section {s} took {time.perf_counter() - t0:.1f}s")
        rep.save()
    rep.log("\n## Summary (" + env["card"] + f"; torch {env['torch']}, triton {tv}, ComfyUI {cv})")
    for title, header, rows in rep.tables:
        rep.log(render_table(title, header, rows))
    rep.save()


if __name__ == "__main__":
    main()
