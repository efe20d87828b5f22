"""Behaviour of STAS Model Patch on a tiny Wan inside a real ComfyUI.

Every steered block call is checked against the formula, value by value.  Two test-only
replace patches sit around STAS's on the steered block:

* ``inner``: set on the MODEL *before* STAS Model Patch runs, so STAS must chain it as its inner
  block (it is what a pre-existing patch of another pack looks like).  It runs the real block,
  optionally plants known massive activations, and keeps a copy of the block output STAS gets:
  the unpatched block output for that very block input.
* ``outer``: set on a clone *after* STAS, calling STAS's patch; it keeps what STAS returns.

The expected output is computed here from the spec (STAS-SPEC section 2) with our own token
layout arithmetic, not with stas_core, and compared bit for bit (blend 1) outside and at the
steered entries.
"""
from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
from types import SimpleNamespace

import pytest
import torch

from stas_harness import comfy_env as ce
from stas_harness.comfy_env import ensure_extra_node, run_prompt, sample, temp_comfy_dirs, text_cond
from stas_harness.models import load_random, tiny_wan

pytestmark = pytest.mark.integration

LATENT = (1, 16, 5, 8, 8)      # Wan patch (1, 2, 2): grid 5 x 4 x 4, 16 tokens per latent frame
H, W = 4, 4
FRAME = H * W
BLOCK = 1                      # the steered block of the 4-block tiny Wan
KEY = ("double_block", BLOCK)
MA = (7, 42)                   # channels where massive activations are planted


# -- environment ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(pk):
    # The tiny model's ops are microseconds of work: with several threads per op, OpenMP hand-offs
    # dominate (15x slower on a busy 2-core machine). Results do not depend on it.
    torch.set_num_threads(1)
    import comfy_extras.nodes_slg as slg
    return SimpleNamespace(mask_node=pk.mask, wan=tiny_wan(num_layers=4), slg=slg)


# The nodes as ComfyUI calls them, at their declared defaults; STAS on BLOCK, channels 3 and 17, every step.
stas = functools.partial(ce.stas, blocks=str(BLOCK), channels="3,17", end_percent=1.0)
mask = ce.boundary_mask
latent = functools.partial(ce.latent, t=LATENT[2])


def plant(img: torch.Tensor) -> None:
    """Plant massive activations, different for every batch row (per-sample maxima differ)."""
    rows = torch.arange(1, img.shape[0] + 1, dtype=img.dtype)
    img[:, 5, MA[0]] = 300.0 * rows            # first-frame token, positive
    img[:, 3 * FRAME + 6, MA[1]] = -250.0 * rows  # interior token of frame 3, negative


