"""STAS Model Patch on real ComfyUI: the window steers the steps it promises, ``apply_to``
means the user's prompt under every core guider, and a node that will steer nothing (or only in
part) says so before the first step.

Observed from outside: a test patch placed after STAS's block patch records, per model call,
its sigma, which batch rows STAS changed, and (through a model function wrapper) which prompt
each batch pass carries, recognised by its text embedding.
"""
from __future__ import annotations

import functools
import logging
from types import SimpleNamespace

import pytest
import torch

from stas_harness import comfy_env as ce
from stas_harness.comfy_env import (comfy_version, ensure_extra_node, ensure_test_nodes, pack_module, run_prompt,
                                temp_comfy_dirs, text_cond)
from stas_harness.models import tiny_wan_variant

pytestmark = pytest.mark.integration

LATENT = (1, 16, 2, 4, 4)   # Wan patch (1, 2, 2): grid 2 x 2 x 2
BLOCK = 1
KEY = ("double_block", BLOCK)


@pytest.fixture(scope="module")
def env(pk):
    torch.set_num_threads(1)
    return SimpleNamespace(high=tiny_wan_variant("t2v", seed=0), low=tiny_wan_variant("t2v", seed=1))


# STAS Model Patch as ComfyUI calls it, at its declared defaults; on BLOCK, channels 3 and 17, every step.
stas = functools.partial(ce.stas, blocks=str(BLOCK), channels="3,17", end_percent=1.0)


def shifted(model, shift):
    """What ModelSamplingSD3 does: a flow model_sampling with ``shift`` as an object patch."""
    import comfy.model_sampling as ms

    class Flow(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    s = Flow(model.model.model_config)
    s.set_parameters(shift=shift, multiplier=1000)
    m = model.clone()
    m.add_object_patch("model_sampling", s)
    return m


class Spy:
    """Per model call: sigma, the steered rows (changed by STAS), and the prompt of every row."""

    def __init__(self, prompts=None):
        self.prompts = prompts or {}
        self.calls = []

    def __deepcopy__(self, memo):
        return self

    def install(self, model):
        m = model.clone()
        stas_patch = m.model_options["transformer_options"]["patches_replace"]["dit"][KEY]
        pending = []

        def outer(args, extra):
            raw = {}

            def original(a):
                out = extra["original_block"](a)
                raw["h"] = out["img"].clone()
                return out

            out = stas_patch(args, {**extra, "original_block": original})
            h = out["img"]
            changed = {r for r in range(h.shape[0]) if not torch.equal(h[r], raw["h"][r])}
            sigma = float(args["transformer_options"]["sigmas"].reshape(-1)[0])
            self.calls.append(SimpleNamespace(sigma=sigma, changed=changed,
                                              prompts=pending.pop(0) if pending else None))
            return out

        def unet_wrapper(apply_model, a):
            ctx = a["c"].get("c_crossattn")
            if ctx is not None and self.prompts:
                pending.append([self.prompt_of(ctx[r]) for r in range(ctx.shape[0])])
            return apply_model(a["input"], a["timestep"], **a["c"])

        m.set_model_patch_replace(outer, "dit", *KEY)
        m.set_model_unet_function_wrapper(unet_wrapper)
        return m

    def prompt_of(self, row):
        for name, t in self.prompts.items():
            if row.shape == t.shape[1:] and torch.allclose(row.float().cpu(), t[0].float(), atol=1e-6):
                return name
        return "?"

    def steered_steps(self):
        return sorted({c.sigma for c in self.calls if c.changed}, reverse=True)

    def steered_prompts(self):
        return {c.prompts[r] for c in self.calls for r in c.changed}


def run(model, steps, cfg=2.0, seed=0, lat=None, **kw):
    import comfy.sample
    lat = torch.zeros(LATENT) if lat is None else lat
    noise = comfy.sample.prepare_noise(lat, seed)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", text_cond(seed=1), text_cond(seed=2),
                                   lat, disable_pbar=True, seed=seed, **kw)


# -- item 2: the window steers exactly the steps it promises --------------------------------

