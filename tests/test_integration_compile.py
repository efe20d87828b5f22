"""STAS under ComfyUI's own TorchCompileModel node, on real ComfyUI (CPU, backend aot_eager).

What users do with a compiled model: change a STAS setting, bypass STAS and bring it back, change
its blocks, chain or remove a second STAS node, add the MA Recorder, in either order with
TorchCompileModel. ComfyUI keeps TorchCompileModel's compiled module across runs, and from 0.8 its
guard filter drops every guard on transformer_options. Every run must equal the same graph sampled
uncompiled; a new graph is compiled only for a new layout (which plans and blocks), never for a
setting; and dynamo must never reach its recompile limit (a run past it falls back to eager and
would pass for the wrong reason): the ``dynamo`` fixture makes that a hard failure.

With ComfyUI's default CPU attention, or another pack's patch, the graph breaks inside every block; the
last two tests check that STAS then samples uncompiled and says so once, before sampling, with the fix
(nodes/compile_breaks.py).
"""
from __future__ import annotations

import contextlib

import functools
from types import SimpleNamespace

import pytest
import torch

from stas_harness import comfy_env as ce
from stas_harness.comfy_env import pack_module, sample
from stas_harness.models import tiny_wan

pytestmark = pytest.mark.integration

LATENT = (1, 16, 5, 8, 8)


@pytest.fixture(scope="module")
def env(pk):
    torch.set_num_threads(1)
    import comfy_extras.nodes_torch_compile as ntc
    return SimpleNamespace(wan=tiny_wan(num_layers=4), ntc=ntc)


@pytest.fixture
def dynamo(monkeypatch, caplog):
    """A fresh dynamo cache, PyTorch attention as on a GPU (CPU sub-quadratic attention reads
    psutil: a graph break, which no GPU graph of these models has), and the recompile limit a
    hard error; afterwards, dynamo must not have logged reaching it either."""
    import logging

    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan
    import torch._dynamo
    monkeypatch.setattr(wan, "optimized_attention", attention.attention_pytorch)
    torch._dynamo.reset()
    caplog.set_level(logging.WARNING, logger="torch._dynamo")
    from torch._dynamo.utils import counters
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        yield
    hit = [r.getMessage() for r in caplog.records if "recompile_limit" in r.getMessage()
           or "cache_size_limit" in r.getMessage()]
    hit += [k for group in ("graph_break", "unimplemented") for k in counters[group]
            if "limit" in str(k).lower()]  # "Dynamo cache limit exceeded": a frame left to eager
    assert not hit, hit


# The nodes as ComfyUI calls them, at their declared defaults; STAS on block 1, channels 3 and 17, every step.
stas = functools.partial(ce.stas, blocks="1", channels="3,17", end_percent=1.0)
mask = ce.boundary_mask


def compiled(env, model):
    """TorchCompileModel's own code (with its guard filter where this ComfyUI has one)."""
    return env.ntc.TorchCompileModel.execute(model, "aot_eager")[0]


def graphs() -> int:
    from torch._dynamo.utils import counters
    return counters["stats"]["unique_graphs"]


def run(model, shape=LATENT, steps=3):
    return sample(model, torch.zeros(shape), steps=steps, cfg=2.0)


def close(a, b):
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5)


# Each step changes one thing the compiled graph must not have baked in; every result is checked
# against the uncompiled run of the same settings, and the settings differ enough to tell apart.
SEQUENCE = [
    ("first run", {}),
    ("alpha", dict(alpha=0.3)),
    ("blend", dict(alpha=0.3, blend=0.5)),
    ("window", dict(end_percent=0.5)),
    ("mask", dict(mask=dict(first_frame=False))),
    ("apply_to", dict(apply_to="both")),
    ("channels", dict(channels="5,9,60")),
    ("auto channels", dict(channels="auto", threshold=1.5, top_k=2)),
    ("threshold", dict(channels="auto", threshold=1000.0, top_k=2)),
    ("back to the first", {}),
]


def settings(kw):
    kw = dict(kw)
    if "mask" in kw:
        kw["mask"] = mask(**kw["mask"])
    return kw


