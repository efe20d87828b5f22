"""The compatibility matrix (docs/compatibility.md): STAS Model Patch and the MA Recorder beside the nodes
ComfyUI ships for video models, each taken from ComfyUI's own node mappings (comfy_extras) and run on a tiny
random-weight Wan 2.1 or LTX-2 of ComfyUI's own classes, in both node orders.

For every partner of tools/compat_table.PARTNERS:

(a) every block call STAS sees is steered exactly (alpha * M * sign on the mask's tokens, everything else
    bit-identical: test_integration_families.check_call on the block output before and after STAS), and the
    MA Recorder records exactly the steps whose block ran;
(b) the partner's sampled result is bit-identical with and without a STAS Model Patch whose window holds no
    step of the run (installed, steering nothing), and with blend 0 (the node passes the MODEL through);
(c) 20 runs leave the MODEL's patches, wrappers and options as they were, keep at most the recorder's runs,
    and grow no tensors;
(d) beside a step cache (EasyCache, LazyCache): STAS's pre-run line names the steered steps the cache may
    skip, its after-run line the ones skipped (those whose block never ran), and the MA Recorder records the
    computed steps only and names the skipped ones.
Context windows, SkipLayerGuidance, TorchCompileModel and MultiGPU are tested in the modules the table names.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import re
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stas_harness import comfy_env as ce, models
from test_integration_families import Rec, check_call, stas
from test_integration_new_families import AVRec, av_latent, ltx_conds
from tools import compat_table
from tools.compat_table import PARTNERS, Partner

KEY = ("double_block", 1)
FRAME = 16         # tokens per latent frame: Wan latent 8 x 8 with patch (1, 2, 2), LTX-2 4 x 4 with patch 1
CASES = [pytest.param(p, order, id=f"{p.id}-{order}") for p in PARTNERS for order in p.orders]


# -- the partner nodes, from ComfyUI's own mappings ---------------------------------------------------

def version() -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", ce.comfy_version())[:3])


def node_class(p: Partner):
    """The partner's node class; a skip where the table says the pair is not tested on this ComfyUI (node or
    model absent, or the pair failing here: test_pair_fails_before_since), a failure where it says it is."""
    cls = lookup(p)
    if version() < since(p):
        pytest.skip(f"ComfyUI {ce.comfy_version()}: {p.node} on {p.model} is tested from {p.since} on (the table)"
                    + ("; why it cannot work here: test_pair_fails_before_since" if p.older and cls is not None
                       else "; the node or the model is absent here"))
    assert cls is not None, f"ComfyUI {ce.comfy_version()} should have {p.node} (table: since {p.since})"
    assert p.model != "ltx2" or models.has_ltxav(), f"ComfyUI {ce.comfy_version()} should have LTX-2"
    return cls


def lookup(p: Partner):
    """The partner's node class as ComfyUI registers it, or None where this ComfyUI has none."""
    import nodes as comfy_nodes
    path = ce.comfyui_path() / "comfy_extras" / p.module
    if p.node not in comfy_nodes.NODE_CLASS_MAPPINGS and path.exists():
        ce.ensure_extra_node(p.node, p.module)
    return comfy_nodes.NODE_CLASS_MAPPINGS.get(p.node)


def since(p: Partner) -> tuple:
    return tuple(int(x) for x in p.since.split("."))


def call_node(cls, **inputs):
    """A node's function at its declared defaults (a combo without one: its first option) with ``inputs`` on
    top (V3 schema or V1 INPUT_TYPES)."""
    if hasattr(cls, "define_schema"):
        first = {i.id: i.options[0] for i in cls.define_schema().inputs
                 if getattr(i, "default", None) is None and getattr(i, "options", None)}
        return tuple(ce.run_node(cls, **{**first, **inputs}))
    req = cls.INPUT_TYPES().get("required", {})
    defaults = {k: v[1]["default"] for k, v in req.items()
                if len(v) > 1 and isinstance(v[1], dict) and "default" in v[1]}
    return tuple(getattr(cls(), cls.FUNCTION)(**{**defaults, **inputs}))


def apply(p: Partner, model):
    return call_node(node_class(p), model=model, **p.inputs)[0]


# -- models, sampling ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(pk):
    torch.set_num_threads(1)
    yield SimpleNamespace(pk=pk, base={})
    gc.unfreeze()


def base_model(env, p: Partner):
    if p.model not in env.base:
        env.base[p.model] = models.tiny_wan(num_layers=4) if p.model == "wan" else models.tiny_ltxav(num_layers=2)
    return env.base[p.model]