class Recorder:
    """The inner/outer test patches of the module docstring, safe for concurrent calls."""

    def __init__(self, planter=None):
        self.planter = planter
        self.calls = []
        self.inner_calls = 0
        self.barrier = None
        self._local = threading.local()
        self._lock = threading.Lock()

    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options (and bound methods' self)
        return self

    def inner(self, args, extra):
        out = extra["original_block"](args)
        if self.planter is not None:
            self.planter(out["img"])
        with self._lock:
            self.inner_calls += 1
        self._local.raw = out["img"].clone()
        if self.barrier is not None:
            self.barrier.wait()  # both threads are inside the block before either is steered
        return out

    def with_inner(self, model):
        m = model.clone()
        m.set_model_patch_replace(self.inner, "dit", *KEY)
        return m

    def instrument(self, model):
        m = model.clone()
        here = m.model_options["transformer_options"]["patches_replace"]["dit"][KEY]

        def outer(args, extra):
            self._local.raw = None
            out = here(args, extra)
            to = args["transformer_options"]
            with self._lock:
                self.calls.append(SimpleNamespace(
                    raw=self._local.raw, out=out["img"].clone(), cond_or_uncond=list(to["cond_or_uncond"]),
                    sigma=float(to["sigmas"].reshape(-1)[0])))
            return out

        m.set_model_patch_replace(outer, "dit", *KEY)
        return m


def steered_tokens(t: int, first_frame=True, head=W, tail=W):
    """The spec's token set from the layout arithmetic ((t, h, w) flattening, FRAME tokens per
    latent frame): the whole first frame, and the first ``head`` / last ``tail`` tokens of every
    later frame (default one token row each)."""
    s = set(range(FRAME)) if first_frame else set()
    for f in range(1, t):
        s.update(range(f * FRAME, f * FRAME + head))
        s.update(range((f + 1) * FRAME - tail, (f + 1) * FRAME))
    return sorted(s)


def expected(call, channels, apply_to, in_window, alpha=1.0, tokens=steered_tokens):
    """(expected block output, steered rows): STAS-SPEC section 2 applied to the raw output."""
    raw = call.raw
    exp = raw.clone()
    b, n, _ = raw.shape
    per = b // len(call.cond_or_uncond)
    rows = [i * per + j for i, c in enumerate(call.cond_or_uncond) if c in apply_to for j in range(per)] \
        if in_window else []
    idx = torch.tensor(tokens(n // FRAME), dtype=torch.long)
    for r in rows:
        for d in channels:
            m = raw[r, :, d].abs().max()               # global max over this row's visual tokens
            cur = raw[r, idx, d]
            exp[r, idx, d] = torch.where(cur >= 0, alpha * m, -(alpha * m))  # sign kept, sign(0) = +
    return exp, rows


def check(rec, model, channels, apply_to=(0,), start=0.0, end=1.0, alpha=1.0, tokens=steered_tokens,
          blend=1.0):
    """Every recorded call equals the formula exactly; returns how many calls had steered rows."""
    ms = model.get_model_object("model_sampling")
    # README's rule: each boundary is taken 0.0015 of denoising early; 0 and 1 are open ends
    s_start = ms.percent_to_sigma(max(0.0, start - 0.0015)) if start > 0 else float("inf")
    s_end = ms.percent_to_sigma(end - 0.0015)
    assert rec.calls, "the steered block never ran"
    steered = 0
    for call in rec.calls:
        assert call.raw is not None, "STAS did not call the pre-existing patch as its inner block"
        inside = call.sigma <= s_start and (end >= 1.0 or call.sigma > s_end)
        exp, rows = expected(call, channels, set(apply_to), inside, alpha, tokens)
        if blend == 1.0:
            assert torch.equal(call.out, exp), f"sigma {call.sigma}, rows {rows}: not the formula"
        else:
            target = exp
            exp = call.raw + blend * (target - call.raw)
            torch.testing.assert_close(call.out, exp, rtol=1e-6, atol=1e-6)
            changed = target != call.raw
            assert torch.equal(call.out[~changed], call.raw[~changed])
        steered += bool(rows)
    return steered


# -- 1. steered values equal the formula; everything else bit-identical ------------------

@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_explicit_channels_formula_exact(env, alpha):
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), alpha=alpha, channels="3,17,100"))
    sample(p, latent(), steps=3, cfg=2.0)
    assert check(rec, env.wan, (3, 17, 100), alpha=alpha) == 3
    for call in rec.calls:  # the cond pass really changed, the uncond pass is the block's own output
        cond = call.cond_or_uncond.index(0)
        assert not torch.equal(call.out[cond], call.raw[cond])
        assert torch.equal(call.out[1 - cond], call.raw[1 - cond])


def test_blend_below_one(env):
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), blend=0.25, channels="3,17"))
    sample(p, latent(), steps=2, cfg=2.0)
    assert check(rec, env.wan, (3, 17), blend=0.25) == 2


