"""Every error a user can meet for a bad input (node inputs, graphs, models), collected in one run on
a real ComfyUI (issue 23): each starts with the node's display name, names the bad value and says
what to do, and each matches a row of docs/troubleshooting.md, the one source README's
troubleshooting rows are copied from (tests/test_packaging.py); a row no collected error matches
must say why it is still there (ROWS_NOT_COLLECTED), so rows for errors nobody can see go.

A case counts only if ComfyUI itself lets its inputs through (the schema's min / max / options:
ComfyUI's own validation pre-empts the pack's check otherwise, in the UI and through the API).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from stas_harness import comfy_env as ce, models

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TROUBLESHOOTING = ROOT / "docs" / "troubleshooting.md"
# Words of an instruction: every message says what to do.
FIX = re.compile(r"\b(use|set|connect|turn on|pick|give|raise|lower|record|type|remove|choose|disconnect|render|"
                 r"decode|save|copy|list|run|load|change|write)\b|\be\.g\.|\((valid|tracked:|recorded)", re.I)
# Rows of docs/troubleshooting.md no case below raises, and why they stay.
ROWS_NOT_COLLECTED = {
    "HunyuanImage 2.1": "an image model in ComfyUI's HunyuanVideo class; tests/test_integration_families.py",
    "CausalWanModel": "video models refused by class (and S2V on ComfyUI 0.3.x); tests/test_integration_wan_variants.py",
    "the profile lists N channels for one block": "a profile file written by hand or by another tool",
    "made on another <family> model": "needs two checkpoints: tests/test_integration_profiles.py",
    "fewer than the": "an internal consistency check ('please report')",
    "carries no packed layout": "an internal consistency check ('please report'); tests/test_integration_minimax.py",
    "ran outside ComfyUI's apply_model": "a patched model run by another pack's sampler",
    "runs none of those passes": "a guider that runs neither pass; tests/test_integration_window_guiders.py",
    "the recording of this run is incomplete": "an internal failure ('please report'); test_integration_visualizer",
    "the VAE decoded N latent frames": "a VAE of another model, after the renders; needs a real VAE of another family",
}


def _schema(node_cls):
    return {inp.id: inp for inp in node_cls.define_schema().inputs}


def _check_reachable(node_cls, inputs: dict) -> None:
    """ComfyUI's own validation would let these inputs through (min / max / combo options)."""
    schema = _schema(node_cls)
    for k, v in inputs.items():
        inp = schema.get(k)
        if inp is None or isinstance(v, (torch.Tensor, dict)) or not isinstance(v, (int, float, str)):
            continue
        lo, hi, opts = getattr(inp, "min", None), getattr(inp, "max", None), getattr(inp, "options", None)
        assert lo is None or v >= lo, f"{k}={v!r} is below ComfyUI's min {lo}: pre-empted"
        assert hi is None or v <= hi, f"{k}={v!r} is above ComfyUI's max {hi}: pre-empted"
        assert not opts or v in opts, f"{k}={v!r} is not one of {opts}: pre-empted"


def _node(pk, short, **inputs):
    cls = getattr(pk, short)
    _check_reachable(cls, inputs)
    return ce.run_node(cls, **inputs)


@pytest.fixture(scope="module")
def world(pk, tmp_path_factory):
    """A tiny Wan, a recording of one run of it, a saved profile and the folders the profile nodes use."""
    import folder_paths
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("errors")
    (base / "stas_profiles").mkdir()
    (base / "output").mkdir()
    old_out = folder_paths.get_output_directory()
    old_prof = folder_paths.folder_names_and_paths.get("stas_profiles")
    old_models = folder_paths.models_dir   # profile_folders() saves under models_dir: keep the testbed untouched
    folder_paths.models_dir = str(base)
    folder_paths.set_output_directory(str(base / "output"))
    folder_paths.folder_names_and_paths["stas_profiles"] = ([str(base / "stas_profiles")], {".safetensors"})
    model = models.tiny_wan()
    rm, rec = _node(pk, "rec", model=model, blocks="2").result[:2]
    samples = ce.sample(rm, ce.latent(), steps=3)
    (base / "stas_profiles" / "junk.safetensors").write_bytes(b"not a safetensors file")
    yield {"model": model, "rec": rec, "samples": samples, "base": base}
    folder_paths.models_dir = old_models
    folder_paths.set_output_directory(old_out)
    if old_prof is None:
        folder_paths.folder_names_and_paths.pop("stas_profiles", None)
    else:
        folder_paths.folder_names_and_paths["stas_profiles"] = old_prof