def latent_and_conds(p: Partner):
    if p.model == "wan":
        return ce.latent(t=p.frames, h=8, w=8), (ce.text_cond(seed=1), ce.text_cond(seed=2))
    return av_latent(t=p.frames), ltx_conds(dim=128)


def run(p: Partner, model, steps: int = 3, seed: int = 0):
    """One sampling run of ``model`` (KSampler's path, or the partner guider's own), as a list of tensors."""
    lat, (pos, neg) = latent_and_conds(p)
    if p.kind == "guider":
        import comfy.sample
        import comfy.samplers
        guider = call_node(node_class(p), model=model, positive=pos, negative=neg, **p.inputs)[0]
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps)
        noise = comfy.sample.prepare_noise(lat, seed)
        with torch.inference_mode():
            out = guider.sample(noise, lat, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True,
                                seed=seed)
    else:
        out = ce.sample(model, lat, steps=steps, cfg=2.0, positive=pos, negative=neg, seed=seed)
    return [t.clone() for t in (out.unbind() if getattr(out, "is_nested", False) else [out])]


def recorder(model):
    return ce.run_node(ce.Pack().rec, model, blocks="1", steps="all", record="cond", channels="3,70", top_k=2)


def stacked(env, p: Partner, order: str, **stas_kw):
    """base -> [partner] -> pre recorder -> STAS on block 1 -> post recorder -> MA Recorder -> [partner]
    (``order`` "before" / "after"; any other: no partner): (the MODEL to sample, pre, post, recording)."""
    m = base_model(env, p)
    if order == "before":
        m = apply(p, m)
    pre = Rec() if p.model == "wan" else AVRec()
    m0 = m.clone()
    m0.set_model_patch_replace(pre, "dit", *KEY)
    patched = stas(m0, blocks="1", **stas_kw)
    sp = patched.model_options["transformer_options"]["patches_replace"]["dit"][KEY]
    assert isinstance(sp, env.pk.hooks.BlockReplacePatch) and sp.inner is pre, "STAS did not chain the block patch"
    post = Rec(inner=sp) if p.model == "wan" else AVRec(inner=sp)
    m1 = patched.clone()
    m1.set_model_patch_replace(post, "dit", *KEY)
    m2, recording = recorder(m1)
    if order == "after":
        m2 = apply(p, m2)
    return m2, pre, post, recording


def computed_steps(recording, post) -> set:
    """Steps (from 0) at which STAS's block ran, read from the post recorder's calls."""
    lay = recording.runs[-1].layout
    return {lay.step_of(c["sigma"]) for c in post.calls}


# -- (a) exact steering, the recorder records the computed steps -----------------------------------

@pytest.mark.parametrize("p,order", CASES)
def test_steers_exactly_beside(env, p, order):
    node_class(p)   # skips where this ComfyUI lacks the node or the model
    model, pre, post, recording = stacked(env, p, order)
    out = run(p, model, steps=3)
    assert all(torch.isfinite(t).all() for t in out)
    assert post.calls and len(pre.calls) == len(post.calls), (len(pre.calls), len(post.calls))
    frames = set()
    for a, b in zip(pre.calls, post.calls):
        t = a["img"].shape[1] // FRAME   # a context window's call sees its own frames: steered as that video
        frames.add(t)
        check_call(a, b, 0, (t, 4, 4), 0)
    assert frames == {p.frames} if p.frames == 3 else max(frames) < p.frames, f"frames per call: {frames}"
    run_rec = recording.runs[-1]
    assert not run_rec.notes, run_rec.notes
    assert set(run_rec.recorded_steps()) == computed_steps(recording, post)
    e = run_rec.entries[(1, min(run_rec.recorded_steps()), 0)]
    assert e.has_steer, "the MA Recorder did not record STAS's steering"


# -- (b) the partner's result with STAS steering nothing ----------------------------------------------

@pytest.mark.parametrize("p,order", CASES)
def test_partner_result_unchanged_with_empty_window(env, p, order):
    node_class(p)   # skips where this ComfyUI lacks the node or the model
    base = base_model(env, p)
    alone = apply(p, base) if p.kind != "guider" else base
    want = run(p, alone, steps=4)
    at_work = not all(torch.equal(a, b) for a, b in zip(want, run(dataclasses.replace(p, kind="patch"), base, steps=4)))
    assert at_work == p.changes, f"{p.node} {'changes nothing' if p.changes else 'changes the result'} here"
    # 4 simple steps sit at denoising fractions 0, 0.25, 0.5, 0.75: a 0.3-0.45 window holds none, and STAS
    # installs its patches (the run decides), so this is STAS present and idle, not absent
    for kw in (dict(start_percent=0.3, end_percent=0.45), dict(blend=0.0)):
        if order == "before":
            m = stas(alone, blocks="1", **kw)
        else:
            m = stas(base, blocks="1", **kw)
            m = apply(p, m) if p.kind != "guider" else m
        if "blend" not in kw:
            keys = m.wrappers.get("apply_model", {})
            assert any(k.startswith("comfyui-stas") for k in keys), "STAS installed nothing"
        got = run(p, m, steps=4)
        assert all(torch.equal(a, b) for a, b in zip(want, got)), f"{kw}: the partner's result changed"