def test_auto_channels_find_planted_massive_activations(env, caplog):
    rec = Recorder(plant)
    p = rec.instrument(stas(rec.with_inner(env.wan), channels="auto", threshold=50.0, top_k=4))
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        sample(p, latent(), steps=3, cfg=2.0)
    # what auto detection chose is said once, after the run
    said = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    assert said == [f"STAS Model Patch: auto detection steered channel(s) {sorted(MA)} at 1 block(s)"], said
    # only the planted channels pass the threshold: exactly they are steered, nothing else
    assert check(rec, env.wan, MA) == 3
    call = rec.calls[0]
    cond = call.cond_or_uncond.index(0)
    # the planted interior activation sets the reference of channel 42 for the first-frame tokens
    assert torch.all(call.out[cond, :FRAME, MA[1]].abs() == call.raw[cond, :, MA[1]].abs().max())


@pytest.mark.parametrize("spec,tokens", [
    (dict(first_frame=False, head=2, tail=0, unit="rows"), dict(first_frame=False, head=2 * W, tail=0)),
    (dict(first_frame=True, head=3, tail=5, unit="tokens"), dict(first_frame=True, head=3, tail=5)),
    (dict(first_frame=False, head=0.25, tail=0.1, unit="fraction"), dict(first_frame=False, head=4, tail=2)),
    (dict(first_frame=True, boundaries=False), dict(first_frame=True, head=0, tail=0)),
])
def test_mask_builder_masks(env, spec, tokens):
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), mask=mask(**spec), channels="9"))
    sample(p, latent(), steps=2, cfg=2.0)
    assert check(rec, env.wan, (9,), tokens=lambda t: steered_tokens(t, **tokens)) == 2


def test_other_blocks_and_unsteered_run_untouched(env):
    """Blocks before the steered one see bit-identical inputs; a run with only the test patches
    is bit-identical to the bare model (so the recorders are neutral)."""
    base = sample(env.wan, latent(), steps=2)
    rec = Recorder()
    plain = rec.instrument(rec.with_inner(env.wan))
    assert torch.equal(sample(plain, latent(), steps=2), base)
    assert all(torch.equal(c.raw, c.out) for c in rec.calls)

    seen = {}

    def spy(tag):
        def patch(args, extra):
            out = extra["original_block"](args)
            seen.setdefault(tag, []).append(out["img"].clone())
            return out
        return patch

    a = env.wan.clone()
    a.set_model_patch_replace(spy("plain"), "dit", "double_block", 0)
    b = stas(env.wan, blocks="2")
    b.set_model_patch_replace(spy("stas"), "dit", "double_block", 0)
    sample(a, latent(), steps=2)
    out = sample(b, latent(), steps=2)
    # first step: block 0 (before the steered block 2) is bit-identical; later steps see the steer
    assert torch.equal(seen["plain"][0], seen["stas"][0])
    assert not torch.equal(seen["plain"][1], seen["stas"][1])
    assert not torch.equal(out, base)


# -- 2. outside the window / excluded pass / bypassed: the unpatched result -------------

def test_outside_sigma_window_bit_identical(env):
    base = sample(env.wan, latent(), steps=4)
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), start_percent=0.99, end_percent=1.0))
    out = sample(p, latent(), steps=4)
    assert check(rec, env.wan, (3, 17), start=0.99, end=1.0) == 0
    assert torch.equal(out, base)
    # and the early window steers only its own steps (sigma 1.0 and 0.96 of this schedule)
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), start_percent=0.0, end_percent=0.4))
    assert not torch.equal(sample(p, latent(), steps=4), base)
    assert check(rec, env.wan, (3, 17), start=0.0, end=0.4) == 2


def call_model(mp, x, sigma, cond_or_uncond, context):
    """One model call the way a sampler makes it: the MODEL's wrappers merged into a copy of its
    transformer_options (as sampler_helpers.prepare_model_patcher does), plus the pass list."""
    import comfy.model_patcher
    import comfy.patcher_extension as pe
    to = comfy.model_patcher.create_model_options_clone(mp.model_options).setdefault("transformer_options", {})
    pe.merge_nested_dicts(to.setdefault("wrappers", {}), mp.wrappers, copy_dict1=False)
    to.update(cond_or_uncond=list(cond_or_uncond), sigmas=sigma)
    with torch.inference_mode():
        return mp.model.apply_model(x, sigma, c_crossattn=context, transformer_options=to)