@pytest.mark.slow
def test_settings_take_effect_without_recompiling(env, dynamo):
    base = env.wan
    cm = compiled(env, base)  # cached: the same compiled module for every run below
    plain = run(base)
    results, after_first = {}, None
    for name, kw in SEQUENCE:
        got = run(stas(cm, **settings(kw)))
        want = run(stas(base, **settings(kw)))
        assert close(got, want), f"{name}: the compiled run differs from the eager one " \
                                 f"(max {float((got - want).abs().max()):.3g})"
        results[name] = want
        if after_first is None:
            after_first = graphs()
    assert graphs() == after_first, f"a STAS setting change recompiled ({after_first} -> {graphs()} graphs)"
    # the sequence is a real test: each setting changed the result (but 'threshold' 1000 steers nothing)
    for name, _ in SEQUENCE[1:-1]:
        ref = plain if name == "threshold" else results["first run"]
        if name == "threshold":
            assert close(results[name], plain)
        else:
            assert not close(results[name], ref), f"{name} changed nothing; the test cannot tell"


@pytest.mark.slow
def test_resolution_change_gives_the_eager_result(env, dynamo):
    base = env.wan
    cm = compiled(env, base)
    for shape in (LATENT, (1, 16, 3, 12, 8), (1, 16, 7, 8, 12), LATENT):
        for kw in (dict(), dict(alpha=0.5, mask=dict(first_frame=False))):
            got = run(stas(cm, **settings(kw)), shape=shape, steps=2)
            want = run(stas(base, **settings(kw)), shape=shape, steps=2)
            assert close(got, want), f"{shape} {kw}"


@pytest.mark.slow
def test_two_chained_stas_nodes_under_compile(env, dynamo):
    base = env.wan
    cm = compiled(env, base)
    for a1, a2 in ((1.0, 1.0), (0.3, 1.0), (0.3, 0.6)):
        got = run(stas(stas(cm, blocks="1", alpha=a1), blocks="2", alpha=a2, channels="4,20"))
        want = run(stas(stas(base, blocks="1", alpha=a1), blocks="2", alpha=a2, channels="4,20"))
        assert close(got, want), (a1, a2)


def test_keys_are_stable_across_runs_and_distinct_when_chained(env):
    hooks = pack_module("nodes.hooks")
    wrappers = lambda m: [k for k in m.wrappers[patching_wrappers()].keys() if k.startswith("comfyui-stas.")]  # noqa: E731
    one, again = stas(env.wan), stas(env.wan, alpha=0.2)
    assert wrappers(one) == wrappers(again) == ["comfyui-stas.0"]
    two = stas(one, blocks="2")
    assert sorted(wrappers(two)) == ["comfyui-stas.0", "comfyui-stas.1"]
    assert hooks.WRAPPER_KEY == "comfyui-stas"


def patching_wrappers():
    import comfy.patcher_extension as pe
    return pe.WrappersMP.APPLY_MODEL


def test_channel_lists_over_the_cap_fail_at_node_execution(env):
    with pytest.raises(ValueError, match="STAS Model Patch: channels: 65 channels listed, more than the 64"):
        stas(env.wan, channels="0-64")
    stas(env.wan, channels="0-63")  # 64 is allowed


def eager_rounding(env, cm) -> float:
    """How far the compiler alone moves the unpatched result: the tolerance of every comparison."""
    return max(1e-5, 2.0 * float((run(cm) - run(env.wan)).abs().max()))


def check(rows, tol):
    """rows: (name, compiled, eager) results; each pair must agree within ``tol``."""
    bad = [(name, float((got - want).abs().max())) for name, got, want in rows if not close_to(got, want, tol)]
    assert not bad, f"compiled differs from eager beyond the compiler's rounding {tol:.3g}: {bad}"


def close_to(a, b, tol):
    return bool((a - b).abs().max() <= tol)


def test_bypass_and_back_with_torch_compile_first(env, dynamo):
    """TorchCompileModel -> STAS Model Patch -> sampler, then STAS bypassed, then back, twice."""
    base = env.wan
    cm = compiled(env, base)
    tol = eager_rounding(env, cm)
    plain, steered = run(base), run(stas(base))
    assert not close_to(plain, steered, tol)
    rows, counts = [], []
    for name, model, want in (("STAS", lambda: stas(cm), steered), ("bypassed", lambda: cm, plain),
                              ("STAS back", lambda: stas(cm), steered), ("bypassed again", lambda: cm, plain),
                              ("STAS again", lambda: stas(cm, alpha=0.5), run(stas(base, alpha=0.5)))):
        rows.append((name, run(model()), want))
        counts.append(graphs())
    check(rows, tol)
    assert counts[2:] == [counts[1]] * 3, f"graphs per run {counts}: only the first of each layout may compile"