@pytest.mark.parametrize("shift", [1.0, 5.0, 8.0])
@pytest.mark.parametrize("steps,p", [(50, 0.4), (30, 0.4), (20, 0.25), (38, 0.5)])
def test_simple_scheduler_steers_p_times_n_steps_and_adjacent_windows_tile(env, shift, steps, p):
    base = shifted(env.high, shift)
    early, late = Spy(), Spy()
    run(early.install(stas(base, end_percent=p)), steps)
    run(late.install(stas(base, start_percent=p, end_percent=1.0)), steps)
    assert len(early.calls) == len(late.calls) == steps
    a, b = early.steered_steps(), late.steered_steps()
    assert len(a) == round(p * steps), f"{len(a)} steps steered, not {round(p * steps)}"
    assert len(b) == steps - round(p * steps)
    assert not set(a) & set(b) and sorted(a + b, reverse=True) == sorted({c.sigma for c in early.calls}, reverse=True)
    assert min(a) > max(b)   # the early window holds the first steps


@pytest.mark.parametrize("split", [5, 12, 20])
def test_ksampler_advanced_split_sees_one_window(env, split):
    """Two stages of one 30-step schedule, as KSamplerAdvanced runs them: together they steer the
    12 steps of the unsplit run, none twice."""
    m = shifted(env.high, 8.0)
    first, second = Spy(), Spy()
    out = run(first.install(stas(m, end_percent=0.4)), 30, last_step=split, force_full_denoise=False)
    run(second.install(stas(m, end_percent=0.4)), 30, lat=out, start_step=split, last_step=10000,
        disable_noise=True, force_full_denoise=True)
    a, b = first.steered_steps(), second.steered_steps()
    assert len(a) == min(split, 12) and len(b) == max(0, 12 - split)
    assert not set(a) & set(b)


@pytest.mark.parametrize("split", [6, 10, 16])
def test_wan22_expert_pair_sees_one_window(env, split, caplog):
    """Wan 2.2 A14B: high-noise expert for the first steps, low-noise for the rest, one STAS Model
    Patch on each with the same settings; the pair steers the promised 8 of 20 steps."""
    high, low = stas(shifted(env.high, 8.0), end_percent=0.4), stas(shifted(env.low, 8.0), end_percent=0.4)
    h, lo = Spy(), Spy()
    lat = run(h.install(high), 20, last_step=split, force_full_denoise=False)
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(lo.install(low), 20, lat=lat, start_step=split, last_step=10000, disable_noise=True,
            force_full_denoise=True)
    a, b = h.steered_steps(), lo.steered_steps()
    assert len(a) + len(b) == 8 and not set(a) & set(b)
    said = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    if split >= 8:   # the low-noise expert's sigmas never reach the window: said before its first step
        assert len(said) == 1 and "will steer nothing in this run: none of this run's" in said[0], said
        assert caplog.records[0].levelno == logging.WARNING
    else:            # it starts inside the window: it steers in part, and says so
        assert len(said) == 1 and f"will steer only in part in this run: it steers {8 - split} of" in said[0], said


# -- item 5: no silent no-ops, said before the first step ------------------------------------

def preflight_lines(caplog):
    return [r for r in caplog.records if r.name == "comfyui-stas" and "in this run" in r.getMessage()]


def test_full_run_inside_the_window_says_nothing(env, caplog):
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(stas(env.high, end_percent=0.4), 5)
    assert preflight_lines(caplog) == []


def test_denoise_below_the_window_says_so_before_the_first_step(env, caplog):
    spy = Spy()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(spy.install(stas(env.high, end_percent=0.4)), 10, denoise=0.5)
    lines = preflight_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "STAS Model Patch will steer nothing in this run: none of this run's 10 steps" in lines[0].getMessage()
    assert "0-0.4 of denoising" in lines[0].getMessage()
    assert spy.calls and not spy.steered_steps()
    # said before the first step: the record precedes every model call (the spy counts none yet)
    caplog.clear()
    calls_at_log = []

    class Probe(logging.Handler):
        def emit(self, record):
            calls_at_log.append(len(spy.calls))

    probe = Probe(level=logging.INFO)
    logging.getLogger("comfyui-stas").addHandler(probe)
    try:
        spy.calls.clear()
        run(spy.install(stas(env.high, end_percent=0.4)), 10, denoise=0.5)
    finally:
        logging.getLogger("comfyui-stas").removeHandler(probe)
    assert calls_at_log and calls_at_log[0] == 0