@pytest.mark.parametrize("apply_to,steered_pass", [("cond", 0), ("uncond", 1)])
def test_excluded_pass_bit_identical(env, apply_to, steered_pass):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, *LATENT[1:], generator=g)
    ctx = torch.randn(2, 8, 4096, generator=g)
    sigma = torch.tensor([0.9, 0.9])
    base = call_model(env.wan, x, sigma, [0, 1], ctx)
    p = stas(env.wan, apply_to=apply_to)
    out = call_model(p, x, sigma, [0, 1], ctx)
    other = 1 - steered_pass
    assert torch.equal(out[other], base[other])
    assert not torch.equal(out[steered_pass], base[steered_pass])
    both = call_model(stas(env.wan, apply_to="both"), x, sigma, [0, 1], ctx)
    assert not torch.equal(both[other], base[other])


def snapshot(mp):
    def walk(o):
        if isinstance(o, dict):
            return {repr(k): walk(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [walk(v) for v in o]
        return (type(o).__name__, id(o))
    return (walk(mp.model_options), {k: id(v) for k, v in mp.object_patches.items()},
            {k: len(v) for k, v in mp.patches.items()}, walk(mp.wrappers), walk(mp.callbacks))


def test_input_model_unchanged_bypass_is_unpatched(env):
    before = snapshot(env.wan)
    base = sample(env.wan, latent(), steps=3)
    p = stas(env.wan, channels="auto", threshold=1.0)   # auto with a low threshold: steers
    assert p is not env.wan
    out = sample(p, latent(), steps=3)
    assert not torch.equal(out, base)
    assert snapshot(env.wan) == before
    assert torch.equal(sample(env.wan, latent(), steps=3), base)
    dm = env.wan.model.diffusion_model
    assert all("forward" not in vars(b) for b in dm.blocks)
    # the patched model is reusable: a second run (fresh per-run state) gives the same result
    assert torch.equal(sample(p, latent(), steps=3), out)


# -- 3. chaining with SkipLayerGuidance and other patches --------------------------------

@pytest.mark.parametrize("slg_node", ["SkipLayerGuidanceDiT", "SkipLayerGuidanceDiTSimple"])
def test_chaining_with_skip_layer_guidance_either_order(env, slg_node):
    node = getattr(env.slg, slg_node)
    kw = dict(double_layers=str(BLOCK), single_layers="", start_percent=0.0, end_percent=1.0)
    if slg_node == "SkipLayerGuidanceDiT":
        kw.update(scale=3.0, rescaling_scale=0.0)

    def slg(m):
        return node.execute(m, **kw)[0]

    base = sample(env.wan, latent(), steps=3)
    only_stas = sample(stas(env.wan), latent(), steps=3)
    only_slg = sample(slg(env.wan), latent(), steps=3)
    stas_then_slg = sample(slg(stas(env.wan)), latent(), steps=3)
    slg_then_stas = sample(stas(slg(env.wan)), latent(), steps=3)
    assert torch.equal(stas_then_slg, slg_then_stas)
    for other in (base, only_stas, only_slg):
        assert not torch.equal(stas_then_slg, other)
    assert not torch.equal(only_stas, base) and not torch.equal(only_slg, base)


def test_existing_replace_patch_is_chained_not_overwritten(env):
    calls = []

    def theirs(args, extra):
        calls.append(1)
        out = extra["original_block"](args)
        out["img"] = out["img"] * 1.5
        return out

    m = env.wan.clone()
    m.set_model_patch_replace(theirs, "dit", *KEY)
    theirs_only = sample(m, latent(), steps=2)
    n_theirs = len(calls)
    p = stas(m)
    assert m.model_options["transformer_options"]["patches_replace"]["dit"][KEY] is theirs
    both = sample(p, latent(), steps=2)
    assert len(calls) == 2 * n_theirs > 0
    assert not torch.equal(both, theirs_only)
    # and their patch's output is what STAS steered
    rec = Recorder()
    p2 = rec.instrument(stas(rec.with_inner(m)))
    sample(p2, latent(), steps=2)
    assert check(rec, env.wan, (3, 17)) == 2


def test_two_stas_nodes_on_one_block_both_apply(env):
    rec = Recorder()
    p = rec.instrument(stas(stas(rec.with_inner(env.wan), channels="3"), channels="17"))
    sample(p, latent(), steps=2)
    assert check(rec, env.wan, (3, 17)) == 2


# -- 4. batch 2, cfg 1, split sigmas, context windows, denoise < 1 -----------------------

def test_batch_two_each_sample_its_own_max(env):
    rec = Recorder(plant)
    p = rec.instrument(stas(rec.with_inner(env.wan), channels="auto"))
    sample(p, latent(b=2), steps=2, cfg=2.0,
           positive=text_cond(batch=2, seed=1), negative=text_cond(batch=2, seed=2))
    assert check(rec, env.wan, MA) == 2
    call = rec.calls[0]
    assert call.raw.shape[0] == 4
    per = 2
    c = call.cond_or_uncond.index(0)
    r0, r1 = c * per, c * per + 1
    # both samples steered, each toward its own maximum
    assert not torch.equal(call.out[r0], call.raw[r0]) and not torch.equal(call.out[r1], call.raw[r1])
    assert call.out[r0, 0, MA[0]].item() == call.raw[r0, :, MA[0]].abs().max().item()
    assert call.out[r1, 0, MA[0]].item() == call.raw[r1, :, MA[0]].abs().max().item()
    assert call.out[r0, 0, MA[0]].item() != call.out[r1, 0, MA[0]].item()


def test_cfg1_cond_steered_without_uncond_pass(env):
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), apply_to="both"))
    sample(p, latent(), steps=2, cfg=1.0)
    assert all(c.cond_or_uncond == [0] for c in rec.calls)
    assert check(rec, env.wan, (3, 17), apply_to=(0, 1)) == 2