def test_bypass_and_back_with_stas_first(env, dynamo):
    """STAS Model Patch -> TorchCompileModel -> sampler: bypassing STAS re-runs TorchCompileModel."""
    base = env.wan
    cm = compiled(env, base)
    tol = eager_rounding(env, cm)
    plain, steered = run(base), run(stas(base))
    rows = [(name, run(compiled(env, model())), want)
            for name, model, want in (("STAS", lambda: stas(base), steered), ("bypassed", lambda: base, plain),
                                      ("STAS back", lambda: stas(base), steered),
                                      ("new alpha", lambda: stas(base, alpha=0.4), run(stas(base, alpha=0.4))))]
    check(rows, tol)


# (what the graph holds, the model it builds from the compiled one, is it a layout seen before)
LAYOUTS = [
    ("blocks 1,2", lambda cm: stas(cm, blocks="1,2"), False),
    ("subset: block 1", lambda cm: stas(cm, blocks="1"), False),
    ("superset: blocks 1-3", lambda cm: stas(cm, blocks="1-3"), False),
    ("disjoint: blocks 0,3", lambda cm: stas(cm, blocks="0,3"), False),
    ("back to 1,2, new alpha", lambda cm: stas(cm, blocks="1,2", alpha=0.5), True),
    ("a second STAS node", lambda cm: stas(stas(cm, blocks="1"), blocks="2", channels="4,20"), False),
    ("the first of two removed", lambda cm: stas(cm, blocks="2", channels="4,20"), False),
    ("the second removed", lambda cm: stas(cm, blocks="1", alpha=0.3), True),
]


@pytest.mark.slow
def test_block_and_node_changes_follow_the_graph(env, dynamo):
    base = env.wan
    cm = compiled(env, base)
    tol = eager_rounding(env, cm)
    plain = run(base)
    rows, before = [], graphs()
    for name, build, seen in LAYOUTS:
        got, want = run(build(cm)), run(build(base))
        assert not close_to(want, plain, tol), f"{name}: the eager run steers nothing; the test cannot tell"
        rows.append((name, got, want))
        now = graphs()
        assert (now == before) == seen, f"{name}: {before} -> {now} graphs (a new layout compiles once, a seen one never)"
        before = now
    check(rows, tol)


def recording_of(rec):
    run_ = rec.runs[-1]
    assert not run_.notes and not run_.failed, run_.notes
    return {k: (e.mag.clone(), e.peak.clone(), e.channels.clone()) for k, e in run_.entries.items()}


def recorder(env, model, **kw):
    pack = ce.Pack()
    out = ce.run_node(pack.rec, model=model, blocks="1,2", **kw)
    return out.result[0], out.result[1]


@pytest.mark.slow
def test_ma_recorder_under_torch_compile(env, dynamo):
    """The MA Recorder (recorded calls run uncompiled) records what it records eagerly, before and
    after STAS; adding and removing it leaves the compiled STAS graph right."""
    base = env.wan
    cm = compiled(env, base)
    tol = eager_rounding(env, cm)
    steered = run(stas(base))
    for name, wrap in (("recorder after STAS", lambda m: recorder(env, stas(m))),
                       ("recorder before STAS", lambda m: (lambda r: (stas(r[0]), r[1]))(recorder(env, m)))):
        (mc, rc), (me, re_) = wrap(cm), wrap(base)
        got, want = run(mc), run(me)
        check([(name, got, want), (name + " vs STAS alone", got, steered)], tol)
        a, b = recording_of(rc), recording_of(re_)
        assert sorted(a) == sorted(b) and a, name
        for k in a:
            for x, y in zip(a[k], b[k]):
                assert close_to(x.float(), y.float(), tol), (name, k)
        check([(name + ", recorder removed", run(stas(cm)), steered)], tol)


@contextlib.contextmanager
def said_uncompiled(dm):
    """(calls, said_at): the diffusion model's call count, and (call count, message) of each comfyui-stas log line
    saying a run goes uncompiled, while the block runs."""
    import logging
    calls, said_at = [0], []
    hook = dm.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    class At(logging.Handler):
        def emit(self, record):
            if "uncompiled" in record.getMessage():
                said_at.append((calls[0], record.getMessage()))

    at = At(logging.WARNING)
    logging.getLogger("comfyui-stas").addHandler(at)
    try:
        yield calls, said_at
    finally:
        hook.remove()
        logging.getLogger("comfyui-stas").removeHandler(at)