def test_denoise_inside_the_window_says_in_part(env, caplog):
    spy = Spy()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(spy.install(stas(shifted(env.high, 1.0), end_percent=0.6)), 10, denoise=0.8)
    lines = preflight_lines(caplog)
    n = len(spy.steered_steps())
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and 0 < n < 10
    assert f"will steer only in part in this run: it steers {n} of 10 steps: this run starts at sigma" in \
        lines[0].getMessage()


def test_both_at_cfg1_says_only_the_positive_pass(env, caplog):
    spy = Spy()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(spy.install(stas(env.high, apply_to="both", end_percent=0.4)), 5, cfg=1.0)
    lines = preflight_lines(caplog)
    assert len(lines) == 1 and "skips the negative pass of apply_to 'both'" in lines[0].getMessage()
    assert spy.steered_steps()


def test_profile_without_channels_for_a_block_says_so(env, caplog):
    MAProfile = pack_module("stas_core.profile").MAProfile
    prof = MAProfile("Wan", 128, 4, {1: (), 2: (5, 9)})
    spy = Spy()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(spy.install(stas(env.high, blocks="1,2", channels="auto", profile=prof)), 4)
    lines = preflight_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "will steer only in part in this run: the profile lists no channel for block(s) [1]" in lines[0].getMessage()
    assert spy.calls and not spy.steered_steps()   # block 1 really is left alone
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        run(stas(env.high, blocks="1", channels="auto", profile=prof), 4)
    lines = preflight_lines(caplog)
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "will steer nothing in this run: the profile lists no channel for block(s) [1]" in lines[0].getMessage()


# -- item 1: apply_to means the user's prompt, for every guider ------------------------------

PROMPTS = ("positive", "negative", "cond2", "empty")


def prompts():
    return {name: text_cond(seed=10 + i)[0][0] for i, name in enumerate(PROMPTS)}


def guider_sample(guider, steps=2, seed=0):
    import comfy.sample
    import comfy.samplers
    lat = torch.zeros(LATENT)
    noise = comfy.sample.prepare_noise(lat, seed)
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", steps)
    with torch.inference_mode():
        return guider.sample(noise, lat, comfy.samplers.sampler_object("euler"), sigmas, disable_pbar=True, seed=seed)


def cond(t):
    return [[t, {}]]


def make_guider(kind, model, p, negative_model=None):
    import comfy.samplers
    import comfy_extras.nodes_custom_sampler as ncs
    import comfy_extras.nodes_perpneg as npn
    if kind == "CFGGuider":
        g = comfy.samplers.CFGGuider(model)
        g.set_conds(cond(p["positive"]), cond(p["negative"]))
        g.set_cfg(2.0)
    elif kind == "BasicGuider":
        g = ncs.Guider_Basic(model)
        g.set_conds(cond(p["positive"]))
    elif kind.startswith("DualCFGGuider"):
        g = ncs.Guider_DualCFG(model)
        g.set_conds(cond(p["positive"]), cond(p["cond2"]), cond(p["negative"]))
        g.set_cfg(2.0, 3.0, nested=kind.endswith("nested"))
    elif kind == "PerpNegGuider":
        g = npn.Guider_PerpNeg(model)
        g.set_conds(cond(p["positive"]), cond(p["negative"]), cond(p["empty"]))
        g.set_cfg(2.0, 1.0)
    elif kind == "LTXVDualCFGGuider":   # 0.33: two CFG scales, CFGGuider's passes for a video-only latent
        import comfy_extras.nodes_lt as nlt
        if not hasattr(nlt, "Guider_LTXAVDualCFG"):
            pytest.skip(f"ComfyUI {comfy_version()} has no LTXVDualCFGGuider")
        g = nlt.Guider_LTXAVDualCFG(model)
        g.set_conds(cond(p["positive"]), cond(p["negative"]))
        g.set_cfg(2.0, 3.0)
    elif kind == "DualModelGuider":
        g = ncs.Guider_DualModel(model, negative_model)
        g.set_conds(cond(p["positive"]), cond(p["negative"]))
        g.set_cfg(2.0)
    else:
        raise AssertionError(kind)
    return g