def test_cfg1_with_apply_to_uncond_is_an_error_before_sampling(env):
    rec = Recorder()
    p = stas(rec.with_inner(env.wan), apply_to="uncond")
    with pytest.raises(ValueError, match="apply_to is 'uncond'.*no negative.*Set apply_to to 'cond' or 'both'"):
        sample(p, latent(), steps=2, cfg=1.0)
    assert rec.inner_calls == 0
    # outside the window nothing would be steered anyway: no error (e.g. a low-noise expert at cfg 1)
    q = stas(env.wan, apply_to="uncond", start_percent=0.99, end_percent=1.0)
    assert torch.equal(sample(q, latent(), steps=2, cfg=1.0), sample(env.wan, latent(), steps=2, cfg=1.0))
    # with cfg above 1 the negative pass exists and is steered
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), apply_to="uncond"))
    sample(p, latent(), steps=2, cfg=2.0)
    assert check(rec, env.wan, (3, 17), apply_to=(1,)) == 2


def test_split_steps_follow_sigma_not_step_index(env):
    """KSamplerAdvanced-style start_step/last_step: the second stage's first step is its step 0,
    but its sigma lies outside an early window, so it is not steered."""
    full_rec = Recorder()
    p = full_rec.instrument(stas(full_rec.with_inner(env.wan), end_percent=0.3))
    sample(p, latent(), steps=6)
    n_full = check(full_rec, env.wan, (3, 17), end=0.3)
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), end_percent=0.3))
    first = sample(p, latent(), steps=6, last_step=3, force_full_denoise=False)
    n_first = check(rec, env.wan, (3, 17), end=0.3)
    rec.calls.clear()
    sample(p, first, steps=6, start_step=3, last_step=10000, force_full_denoise=True, disable_noise=True)
    assert len(rec.calls) == 3
    n_second = check(rec, env.wan, (3, 17), end=0.3)
    assert n_first == n_full > 0 and n_second == 0