# -- (c) 20 runs: no leak ------------------------------------------------------------------------------

def footprint(model) -> dict:
    """Sizes of everything a run could leave on a MODEL (ModelPatcher)."""
    mo = model.model_options
    to = mo.get("transformer_options", {})
    return dict(
        options=sorted(mo), transformer_options=sorted(to),
        wrappers={k: {kk: len(v) for kk, v in w.items()} for k, w in to.get("wrappers", {}).items()},
        callbacks={k: {kk: len(v) for kk, v in w.items()} for k, w in to.get("callbacks", {}).items()},
        patches={k: len(v) for k, v in to.get("patches", {}).items()},
        replace={k: len(v) for k, v in to.get("patches_replace", {}).items()},
        object_patches=sorted(model.object_patches), weight_patches=len(model.patches),
        post_cfg=len(mo.get("sampler_post_cfg_function", [])), pre_cfg=len(mo.get("sampler_pre_cfg_function", [])))


def n_tensors() -> int:
    """Tensors alive, but those frozen before the first leak test (ComfyUI's, the models'): a cheap count."""
    gc.collect()
    with warnings.catch_warnings():   # isinstance on deprecated torch objects warns
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("p,order", CASES)
def test_twenty_runs_no_leak(env, p, order):
    node_class(p)   # skips where this ComfyUI lacks the node or the model
    base = base_model(env, p)
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    base_before = footprint(base)
    model, pre, post, recording = stacked(env, p, order)
    before = footprint(model)
    for i in range(20):
        pre.calls.clear()
        post.calls.clear()
        run(p, model, steps=1, seed=i)
        if i == recording.keep:   # the recorder keeps its last `keep` runs: full from here on
            tensors = n_tensors()
    assert n_tensors() <= tensors, "tensors piled up over 20 runs"
    assert footprint(model) == before, "a run left something on the MODEL"
    assert footprint(base) == base_before, "the loaded MODEL was changed"
    assert len(recording.runs) <= recording.keep


# -- (d) step caches: the steps skipped are said, the recorder records computed steps only --------------

def _steps(text: str, pattern: str) -> set:
    m = re.search(pattern, text)
    return {int(x) for x in m.group(1).split(", ")} if m else set()


@pytest.mark.parametrize("p,order", [c for c in CASES if c.values[0].kind == "cache"])
def test_cache_skips_are_named(env, p, order, caplog):
    node_class(p)   # skips where this ComfyUI lacks the node or the model
    model, pre, post, recording = stacked(env, p, order, end_percent=0.9)
    with caplog.at_level(logging.INFO):
        run(p, model, steps=8)
    said = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    lay = recording.runs[-1].layout
    steered = {i + 1 for i in range(8) if lay.sigmas[i] > model.get_model_object("model_sampling").percent_to_sigma(
        0.9 - 0.0015)}
    computed = {s + 1 for s in computed_steps(recording, post)}
    skipped = steered - computed
    assert skipped, f"{p.node} skipped no steered step: the test would show nothing (computed {sorted(computed)})"
    pre_line = next((s for s in said if "may skip steered step(s)" in s), None)
    assert pre_line is not None and f"{p.node} (" in pre_line, said
    may = _steps(pre_line, r"may skip steered step\(s\) ([\d, ]+) of 8")
    assert skipped <= may <= steered, (sorted(skipped), sorted(may), sorted(steered))
    after = next((s for s in said if f"{p.node} skipped steered step(s)" in s), None)
    assert after is not None, said
    assert _steps(after, r"skipped steered step\(s\) ([\d, ]+) of 8") == skipped, after
    assert f"STAS steered {len(steered) - len(skipped)} of the {len(steered)} steps" in after
    assert said.index(pre_line) < said.index(after)
    # the recorder: computed steps only, and the skipped ones named
    run_rec = recording.runs[-1]
    assert {s + 1 for s in run_rec.recorded_steps()} == computed
    rec_line = next((s for s in said if s.startswith(f"comfyui-stas MA Recorder: {p.node} skipped step(s)")), None)
    assert rec_line is not None, said
    assert {s + 1 for s in _steps(rec_line, r"skipped step\(s\) ([\d, ]+) \(")} == set(range(1, 9)) - computed