EXPECTED = {  # guider -> apply_to -> prompts whose batch rows STAS changes
    "CFGGuider": {"cond": {"positive"}, "uncond": {"negative"}, "both": {"positive", "negative"}},
    "BasicGuider": {"cond": {"positive"}, "both": {"positive"}},
    "DualCFGGuider-regular": {"cond": {"positive"}, "uncond": {"negative"}, "both": {"positive", "cond2", "negative"}},
    "DualCFGGuider-nested": {"cond": {"positive"}, "uncond": {"negative"}, "both": {"positive", "cond2", "negative"}},
    "PerpNegGuider": {"cond": {"positive"}, "uncond": {"negative"}, "both": {"positive", "negative", "empty"}},
    "LTXVDualCFGGuider": {"cond": {"positive"}, "uncond": {"negative"}},
}
CASES = [(g, a) for g, per in EXPECTED.items() for a in per]


@pytest.mark.parametrize("kind,apply_to", CASES)
def test_apply_to_steers_the_users_prompt_under_each_guider(env, kind, apply_to, caplog):
    p = prompts()
    spy = Spy(p)
    g = make_guider(kind, spy.install(stas(env.high, apply_to=apply_to)), p)
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        guider_sample(g)
    assert spy.calls and all(c.prompts and "?" not in c.prompts for c in spy.calls), "prompts not recognised"
    assert spy.steered_prompts() == EXPECTED[kind][apply_to]
    # every call steered exactly the rows of those prompts
    for c in spy.calls:
        assert c.changed == {r for r, name in enumerate(c.prompts) if name in EXPECTED[kind][apply_to]}
    unknown = [r for r in caplog.records if "not one STAS knows" in r.getMessage()]
    assert not unknown


def test_basic_guider_apply_to_uncond_is_refused_before_the_first_step(env):
    p = prompts()
    spy = Spy(p)
    g = make_guider("BasicGuider", spy.install(stas(env.high, apply_to="uncond")), p)
    with pytest.raises(ValueError, match=r"apply_to is 'uncond', but this sampler \(Guider_Basic\) runs no negative"):
        guider_sample(g)
    assert not spy.calls


def test_dual_model_guider(env, caplog):
    import comfy_extras.nodes_custom_sampler as ncs
    if not hasattr(ncs, "Guider_DualModel"):
        pytest.skip(f"ComfyUI {comfy_version()} has no DualModelGuider")
    p = prompts()
    for apply_to, want in (("cond", {"positive"}), ("uncond", {"negative"}), ("both", {"positive", "negative"})):
        spy = Spy(p)
        g = make_guider("DualModelGuider", spy.install(stas(env.high, apply_to=apply_to)), p, negative_model=env.low)
        guider_sample(g)
        assert {c.prompts[0] for c in spy.calls} == {"positive", "negative"}
        assert spy.steered_prompts() == want, apply_to
    # one model for both passes: STAS cannot tell them apart, and says so before the first step
    spy = Spy(p)
    patched = spy.install(stas(env.high))
    g = make_guider("DualModelGuider", patched, p, negative_model=patched)
    with caplog.at_level(logging.INFO, logger="comfyui-stas"):
        guider_sample(g)
    assert spy.steered_prompts() == {"positive", "negative"}
    said = [r for r in caplog.records if r.name == "comfyui-stas"]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert "Guider_DualModel runs its negative pass on the same model as the positive one" in said[0].getMessage()