def test_split_sigmas_custom_sampler(env):
    """SplitSigmas + SamplerCustom: each half is steered by its sigmas, whatever its step index."""
    import comfy.sample
    import comfy.samplers
    ms = env.wan.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(ms, "simple", 6)
    counts = []
    for part in (sigmas[:4], sigmas[3:]):   # high-noise half, low-noise half
        rec = Recorder()
        p = rec.instrument(stas(rec.with_inner(env.wan), start_percent=0.0, end_percent=0.3))
        noise = comfy.sample.prepare_noise(latent(), 0)
        with torch.inference_mode():
            comfy.sample.sample_custom(p, noise, 2.0, comfy.samplers.sampler_object("euler"), part,
                                       text_cond(seed=1), text_cond(seed=2), latent(), disable_pbar=True, seed=0)
        counts.append(check(rec, env.wan, (3, 17), start=0.0, end=0.3))
        assert len(rec.calls) == 3
    s_end = ms.percent_to_sigma(0.3)
    assert counts == [sum(1 for s in sigmas[:3].tolist() if s > s_end), 0] and counts[0] > 0


def test_denoise_below_one(env):
    rec = Recorder()
    p = rec.instrument(stas(rec.with_inner(env.wan), end_percent=0.5))
    sample(p, latent(), steps=4, denoise=0.7)
    n = check(rec, env.wan, (3, 17), end=0.5)
    ms = env.wan.get_model_object("model_sampling")
    assert max(c.sigma for c in rec.calls) < ms.percent_to_sigma(0.0)
    assert 0 < n < len(rec.calls)


def context_windows(model, length, overlap):
    import comfy.context_windows as cw
    import comfy_extras.nodes_context_windows as ncw
    node = ncw.ContextWindowsManualNode
    kw = dict(context_length=length, context_overlap=overlap,
              context_schedule=cw.ContextSchedules.STATIC_STANDARD, context_stride=1, closed_loop=False,
              fuse_method=cw.ContextFuseMethods.PYRAMID, dim=2)
    if "freenoise" in inspect.signature(node.execute).parameters:
        kw["freenoise"] = False
    return node.execute(model, **kw)[0]