def _vis(pk, w, **kw):
    return _node(pk, "vis", recording=w["rec"], latent={"samples": w["samples"]}, **kw)


def _sample_stas(pk, w, latent, cfg=2.0, **kw):
    return ce.sample(_node(pk, "stas", model=w["model"], **kw).result[0], latent, steps=2, cfg=cfg)


# (case id, the node whose name the message must start with, the bad value it must name, the call)
CASES = [
    # STAS Model Patch: settings (at execution) and graph / model (before the first step)
    ("stas-blocks-missing", "stas", "99", lambda pk, w: _node(pk, "stas", model=w["model"], blocks="99")),
    ("stas-blocks-unreadable", "stas", "abc", lambda pk, w: _node(pk, "stas", model=w["model"], blocks="abc")),
    ("stas-blocks-backwards", "stas", "3-1", lambda pk, w: _node(pk, "stas", model=w["model"], blocks="3-1")),
    ("stas-blocks-none", "stas", "no block", lambda pk, w: _node(pk, "stas", model=w["model"], blocks=",")),
    ("stas-channels-unreadable", "stas", "abc", lambda pk, w: _node(pk, "stas", model=w["model"], channels="abc")),
    ("stas-channels-range", "stas", "500", lambda pk, w: _node(pk, "stas", model=w["model"], channels="500")),
    ("stas-channels-many", "stas", "65",
     lambda pk, w: _node(pk, "stas", model=w["model"], channels=",".join(map(str, range(65))))),
    ("stas-window", "stas", "0.6", lambda pk, w: _node(pk, "stas", model=w["model"], start_percent=0.6,
                                                       end_percent=0.4)),
    ("stas-unsupported", "stas", "MMDIT", lambda pk, w: _node(pk, "stas", model=models.tiny_sd3())),
    ("stas-profile-and-channels", "stas", "channels",
     lambda pk, w: _node(pk, "stas", model=w["model"], channels="1,2",
                         profile=pk.profile.MAProfile("Wan", 128, 4, {2: [1, 2]}))),
    ("stas-profile-other-model", "stas", "6 blocks",
     lambda pk, w: _node(pk, "stas", model=w["model"], profile=pk.profile.MAProfile("Wan", 128, 6, {2: [1, 2]}))),
    ("stas-image-latent", "stas", "(1, 16, 8, 8)", lambda pk, w: _sample_stas(pk, w, torch.zeros(1, 16, 8, 8))),
    ("stas-mask-no-token", "stas", "1x4x4",
     lambda pk, w: _sample_stas(pk, w, ce.latent(t=1), mask=_node(pk, "mask", first_frame=False).result[0])),
    ("stas-uncond-cfg1", "stas", "uncond", lambda pk, w: _sample_stas(pk, w, ce.latent(), cfg=1.0, apply_to="uncond")),
    # Boundary Mask Builder
    ("mask-no-token", "mask", "first_frame", lambda pk, w: _node(pk, "mask", first_frame=False, boundaries=False)),
    ("mask-not-video", "mask", "(1, 16, 8, 8)",
     lambda pk, w: _node(pk, "mask", latent={"samples": torch.zeros(1, 16, 8, 8)})),
    ("mask-fraction", "mask", "2", lambda pk, w: _node(pk, "mask", unit="fraction", head=2.0)),
    # MA Recorder
    ("rec-blocks-none", "rec", "'none'", lambda pk, w: _node(pk, "rec", model=w["model"], blocks="none")),
    ("rec-blocks-missing", "rec", "9", lambda pk, w: _node(pk, "rec", model=w["model"], blocks="9")),
    ("rec-steps-unreadable", "rec", "first", lambda pk, w: _node(pk, "rec", model=w["model"], steps="first")),
    ("rec-steps-backwards", "rec", "5-3", lambda pk, w: _node(pk, "rec", model=w["model"], steps="5-3")),
    ("rec-channels-range", "rec", "500", lambda pk, w: _node(pk, "rec", model=w["model"], channels="500")),
    ("rec-unsupported", "rec", "MMDIT", lambda pk, w: _node(pk, "rec", model=models.tiny_sd3())),
    ("rec-steps-outside-run", "rec", "10-20",
     lambda pk, w: ce.sample(_node(pk, "rec", model=w["model"], steps="10-20").result[0], ce.latent(), steps=2)),
    ("rec-memory", "rec", "max_memory_mb (1.0 MB)", lambda pk, w: ce.sample(
        _node(pk, "rec", model=w["model"], blocks="all", max_memory_mb=1).result[0], ce.latent(h=64, w=64), steps=20)),
    ("rec-image-latent", "rec", "(1, 16, 8, 8)",
     lambda pk, w: ce.sample(_node(pk, "rec", model=w["model"]).result[0], torch.zeros(1, 16, 8, 8), steps=2)),
    # MA Visualizer
    ("vis-empty", "vis", "recording is empty",
     lambda pk, w: _node(pk, "vis", recording=_node(pk, "rec", model=w["model"]).result[1],
                         latent={"samples": w["samples"]})),
    ("vis-other-run", "vis", "another run",
     lambda pk, w: _node(pk, "vis", recording=w["rec"], latent={"samples": w["samples"] + 1})),
    ("vis-block", "vis", "block 1", lambda pk, w: _vis(pk, w, block=1)),
    ("vis-step", "vis", "step 9", lambda pk, w: _vis(pk, w, step=9)),
    ("vis-sample", "vis", "sample 2", lambda pk, w: _vis(pk, w, sample=2)),
    ("vis-prompt", "vis", "'uncond'", lambda pk, w: _vis(pk, w, chunk="uncond")),
    ("vis-channel-text", "vis", "'big'", lambda pk, w: _vis(pk, w, channel="big")),
    ("vis-channel-untracked", "vis", "channel 3", lambda pk, w: _vis(pk, w, channel="3")),
    # Save / Load MA Profile
    ("save-name", "save", "'../x'", lambda pk, w: _node(pk, "save", recording=w["rec"],
                                                        latent={"samples": w["samples"]}, filename="../x")),
    ("save-exists", "save", "twice", lambda pk, w: [_node(pk, "save", recording=w["rec"], threshold=1.0,
                                                          latent={"samples": w["samples"]}, filename="twice")
                                                    for _ in range(2)]),
    ("save-no-channel", "save", "100000x", lambda pk, w: _node(pk, "save", recording=w["rec"], threshold=100000.0,
                                                                latent={"samples": w["samples"]}, filename="none")),
    ("load-missing", "load", "'nope.safetensors'", lambda pk, w: pk.load.execute(profile_name="nope.safetensors")),
    ("load-junk", "load", "junk.safetensors", lambda pk, w: pk.load.execute(profile_name="junk.safetensors")),
    # Temporal Seam Meter
    ("meter-length", "meter", "10 frames", lambda pk, w: _node(pk, "meter", images=torch.rand(10, 16, 16, 3))),
    ("meter-short", "meter", "4 frame", lambda pk, w: _node(pk, "meter", images=torch.rand(4, 16, 16, 3))),
    ("meter-pair", "meter", "13 frames",
     lambda pk, w: _node(pk, "meter", images=torch.rand(9, 16, 16, 3), images_b=torch.rand(13, 16, 16, 3))),
    # STAS Sweep (each before its first render)
    ("sweep-alphas", "sweep", "'x'", lambda pk, w: _sweep(pk, w, alphas="0.5, x")),
    ("sweep-windows", "sweep", "'0.4-0.2'", lambda pk, w: _sweep(pk, w, windows="0.4-0.2")),
    ("sweep-many", "sweep", "18 variants", lambda pk, w: _sweep(pk, w, alphas="0.1, 0.2, 0.3", blocks="0; 1; 2",
                                                                  windows="0-0.2, 0-0.4")),
    ("sweep-variant", "sweep", "block 9", lambda pk, w: _sweep(pk, w, blocks="middle; 9")),
    ("sweep-latent", "sweep", "[1, 16, 8, 8]", lambda pk, w: _sweep(pk, w, latent=torch.zeros(1, 16, 8, 8))),
    ("sweep-unsupported", "sweep", "MMDIT", lambda pk, w: _sweep(pk, w, model=models.tiny_sd3())),
    ("sweep-preset-name", "sweep", "'../x'", lambda pk, w: _sweep(pk, w, preset="../x")),
    ("sweep-preset-exists", "sweep", "twice.safetensors", lambda pk, w: _sweep(pk, w, preset="twice")),
    # STAS Model Patch (Ray), when a graph with it is queued (ComfyUI's validation)
    ("ray-not-installed", "ray", "'ray'", lambda pk, w: _ray_queued(pk, None)),
    ("ray-not-connected", "ray", "ray_actors", lambda pk, w: _ray_queued(pk, _stand_in_ray())),
]