@pytest.mark.parametrize("p", [p for p in PARTNERS if p.older], ids=lambda p: p.id)
def test_pair_fails_before_since(env, p):
    """Where the table says a pair cannot work on an older ComfyUI that has the node, the node fails there by
    itself, without STAS (so the row's reason holds)."""
    if version() >= since(p) or lookup(p) is None or (p.model == "ltx2" and not models.has_ltxav()):
        pytest.skip(f"ComfyUI {ce.comfy_version()}: the pair is tested as working here, or cannot be built")
    with pytest.raises(Exception) as e:
        run(p, call_node(lookup(p), model=base_model(env, p), **p.inputs)[0], steps=4)
    assert str(e.value) in p.older, f"{p.id}: the row's reason does not name this error: {e.value!r}"


def test_cache_under_torch_compile_says_only_the_pre_run_line(env, caplog):
    """A compiled model replays its graph without running STAS's Python, so which steps the cache skipped is
    not seen: STAS says what it may skip before the run and nothing after it (rather than something false)."""
    import torch._dynamo
    p = PARTNERS[0]
    node_class(p)
    ce.ensure_extra_node("TorchCompileModel", "nodes_torch_compile.py")
    import nodes as comfy_nodes
    torch._dynamo.reset()
    model = stas(apply(p, base_model(env, p)), blocks="1", end_percent=0.9)
    model = comfy_nodes.NODE_CLASS_MAPPINGS["TorchCompileModel"].execute(model, "aot_eager")[0]
    with caplog.at_level(logging.INFO):
        out = run(p, model, steps=8)
    torch._dynamo.reset()
    assert torch.isfinite(out[0]).all()
    said = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    assert any("EasyCache (0-0.95 of denoising) may skip steered step(s)" in s for s in said), said
    assert not any("EasyCache skipped" in s for s in said), said


@pytest.mark.parametrize("p", [p for p in PARTNERS if p.kind == "cache" and p.model == "wan"], ids=lambda p: p.id)
def test_cache_started_at_the_window_end_skips_no_steered_step(env, p, caplog):
    """The table's advice: a cache whose start_percent is STAS's end_percent leaves every steered step computed,
    and STAS says nothing of it."""
    node_class(p)
    model, pre, post, recording = stacked(env, p, "none", end_percent=0.4)   # the cache not yet applied
    model = apply(dataclasses.replace(p, inputs={**p.inputs, "start_percent": 0.4}), model)
    with caplog.at_level(logging.INFO):
        run(p, model, steps=10)
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "comfyui-stas")
    assert "may skip" not in said and "skipped steered" not in said, said
    steered = {round(c["sigma"], 6) for a, c in zip(pre.calls, post.calls) if not torch.equal(a["img"], c["img"])}
    assert len(steered) == 4, f"{len(steered)} steps steered, not the 4 of 0-0.4 of 10"
    assert len(recording.runs[-1].recorded_steps()) < 10, f"{p.node} skipped no step at all: the test shows nothing"


def test_no_cache_no_cache_lines(env, caplog):
    """Without a cache STAS and the MA Recorder say nothing of one, and every step is recorded."""
    p = Partner("none", "", "", "wan", "0.3.64", "")
    model, pre, post, recording = stacked(env, p, "none", end_percent=0.6)
    with caplog.at_level(logging.INFO):
        run(p, model, steps=8)
    said = " ".join(r.getMessage() for r in caplog.records if r.name == "comfyui-stas")
    assert "skip" not in said, said
    assert set(recording.runs[-1].recorded_steps()) == set(range(8))


# -- the table in docs/compatibility.md ---------------------------------------------------------------

def test_doc_table_is_generated():
    """docs/compatibility.md's matrix is tools/compat_table.py's rendering, and every test it names exists."""
    text = compat_table.DOC.read_text()
    assert compat_table.doc_block(text) == compat_table.block(), \
        "docs/compatibility.md's table is stale: run python3 tools/compat_table.py --write"
    root = Path(__file__).resolve().parents[1]
    for _, _, _, _, tests, _ in compat_table.REFERENCED:
        for ref in tests.split(","):
            path, _, name = ref.strip().partition("::")
            src = (root / path).read_text()
            assert not name or f"def {name}(" in src, f"{ref}: no such test"
    assert len({p.id for p in PARTNERS}) == len(PARTNERS)