@pytest.mark.parametrize("order", ["stas_first", "windows_first"])
def test_context_windows_mask_from_each_window(env, order):
    rec = Recorder()
    base = rec.with_inner(env.wan)
    if order == "stas_first":
        p = context_windows(stas(base), 3, 1)
    else:
        p = stas(context_windows(base, 3, 1))
    p = rec.instrument(p)
    sample(p, latent(t=7), steps=2)
    lengths = {c.raw.shape[1] // FRAME for c in rec.calls}
    assert max(lengths) < 7, f"no context window ran: frames per call {lengths}"
    # check() derives each call's token set from that call's own frame count
    assert check(rec, env.wan, (3, 17)) == len(rec.calls) > 0


# -- 5. clone, deepcopy and concurrent calls ---------------------------------------------

def test_survives_clone_and_deepcopy(env):
    p = stas(env.wan)
    ref = sample(p, latent(), steps=2)
    assert torch.equal(sample(p.clone(), latent(), steps=2), ref)
    q = p.clone()
    q.model_options = copy.deepcopy(p.model_options)
    assert q.model_options["transformer_options"]["patches_replace"]["dit"][KEY] is \
        p.model_options["transformer_options"]["patches_replace"]["dit"][KEY]
    assert torch.equal(sample(q, latent(), steps=2), ref)
    # a clone patched again keeps the first clone working unchanged
    r = stas(p.clone(), blocks="2")
    assert not torch.equal(sample(r, latent(), steps=2), ref)
    assert torch.equal(sample(p, latent(), steps=2), ref)


def test_concurrent_cond_and_uncond_calls_from_two_threads(env):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, *LATENT[1:], generator=g)
    ctx = torch.randn(1, 8, 4096, generator=g)
    sigma = torch.tensor([0.9])
    rec = Recorder(plant)
    inner = rec.with_inner(env.wan)
    p = stas(inner, channels="auto", apply_to="cond")
    want_cond = call_model(p, x, sigma, [0], ctx)
    want_uncond = call_model(inner, x, sigma, [1], ctx)
    assert not torch.equal(want_cond, call_model(inner, x, sigma, [0], ctx))
    for _ in range(3):
        rec.barrier = threading.Barrier(2, timeout=30)
        got, errors = {}, []

        def run(flag):
            try:
                got[flag] = call_model(p, x, sigma, [flag], ctx)
            except BaseException as e:  # noqa: BLE001  (reported below)
                errors.append(e)
                rec.barrier.abort()

        threads = [threading.Thread(target=run, args=(f,)) for f in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        rec.barrier = None
        assert not errors, errors
        assert torch.equal(got[0], want_cond) and torch.equal(got[1], want_uncond)


# -- 6. bad input: clear errors at node execution or before the first step ---------------

@pytest.mark.parametrize("kw,msg", [
    (dict(blocks="99"), r"block 99 does not exist; this model has 4 \(valid 0-3, or -1 for the last\)\.$"),
    (dict(blocks="2-1"), "runs backwards"),
    (dict(blocks="none"), "no block selected"),
    (dict(channels="3,128"), r"\[128\] out of range for this model's hidden size 128 \(valid 0-127\).*auto"),
    (dict(channels="x"), "channels: cannot read 'x'"),
    (dict(start_percent=0.5, end_percent=0.2), "start_percent .* must be below end_percent"),
])
def test_bad_settings_fail_at_node_execution(env, kw, msg):
    with pytest.raises(ValueError, match=msg) as ei:
        stas(env.wan, **kw)
    assert str(ei.value).startswith("STAS Model Patch: "), ei.value  # every error names the node


@pytest.mark.parametrize("kw,msg", [
    (dict(blocks="99"), "block 99 does not exist"),
    (dict(blocks="none"), "selects no block"),
    (dict(channels="x"), "channels: cannot read 'x'"),
    (dict(steps="a-b"), "steps"),
])
def test_bad_recorder_settings_name_the_node(env, kw, msg):
    rec = ce.pack_module("nodes.ma_recorder").MARecorder
    with pytest.raises(ValueError, match=msg) as ei:
        ce.run_node(rec, env.wan, **kw)
    assert str(ei.value).startswith("MA Recorder: ") and not str(ei.value).startswith("MA Recorder: MA Recorder"), ei.value


@pytest.mark.parametrize("kw", [
    dict(first_frame=False, boundaries=False),
    dict(first_frame=False, boundaries=True, head=0, tail=0),
])
def test_empty_mask_fails_in_mask_builder(env, kw):
    with pytest.raises(ValueError, match="selects no token.*Turn on first_frame"):
        mask(**kw)


def test_mask_builder_preview_and_non_video_latent(env):
    spec, preview = env.mask_node.execute(True, True, 1.0, 1.0, "rows", latent={"samples": latent()})
    assert preview.shape[0] == 1 and preview.shape[-1] == 3 and preview.dtype == torch.float32
    with pytest.raises(ValueError, match="not a video latent"):
        env.mask_node.execute(True, True, 1.0, 1.0, "rows", latent={"samples": torch.zeros(1, 4, 8, 8)})


def tiny_image_model():
    """A non-video DiT ComfyUI loads (an SD3-style MMDiT, detected by ComfyUI's own loader)."""
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    m = MMDiT(input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=2, adm_in_channels=64,
              context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
              pos_embed_max_size=8, num_patches=64, pos_embed_scaling_factor=None, operations=comfy.ops.manual_cast)
    return load_random(m)


def test_unsupported_model_fails_at_node_execution(env):
    img = tiny_image_model()
    with pytest.raises(ValueError, match="does not support .* Supported: Wan .*HunyuanVideo.*CogVideoX"):
        stas(img)


def test_non_video_latent_fails_before_first_step(env):
    rec = Recorder()
    p = stas(rec.with_inner(env.wan))
    with pytest.raises(ValueError, match="not a video latent"):
        sample(p, torch.zeros(1, 16, 8, 8), steps=2)
    assert rec.inner_calls == 0


def test_boundaries_only_on_one_latent_frame_fails_before_first_step(env):
    rec = Recorder()
    p = stas(rec.with_inner(env.wan), mask=mask(first_frame=False))
    with pytest.raises(ValueError, match="selects no token.*at least two latent frames.*first_frame"):
        sample(p, latent(t=1), steps=2)
    assert rec.inner_calls == 0
    sample(p, latent(t=2), steps=1)  # two latent frames: fine
    assert rec.inner_calls > 0


# -- through ComfyUI's own execution path -------------------------------------------------

def execution_error(ex):
    assert not ex.success
    errors = [d for e, d in ex.status_messages if e == "execution_error"]
    assert len(errors) == 1, ex.status_messages
    return errors[0]


@pytest.fixture
def comfy_dirs(env, tmp_path):
    with temp_comfy_dirs(tmp_path, env.wan.model.diffusion_model, "stas_tiny_wan.safetensors") as d:
        yield d


def test_execution_path_empty_mask(comfy_dirs):
    prompt = {
        "1": {"class_type": "STASBoundaryMaskBuilder",
              "inputs": {"first_frame": False, "boundaries": False, "head": 1.0, "tail": 1.0, "unit": "rows"}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 1]}},
    }
    err = execution_error(run_prompt(prompt))
    assert err["node_type"] == "STASBoundaryMaskBuilder" and err["exception_type"].endswith("ValueError")
    assert "Turn on first_frame" in err["exception_message"]
    assert not (comfy_dirs / "temp").exists() or not any((comfy_dirs / "temp").rglob("*.png"))