@pytest.mark.slow
def test_cpu_attention_graph_break_runs_uncompiled_and_says_so_once(env, monkeypatch, caplog):
    """ComfyUI's default CPU attention breaks the graph inside every block, where dynamo would compile STAS's
    block code per steered block and layout until its recompile limit. Bypassing STAS and back, changing
    blocks, adding a node and steering every block then run STAS uncompiled (the results the eager ones; no
    recompile limit reached), the unpatched model stays compiled, and STAS says so once, before the first
    model call of the first run, with the fix."""
    import logging

    import torch._dynamo
    from torch._dynamo.utils import counters
    cb = pack_module("nodes.compile_breaks")
    base = env.wan
    dm = base.model.diffusion_model
    assert cb.attention_of(dm).__name__ in cb.BREAKING_ATTENTION, "not ComfyUI's CPU attention: the test cannot tell"
    monkeypatch.setattr(cb, "_said", set())
    torch._dynamo.reset()
    caplog.set_level(logging.WARNING, logger="torch._dynamo")
    with said_uncompiled(dm) as (calls, said_at):
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            cm = compiled(env, base)
            tol = eager_rounding(env, cm)
            plain_graphs = graphs()
            assert plain_graphs > 0, "the unpatched model did not compile"
            rows, counts, starts = [], [], []
            for name, build in (("STAS", lambda m: stas(m)), ("bypassed", lambda m: m),
                                ("STAS back", lambda m: stas(m)),
                                ("blocks 1,2", lambda m: stas(m, blocks="1,2")),
                                ("blocks 0,3", lambda m: stas(m, blocks="0,3")),
                                ("a second node", lambda m: stas(stas(m, blocks="1"), blocks="2", channels="4,20")),
                                ("every block", lambda m: stas(m, blocks="all"))):
                starts.append(calls[0])
                got = run(build(cm), steps=2)
                assert calls[0] > starts[-1]
                rows.append((name, got, run(build(base), steps=2)))
                counts.append(graphs())
    check(rows, tol)
    before = [plain_graphs] + counts[:-1]  # only the bypassed run (the plain model, still compiled) may compile
    assert [c for c, b, (name, _, _) in zip(counts, before, rows) if name != "bypassed" and c != b] == [], \
        f"graphs per run {counts}: a run with STAS compiled something"
    assert len(said_at) == 1, said_at
    at_call, message = said_at[0]
    assert at_call == starts[0], f"said after {at_call - starts[0]} model call(s) of the first run"
    assert message.startswith("STAS Model Patch") and cb.attention_of(dm).__name__ in message
    assert "--use-pytorch-cross-attention" in message
    hit = [r.getMessage() for r in caplog.records if "recompile_limit" in r.getMessage()]
    hit += [k for g in ("graph_break", "unimplemented") for k in counters[g] if "limit" in str(k).lower()]
    assert not hit, hit


@pytest.mark.slow
def test_a_pack_breaking_the_graph_in_the_blocks_is_said_once_then_uncompiled(env, monkeypatch, caplog):
    """Another pack's block patch that breaks the graph (with PyTorch attention, which does not): STAS cannot
    know before dynamo hits its recompile limit in STAS's block code. After that run, the next run with
    STAS says once, before its first model call, that it runs uncompiled, why and the fix, and gives the
    eager result with no new graph."""
    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan
    import torch._dynamo
    cb = pack_module("nodes.compile_breaks")
    monkeypatch.setattr(wan, "optimized_attention", attention.attention_pytorch)
    monkeypatch.setattr(cb, "_said", set())
    monkeypatch.setattr(cb._LimitWatch, "hit", False)
    torch._dynamo.reset()

    def breaking(args, extra):  # another pack's patch on every block, breaking the graph
        torch._dynamo.graph_break()
        return extra["original_block"](args)

    def with_pack(m):
        m = m.clone()
        for i in range(len(m.model.diffusion_model.blocks)):
            m.set_model_patch_replace(breaking, "dit", "double_block", i)
        return m

    base = with_pack(env.wan)
    dm = base.model.diffusion_model
    with said_uncompiled(dm) as (calls, said_at):
        cm = compiled(env, base)
        tol = eager_rounding(env, cm)
        for blocks in ("1", "1,2", "0,3", "2", "3", "all"):  # layouts until dynamo's limit (8 entries)
            run(stas(cm, blocks=blocks), steps=2)
        assert cb._LimitWatch.hit, "dynamo did not hit its recompile limit in STAS's code: the test cannot tell"
        assert not said_at
        before, start = graphs(), calls[0]
        rows = [(blocks, run(stas(cm, blocks=blocks), steps=2), run(stas(base, blocks=blocks), steps=2))
                for blocks in ("1,3", "0,1,2")]  # a layout seen before the limit, and a new one
        after = graphs()
    check(rows, tol)
    assert after == before, f"{before} -> {after} graphs: a run with STAS compiled something after the limit"
    assert len(said_at) == 1 and said_at[0][0] == start, said_at
    assert said_at[0][1].startswith("STAS Model Patch") and "recompile_limit" in said_at[0][1]
