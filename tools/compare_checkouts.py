"""Compare this checkout's nodes with another commit's on tiny random-weight models: every sampled
latent and every MA Recorder entry must be bit-identical (a refactor's "behaviour unchanged").

    python3 tools/compare_checkouts.py --comfyui PATH --old REV

Loads both packs into one real ComfyUI (CPU), runs the same settings through each pack's STAS
Model Patch and MA Recorder, prints one line per case and exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)

ALL = dict(blocks="all", record="both")
CASES = [  # (model, STAS inputs, MA Recorder inputs after STAS or None)
    ("wan", {}, None),
    ("wan", dict(threshold=1.0), None),
    ("wan", dict(threshold=1.0, blocks="all", apply_to="both", end_percent=1.0), None),
    ("wan", dict(channels="3,17,64", alpha=0.8, blend=0.5, blocks="1-2"), None),
    ("wan", dict(threshold=1.0, start_percent=0.25, end_percent=0.75, apply_to="uncond"), None),
    ("wan", dict(threshold=1.0), ALL),
    ("wan", dict(channels="3,17", blend=0.7, blocks="all"), ALL),
    ("wan", dict(threshold=1.0), dict(blocks="1,3", steps="1,-1", channels="5,9", token_stride=2)),
    ("hunyuan", dict(threshold=1.0, blocks="all"), None),
    ("hunyuan", dict(threshold=1.0), ALL),
]


def load(pack_dir: Path):
    import nodes as comfy_nodes
    assert asyncio.run(comfy_nodes.load_custom_node(str(pack_dir))) is not False, pack_dir
    name = str(pack_dir).replace(".", "_x_")
    return importlib.import_module(f"{name}.nodes")


def run(nodes, model, latent, kw, record, cond):
    from stas_harness.comfy_env import node_defaults, sample
    smp = nodes.StasModelPatch
    m = smp.execute(**{**node_defaults(smp), "model": model, **kw})[0]
    rec = None
    if record is not None:
        r = nodes.MARecorder
        m, rec = r.execute(**{**node_defaults(r), "model": m, **record})
    out = sample(m, latent, steps=4, **cond)
    entries = {}
    if rec is not None:
        for key, e in rec.runs[-1].entries.items():
            entries[key] = [t for t in (e.mag, e.peak, e.abs_sum, e.channels, e.steer_before, e.steer_after) if t is not None]
    return out, entries


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", required=True, help="ComfyUI checkout (its main.py folder)")
    old = ap.add_mutually_exclusive_group(required=True)
    old.add_argument("--old", help="the commit to compare with (e.g. the one before a refactor)")
    old.add_argument("--old-dir", help="or a folder holding that commit's pack (where there is no git history)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the Triton path and async copies")
    a = ap.parse_args()
    import torch
    from stas_harness.comfy_env import import_comfyui, latent, text_cond
    from stas_harness.models import tiny_hunyuan_video, tiny_wan

    torch.set_num_threads(1)
    import_comfyui(a.comfyui, cpu=a.device == "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        if a.old_dir:
            old_dir = Path(a.old_dir).resolve()
        else:
            old_dir = Path(tmp) / "comfyui-stas-old"
            old_dir.mkdir()
            tar = subprocess.run(["git", "-C", str(ROOT), "archive", a.old], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old_dir)], input=tar, check=True)
        new, old = load(ROOT), load(old_dir)
        models = {"wan": tiny_wan(), "hunyuan": tiny_hunyuan_video()}
        g = torch.Generator().manual_seed(7)
        pooled = dict(pooled_output=torch.randn(1, 768, generator=g))
        conds = {"wan": {}, "hunyuan": dict(positive=text_cond(seed=1, **pooled), negative=text_cond(seed=2, **pooled))}
        bad = 0
        for name, kw, record in CASES:
            lat = latent(t=5)
            got_new, rec_new = run(new, models[name], lat, kw, record, conds[name])
            got_old, rec_old = run(old, models[name], lat, kw, record, conds[name])
            same = torch.equal(got_new, got_old) and rec_new.keys() == rec_old.keys() and all(
                len(rec_new[k]) == len(rec_old[k]) and all(torch.equal(x, y) for x, y in zip(rec_new[k], rec_old[k]))
                for k in rec_new)
            bad += not same
            print(f"{'same' if same else 'DIFFERENT'}  {name} {kw}"
                  f"{f' + MA Recorder {record} ({len(rec_new)} entries)' if record is not None else ''}")
    print(f"{len(CASES) - bad} of {len(CASES)} cases bit-identical to {a.old or a.old_dir} ({a.device})")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