def test_execution_path_unknown_block(comfy_dirs):
    ensure_extra_node("ModelSave", "nodes_model_merging.py")   # an output node that takes a MODEL
    stas_inputs = dict(alpha=1.0, blend=1.0, blocks="99", channels="auto", threshold=50.0, top_k=4,
                       start_percent=0.0, end_percent=0.4, apply_to="cond")
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "stas_tiny_wan.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "STASModelPatch", "inputs": {"model": ["1", 0], **stas_inputs}},
        "3": {"class_type": "ModelSave", "inputs": {"model": ["2", 0], "filename_prefix": "diffusion_models/stas"}},
    }
    err = execution_error(run_prompt(prompt))
    assert err["node_type"] == "STASModelPatch"
    assert "block 99 does not exist; this model has 4 (valid 0-3" in err["exception_message"]
    assert not (comfy_dirs / "output").exists() or not any((comfy_dirs / "output").rglob("*"))


# -- auto channels that find nothing are reported, not silent -------------------------------

def test_auto_channels_below_threshold_warn_after_the_run(env, caplog):
    """Random weights have no massive activations: with auto channels and a high threshold no
    channel qualifies, nothing is steered, and the run ends with a warning naming the block."""
    patched = stas(env.wan, channels="auto", threshold=100000.0)
    with caplog.at_level(logging.WARNING, logger="comfyui-stas"):
        out = sample(patched, latent(), steps=2)
    assert torch.equal(out, sample(env.wan, latent(), steps=2))
    msgs = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    assert any(f"block(s) [{BLOCK}]" in m and "threshold" in m for m in msgs), msgs


def test_a_node_that_would_change_nothing_returns_its_input(pk, caplog):
    """blend 0 (or a window that holds no sigma) returns the MODEL itself, unpatched, with one console line
    (as SkipLayerGuidance does), instead of installing a patch that pays its per-call cost."""
    from stas_harness import comfy_env as ce
    from stas_harness.models import tiny_wan
    base = tiny_wan()
    with caplog.at_level("INFO", logger="comfyui-stas"):
        out = ce.stas(base, blend=0.0)
    assert out is base and "blend is 0, so STAS would change nothing" in caplog.text
    assert ce.stas(base, blend=0.5) is not base