def test_unknown_guider_is_named_and_both_steers_every_pass(env, caplog):
    """A pack's guider that orders its passes [negative, empty, positive]: STAS cannot know that, so it
    says, before the first step, which pass it steers; 'both' steers every pass."""
    import comfy.samplers

    class Guider_ReversedPack(comfy.samplers.CFGGuider):
        def set_conds(self, positive, negative, empty):
            self.inner_set_conds({"positive": positive, "negative": negative, "empty": empty})

        def predict_noise(self, x, timestep, model_options={}, seed=None):
            c = self.conds
            neg, empty, pos = comfy.samplers.calc_cond_batch(
                self.inner_model, [c.get("negative"), c.get("empty"), c.get("positive")], x, timestep, model_options)
            return neg + self.cfg * (pos - neg) + 0.0 * empty

    p = prompts()
    for apply_to, want in (("cond", {"negative"}), ("both", {"positive", "negative", "empty"})):
        spy = Spy(p)
        g = Guider_ReversedPack(spy.install(stas(env.high, apply_to=apply_to)))
        g.set_conds(cond(p["positive"]), cond(p["negative"]), cond(p["empty"]))
        g.set_cfg(2.0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="comfyui-stas"):
            guider_sample(g)
        assert spy.steered_prompts() == want
        named = [r for r in caplog.records if "the guider Guider_ReversedPack is not one STAS knows" in r.getMessage()]
        assert len(named) == (1 if apply_to == "cond" else 0), [r.getMessage() for r in caplog.records]
        if named:
            assert named[0].levelno == logging.WARNING
            assert named[0].getMessage().startswith("STAS Model Patch may not steer the pass you mean in this run: ")
            assert "steers the pass ComfyUI numbers first" in named[0].getMessage()
            assert "set apply_to to 'both'" in named[0].getMessage()


# -- through ComfyUI's own execution path: the line names the node ---------------------------

def test_execution_path_names_the_node(env, tmp_path, caplog):
    """A graph run by ComfyUI's PromptExecutor: the pre-run line names the node by its id."""
    ensure_test_nodes()
    ensure_extra_node("EmptyHunyuanLatentVideo", "nodes_hunyuan.py")
    stas_inputs = dict(alpha=1.0, blend=1.0, blocks="1", channels="3", threshold=50.0, top_k=4,
                       start_percent=0.0, end_percent=0.4, apply_to="cond")
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "stas_window_wan.safetensors", "weight_dtype": "default"}},
        "7": {"class_type": "STASModelPatch", "inputs": {"model": ["1", 0], **stas_inputs}},
        "3": {"class_type": "STASTestTextEncoder", "inputs": {"kind": "wan"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "a cat"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["3", 0], "text": "blurry"}},
        "6": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5, "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["7", 0], "positive": ["4", 0], "negative": ["5", 0], "latent_image": ["6", 0], "seed": 0,
            "steps": 4, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 0.5}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": ["8", 0], "filename_prefix": "stas_window"}},
    }
    with temp_comfy_dirs(tmp_path, env.high.model.diffusion_model, "stas_window_wan.safetensors"), \
            caplog.at_level(logging.INFO, logger="comfyui-stas"):
        ex = run_prompt(prompt)
    assert ex.success, ex.status_messages
    said = [r.getMessage() for r in caplog.records if r.name == "comfyui-stas"]
    assert len(said) == 1 and said[0].startswith("STAS Model Patch #7 will steer nothing in this run: none of this "
                                                 "run's 4 steps"), said


# -- the MA Recorder's `record` means the same prompts ---------------------------------------

@pytest.mark.parametrize("kind", ["CFGGuider", "DualCFGGuider-regular", "PerpNegGuider"])
def test_recorder_records_the_users_prompt_under_each_guider(env, kind):
    """STAS steers the positive prompt (apply_to cond); a recorder after it that records 'cond' sees
    that pass steered at every step, and one that records 'uncond' sees the negative pass unsteered."""
    rec_node = pack_module("nodes.ma_recorder").MARecorder
    seen = {}
    for record, prompt in (("cond", 0), ("uncond", 1)):
        out = rec_node.execute(model=stas(env.high), blocks=str(BLOCK), steps="all", record=record, channels="3,17",
                               top_k=4, token_stride=0, max_memory_mb=64)
        model, recording = out.result[0], out.result[1]
        guider_sample(make_guider(kind, model, prompts()))
        run = recording.runs[-1]
        entries = [e for (b, _, c), e in run.entries.items() if b == BLOCK and c == prompt]
        assert entries, (kind, record, sorted(run.entries))
        seen[record] = {e.has_steer for e in entries}
    assert seen == {"cond": {True}, "uncond": {False}}, (kind, seen)
