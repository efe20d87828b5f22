"""STAS under ComfyUI's own TorchCompileModel node, on real ComfyUI (CPU, backend aot_eager).

The scenario users hit: model -> TorchCompileModel -> STAS Model Patch -> sampler, run,
change a STAS setting, run again.  TorchCompileModel's output is cached, so the compiled module
is reused; on ComfyUI with a guard filter (0.33) the compiled graph keeps whatever Python
objects and constants it was traced with, without re-checking them.  Every run must equal the
same settings sampled uncompiled, and changing a setting must add no compiled graph.
"""
from __future__ import annotations

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
def test_settings_take_effect_without_recompiling(env):
    import torch._dynamo
    torch._dynamo.reset()
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
def test_resolution_change_gives_the_eager_result(env):
    import torch._dynamo
    torch._dynamo.reset()
    base = env.wan
    cm = compiled(env, base)
    for shape in (LATENT, (1, 16, 3, 12, 8), (1, 16, 7, 8, 12), LATENT):
        for kw in (dict(), dict(alpha=0.5, mask=dict(first_frame=False))):
            got = run(stas(cm, **settings(kw)), shape=shape, steps=2)
            want = run(stas(base, **settings(kw)), shape=shape, steps=2)
            assert close(got, want), f"{shape} {kw}"


@pytest.mark.slow
def test_two_chained_stas_nodes_under_compile(env):
    import torch._dynamo
    torch._dynamo.reset()
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


def keeps_graphs(env) -> bool:
    """True where TorchCompileModel filters its guards on transformer_options (ComfyUI >= 0.8), so a
    graph traced with one block set is reused for another; older ComfyUI recompiles instead."""
    return hasattr(env.ntc, "skip_torch_compile_dict")


def block_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "were never steered" in r.getMessage()]


def test_changing_blocks_never_steers_the_old_block(env, caplog, monkeypatch):
    """One cached compiled model, blocks changed from 2 to 1.  Where ComfyUI keeps the graph traced
    with block 2's patch, block 2 must be left alone (the op maps it to no row of the new plan) and
    the run must warn that block 1 was never steered; where it recompiles, the eager result."""
    import logging

    import comfy.ldm.modules.attention as attention
    import comfy.ldm.wan.model as wan
    import torch._dynamo
    # PyTorch attention as on a GPU: CPU sub-quadratic attention reads psutil, a graph break that
    # splits the model into frames whose guards on the block patches the filter does not drop.
    monkeypatch.setattr(wan, "optimized_attention", attention.attention_pytorch)
    torch._dynamo.reset()
    base = env.wan
    cm = compiled(env, base)  # cached: the graph traced with block 2's patch is reused below
    plain = run(base)
    caplog.set_level(logging.WARNING, logger="comfyui-stas")
    old = run(stas(cm, blocks="2"))
    assert close(old, run(stas(base, blocks="2"))) and not close(old, plain)
    assert not block_warnings(caplog)
    n_graphs = graphs()
    eager_new = run(stas(base, blocks="1"))
    assert not close(eager_new, plain) and not close(eager_new, old)
    got = run(stas(cm, blocks="1"))
    warned = block_warnings(caplog)
    if keeps_graphs(env):
        # the graph only holds block 2's patch: block 2 is left alone, block 1 cannot be reached
        assert graphs() == n_graphs, "recompiled: the test no longer reaches the kept graph"
        assert close(got, plain), f"the kept graph steered something (max {float((got - plain).abs().max()):.3g})"
        assert len(warned) == 1 and "block(s) [1] were never steered" in warned[0], warned
        assert "STAS Model Patch" in warned[0] and "TorchCompileModel" in warned[0] and "[2]" in warned[0]
    else:  # recompiled with block 1's patch
        assert close(got, eager_new)
        assert not warned, warned
    # a superset: the kept graph steers block 2 from its new table row, and says block 1 is missing
    caplog.clear()
    got = run(stas(cm, blocks="1,2"))
    warned = block_warnings(caplog)
    if keeps_graphs(env):
        assert close(got, old)
        assert len(warned) == 1 and "block(s) [1] were never steered" in warned[0], warned
    else:
        assert close(got, run(stas(base, blocks="1,2")))
        assert not warned, warned
    # back to the block the graph was traced with: the eager result again, and nothing to say
    caplog.clear()
    assert close(run(stas(cm, blocks="2")), old)
    assert not block_warnings(caplog)


def test_eager_runs_never_warn_about_blocks(env, caplog):
    import logging
    caplog.set_level(logging.WARNING, logger="comfyui-stas")
    for blocks in ("2", "1", "0,3"):
        run(stas(env.wan, blocks=blocks), steps=2)
    assert not block_warnings(caplog)