def _stand_in_ray():
    import types
    ray = types.ModuleType("ray")
    ray.cloudpickle = types.ModuleType("ray.cloudpickle")
    return ray


def _ray_queued(pk, ray):
    """STAS Model Patch (Ray) with ray_actors unlinked, as ComfyUI validates it when queued; ``import ray``
    finds ``ray`` (None: not installed, as without raylight)."""
    import sys
    old = sys.modules.pop("ray", None)
    sys.modules["ray"] = ray
    try:
        return pk.module("nodes.ray_patch").StasModelPatchRay.validate_inputs()
    finally:
        del sys.modules["ray"]
        if old is not None:
            sys.modules["ray"] = old


def _sweep(pk, w, latent=None, **kw):
    """STAS Sweep with the world's model (its VAE is never reached: every case fails before the first render)."""
    args = dict(model=w["model"], positive=ce.text_cond(seed=1), negative=ce.text_cond(seed=2),
                latent_image={"samples": ce.latent() if latent is None else latent}, vae=None)
    return _node(pk, "sweep", **{**args, **kw})


def _display_names(pk) -> dict:
    names = {short: getattr(pk, short).define_schema().display_name for short in ce.NODES}
    return {**names, "ray": pk.module("nodes.ray_patch").StasModelPatchRay.define_schema().display_name}


def _prefix(display: str) -> str:
    """What a message starts with: the node's title without the pack tag, e.g. 'MA Recorder'."""
    return display.removesuffix(" (STAS)")


@pytest.fixture(scope="module")
def collected(pk, world):
    out = {}
    for case, node, bad, call in CASES:
        try:
            call(pk, world)
        except Exception as e:  # noqa: BLE001: every error counts, whatever its class
            out[case] = f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
        else:
            out[case] = None
    return out


def _row_patterns() -> list[tuple[str, list[re.Pattern]]]:
    """(row, [regex per backticked message of its first cell]) of every table row of the page."""
    rows = []
    for line in TROUBLESHOOTING.read_text().splitlines():
        if not line.startswith("| ") or line.startswith("| message starts with") or line.startswith("|---"):
            continue
        first = line.split(" | ", 1)[0]
        pats = []
        for seg in re.findall(r"`([^`]+)`", first):
            rx = re.escape(seg)
            rx = rx.replace(r"\.\.\.", ".*?")
            rx = re.sub(r"<[^>]+>", ".+?", rx)
            rx = re.sub(r"\b[NM]\b", r"\\S+", rx)
            rx = re.sub(r"\\\#N\b", r"#\\S+", rx)
            pats.append(re.compile(rx, re.S))
        rows.append((line, pats))
    return rows


@pytest.mark.parametrize("case,node,bad", [c[:3] for c in CASES], ids=[c[0] for c in CASES])
def test_error_names_node_value_and_fix(pk, collected, case, node, bad):
    msg = collected[case]
    assert msg is not None, f"{case}: no error was raised"
    name = _prefix(_display_names(pk)[node])
    assert msg.startswith(f"{name}: "), f"{case}: does not start with the node's name {name!r}: {msg}"
    assert bad in msg, f"{case}: does not name the bad value {bad!r}: {msg}"
    assert FIX.search(msg.split(": ", 1)[1]), f"{case}: says nothing to do: {msg}"
    rows = [row for row, pats in _row_patterns() if any(p.search(msg) for p in pats)]
    assert rows, f"{case}: no row of docs/troubleshooting.md matches: {msg}"


def test_every_troubleshooting_row_is_met(collected):
    """Each error row of docs/troubleshooting.md is matched by a collected error or says in
    ROWS_NOT_COLLECTED why it stays (console warnings and info lines are not errors)."""
    msgs = [m for m in collected.values() if m]
    unmet = []
    for row, pats in _row_patterns():
        if row.startswith("| (warning") or row.startswith("| (info"):
            continue
        if any(p.search(m) for p in pats for m in msgs):
            continue
        if any(key in row for key in ROWS_NOT_COLLECTED):
            continue
        unmet.append(row[:160])
    assert not unmet, "rows no collected error matches (remove them, or add a case):\n" + "\n".join(unmet)
    page = TROUBLESHOOTING.read_text()
    stale = [key for key in ROWS_NOT_COLLECTED if key not in page]
    assert not stale, f"ROWS_NOT_COLLECTED names rows that are gone: {stale}"
