"""STAS Model Patch (Ray) against a real ComfyUI, sequence parallel on 2 and 4 gloo ranks.

Each rank is a forked process that forgets this pack first, as a raylight worker never had it, and runs
the function the node sends to the workers (nodes/_ray_worker.py, loaded from its file as Ray unpickles
it by value), which imports the pack from its folder and patches the rank's tiny random model. xDiT's
sequence-parallel group is a stand-in over the gloo group (stas_harness.ranks.install_xfuser_standin).

- Wan runs raylight's own USP forward (its source, unpacked at test time; xfuser's attention, which needs
  CUDA kernels, replaced by exact attention over gathered keys and values): stas_harness/raylight.py.
- Wan and HunyuanVideo also run ComfyUI's forward with each patched block's output laid out as raylight
  lays it out at the block hook (padded to a multiple of the world size, rank r holds chunk r, gathered
  after the hook). raylight's HunyuanVideo forward is not used: it attends the [text, image] chunks of
  all ranks in another key order with the padding and without the text mask, so it is not bit-exact
  against one GPU even unpatched, and a bit-exact comparison through it would test nothing.

The sampled latent must equal one-process STAS bit for bit, and a model call makes one all-reduce per
steered block inside the window and none outside.
"""
import importlib.util
import re
import sys

import pytest
import torch

from stas_harness.comfy_env import PACK_DIR
from stas_harness.ranks import gather, install_xfuser_standin, pad_chunk, run_ranks

pytestmark = pytest.mark.integration

PLAIN = dict(alpha=1.0, blend=1.0, blocks="middle", channels="auto", threshold=3.0, top_k=4, start_percent=0.0,
             end_percent=0.5, apply_to="cond", mask=None, profile=None)
STEPS = 4
# name, family, latent (b, t, h, w), cfg, settings; token counts 45 (Wan) and 45 + 8 text (HunyuanVideo)
SCENARIOS = {
    "wan_auto_batch2_cfg": ("wan", (2, 3, 6, 10), 2.0, {}),
    "wan_cfg1_boundaries_only": ("wan", (1, 3, 6, 10), 1.0,
                                 dict(channels="3,40", mask=dict(first_frame=False, boundaries=True, head=1.0,
                                                                 tail=1.0, unit="rows"))),
    "hunyuan_all_blocks_auto": ("hunyuan", (1, 3, 6, 10), 2.0, dict(blocks="all", apply_to="both")),
}


class SlicedBlock:
    """patches_replace["dit"] entry over the patch STAS installed: the block runs whole, its output
    is handed to STAS as this rank's USP chunk, and the chunks are gathered back."""

    def __init__(self, patch, world, rank):
        self.patch, self.world, self.rank = patch, world, rank

    def __call__(self, args, extra):
        full = extra["original_block"](args)
        n = full["img"].shape[1]
        local = pad_chunk(full["img"], self.world, self.rank)
        out = self.patch(args, {"original_block": lambda a: {**full, "img": local}})
        return {**out, "img": gather(out["img"], n)}


def usp_ranks(rank, world, names):
    """On each rank: every scenario sampled with the Ray node's worker patch and USP chunking, and with
    one-process STAS. Rank 0 returns {name: facts}."""
    import torch.distributed as dist

    from stas_harness import comfy_env, models
    comfy_env.import_comfyui(comfy_env.comfyui_path(), cpu=True)
    pack_name = str(PACK_DIR).replace(".", "_x_")  # the name ComfyUI's loader gives the pack
    for m in [m for m in sys.modules if m == pack_name or m.startswith(pack_name + ".")]:
        del sys.modules[m]  # forked from the test process: forget the pack, as a raylight worker never had it
    comfy_env._loaded.clear()
    facts = {"pack imported before the worker patch": pack_name in sys.modules}
    install_xfuser_standin()
    spec = importlib.util.spec_from_file_location("stas_ray_worker_by_value", PACK_DIR / "nodes" / "_ray_worker.py")
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    calls = [0]
    all_reduce = dist.all_reduce

    def counted(*a, **k):
        calls[0] += 1
        return all_reduce(*a, **k)

    dist.all_reduce = counted
    for name in names:
        fam, (b, t, h, w), cfg, extra = SCENARIOS[name]
        model = models.tiny_wan() if fam == "wan" else models.tiny_hunyuan_video()
        settings = {**PLAIN, **extra}
        patched = worker.apply_on_worker(model, str(PACK_DIR), pack_name, settings)
        comfy_env._loaded["pack"] = sys.modules[pack_name]
        dit = patched.model_options["transformer_options"]["patches_replace"]["dit"]
        steered_blocks = sum(type(p).__name__ == "BlockReplacePatch" for p in dit.values())  # not the pass-throughs
        for key in list(dit):
            dit[key] = SlicedBlock(dit[key], world, rank)
        lat = comfy_env.latent(t, h, w, b)
        conds = {}
        if fam == "hunyuan":  # HunyuanVideo's text conditioning carries CLIP's pooled output
            pooled = torch.randn(1, 768, generator=torch.Generator().manual_seed(7))
            conds = dict(positive=comfy_env.text_cond(seed=1, pooled_output=pooled),
                         negative=comfy_env.text_cond(seed=2, pooled_output=pooled))
        starts = []
        hook = patched.model.diffusion_model.register_forward_pre_hook(lambda *_: starts.append(calls[0]))
        try:
            got = comfy_env.sample(patched, lat, steps=STEPS, cfg=cfg, **conds)
        finally:
            hook.remove()
        starts.append(calls[0])
        if rank:
            continue
        mask = extra.get("mask")
        one = comfy_env.stas(model, **{**settings, "mask": comfy_env.Pack().layout.BoundarySpec(**mask) if mask
                                       else None})
        want = comfy_env.sample(one, lat, steps=STEPS, cfg=cfg, **conds)
        plain = comfy_env.sample(model, lat, steps=STEPS, cfg=cfg, **conds)
        per_call = [b - a for a, b in zip(starts, starts[1:])]
        k = len(per_call) // STEPS
        facts[name] = dict(equal=torch.equal(got, want), steered=not torch.equal(want, plain),
                           max_diff=float((got - want).abs().max()),
                           all_reduces_per_step=[sum(per_call[i * k:(i + 1) * k]) for i in range(STEPS)],
                           steered_blocks=steered_blocks)
    return facts if rank == 0 else None


def raylight_ranks(rank, world, root, names):
    """On each rank: raylight's own USP forward (its USPInjectRegistry on a tiny Wan), STAS installed by
    the Ray node's worker function; rank 0 also samples one process. Rank 0 returns {name: facts}."""
    from pathlib import Path

    import torch.distributed as dist

    from stas_harness import comfy_env, models
    from stas_harness.raylight import Attention, usp_registry
    comfy_env.import_comfyui(comfy_env.comfyui_path(), cpu=True)
    attention = Attention()
    registry = usp_registry(Path(root), attention)
    rp = comfy_env.pack_module("nodes.ray_patch")
    calls, all_reduce = [0], dist.all_reduce

    def counted(*a, **k):
        calls[0] += 1
        return all_reduce(*a, **k)

    dist.all_reduce = counted
    facts = {}
    for name in names:
        _, (b, t, h, w), cfg, extra = SCENARIOS[name]
        usp_model = models.tiny_wan()
        registry.inject(usp_model, None, None, None, None)  # raylight's forward_orig and attention, in place
        facts["forward"] = usp_model.model.diffusion_model.forward_orig.__func__.__module__
        attention.length = t * (h // 2) * (w // 2)
        lat = comfy_env.latent(t, h, w, b)
        usp = comfy_env.sample(usp_model, lat, steps=STEPS, cfg=cfg)
        patched = rp.patch_on_worker(usp_model, rp.worker_call(dict(PLAIN, **extra))[3] if not extra.get("mask")
                                     else {**PLAIN, **extra})
        starts = []
        hook = usp_model.model.diffusion_model.register_forward_pre_hook(lambda *_: starts.append(calls[0]))
        got = comfy_env.sample(patched, lat, steps=STEPS, cfg=cfg)
        hook.remove()
        starts.append(calls[0])
        if rank:
            continue
        model = models.tiny_wan()
        plain = comfy_env.sample(model, lat, steps=STEPS, cfg=cfg)
        mask = extra.get("mask")
        one = comfy_env.stas(model, **{**PLAIN, **extra,
                                       "mask": comfy_env.Pack().layout.BoundarySpec(**mask) if mask else None})
        want = comfy_env.sample(one, lat, steps=STEPS, cfg=cfg)
        per_call = [y - x for x, y in zip(starts, starts[1:])]
        k = len(per_call) // STEPS
        facts[name] = dict(equal=torch.equal(got, want), steered=not torch.equal(want, plain),
                           max_diff=float((got - want).abs().max()), usp_alone=float((usp - plain).abs().max()),
                           all_reduces_per_step=[sum(per_call[i * k:(i + 1) * k]) for i in range(STEPS)],
                           steered_blocks=1)
    return facts if rank == 0 else None


def check(facts, names):
    assert facts.get("pack imported before the worker patch") is not True
    for name in names:
        f = facts[name]
        assert f["steered"], f"{name}: one-process STAS changed nothing, so the comparison tests nothing"
        assert f["equal"], f"{name}: sequence-parallel STAS differs from one process by {f['max_diff']:.3g}"
        nb = f["steered_blocks"]  # end_percent 0.5 of 4 steps: two steered steps, one steered call each
        assert f["all_reduces_per_step"] == [nb, nb, 0, 0], f


@pytest.mark.parametrize("world,names", [(2, list(SCENARIOS)), (4, ["wan_auto_batch2_cfg", "hunyuan_all_blocks_auto"])])
def test_ray_worker_patch_under_usp_equals_one_process(pk, world, names):
    torch.set_num_threads(1)
    check(run_ranks(world, usp_ranks, names, start="fork")[0], names)


def test_node_offered_and_says_when_raylight_is_missing(pk, monkeypatch):
    """Offered with or without raylight (saved workflows open), and queueing it says what is missing before
    anything runs: through ComfyUI's own validate_prompt, as the server does for POST /prompt (the browser
    test tests/test_web_ray_missing.py shows it in the frontend)."""
    import execution
    node = pk.module("nodes.ray_patch").StasModelPatchRay
    assert node in pk.module("nodes").NODES
    schema = node.define_schema()
    ids = [i.id for i in schema.inputs]
    assert ids[0] == "ray_actors" and ids[1:] == [i.id for i in pk.stas.define_schema().inputs if i.id != "model"]
    assert schema.inputs[0].optional and schema.is_output_node  # so ComfyUI reaches validate_inputs without raylight
    args = dict(PLAIN, ray_actors={"workers": [object()]})
    widgets = {k: v for k, v in PLAIN.items() if k not in ("mask", "profile")}

    def node_errors(prompt):
        valid = asyncio_run(execution.validate_prompt("t", prompt, None))
        assert not valid[0] and list(valid[3]) == ["2"], valid
        return [e["details"] for e in valid[3]["2"]["errors"]]

    missing = r"^STAS Model Patch \(Ray\): raylight is not installed .*Install raylight \(ComfyUI Manager"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "ray", None)  # `import ray` fails, as without raylight
        with pytest.raises(ValueError, match=missing):
            node.execute(**args)
        with pytest.raises(ValueError, match=missing):
            node.execute(**{**args, "ray_actors": None})
        errors = node_errors({"2": {"class_type": "STASModelPatchRay", "inputs": widgets}})
        assert len(errors) == 1 and re.match(missing, errors[0], re.S), errors
    monkeypatch.setitem(sys.modules, "ray", _StandInRay)
    assert node_errors({"2": {"class_type": "STASModelPatchRay", "inputs": widgets}}) == [
        "STAS Model Patch (Ray): ray_actors is not connected. Connect the RAY_ACTORS output of raylight's "
        "Ray Init Actor / model loader."]
    with pytest.raises(ValueError, match=r"^STAS Model Patch \(Ray\): ray_actors is not connected"):
        node.execute(**{**args, "ray_actors": None})
    with pytest.raises(ValueError, match=r"^STAS Model Patch \(Ray\): ray_actors holds no workers"):
        node.execute(**{**args, "ray_actors": {}})
    with pytest.raises(ValueError, match=r"^STAS Model Patch \(Ray\): channels"):
        node.execute(**{**args, "channels": "x"})


def test_worker_patch_takes_plain_settings_and_never_stacks(pk):
    """What the node sends holds builtins only (a worker unpickles it without this pack), a mask and a
    profile survive the trip, a worker's refusal comes back under this node's name, and patching a
    worker's model again replaces the earlier patch."""
    import pickle

    import comfy.patcher_extension as pe

    from stas_harness import models
    rp = pk.module("nodes.ray_patch")
    model = models.tiny_wan()
    profile = pk.profile.MAProfile("Wan", 128, 4, {2: (3, 40)})
    settings = dict(PLAIN, blocks="2", threshold=50.0, mask=pk.layout.BoundarySpec(first_frame=False),
                    profile=profile)
    fn, pack_dir, pack_name, plain = rp.worker_call(settings)
    assert b"stas_core" not in pickle.dumps(plain) and b"nodes" not in pickle.dumps(plain)
    first = fn(model, pack_dir, pack_name, plain)
    again = fn(first, pack_dir, pack_name, plain)
    for m in (first, again):
        keys = [k for k in m.wrappers[pe.WrappersMP.APPLY_MODEL] if k.startswith("comfyui-stas.")]
        assert len(keys) == 1, keys
        plan = m.wrappers[pe.WrappersMP.APPLY_MODEL][keys[0]][0].plan
        assert plan.spec == pk.layout.BoundarySpec(first_frame=False) and plan.profile == profile
        assert plan.shard is not None and plan.shard() is None  # no sequence-parallel group here
    assert sample_equal(first, again)
    undo, name = rp.worker_undo()
    assert undo(again, name) is model and undo(first, name) is model and undo(model, name) is model
    assert not hasattr(model, rp.BASE_ATTR)  # the user's model carries nothing of the patch
    import subprocess
    import sys
    lost = subprocess.run([sys.executable, "-c", "import importlib.util as u, sys; s = u.spec_from_file_location('w', "
                           f"{str(PACK_DIR / 'nodes' / '_ray_worker.py')!r}); m = u.module_from_spec(s); "
                           "s.loader.exec_module(m); m.apply_on_worker(None, '/nonexistent/comfyui-stas', 'x', {})"],
                          capture_output=True, text=True, cwd=str(pack_dir))
    assert "ValueError: STAS Model Patch: this Ray worker has no comfyui-stas" in lost.stderr, lost.stderr
    with pytest.raises(ValueError, match=r"^STAS Model Patch: blocks: block 9 does not exist"):
        fn(model, pack_dir, pack_name, {**plain, "blocks": "9", "profile": None})
    try:
        fn(model, pack_dir, pack_name, {**plain, "blocks": "9", "profile": None})
    except ValueError as e:
        wrapped = type("RayTaskError", (Exception,), {})("traceback text")
        wrapped.cause = e
        assert str(rp._worker_error(wrapped)).startswith("STAS Model Patch (Ray): blocks: block 9 does not exist")


def sample_equal(a, b):
    from stas_harness import comfy_env
    lat = comfy_env.latent(3, 6, 10)
    return torch.equal(comfy_env.sample(a, lat, steps=2), comfy_env.sample(b, lat, steps=2))


def test_through_raylights_own_usp_forward(pk, tmp_path):
    """raylight's USP forward for Wan (its source, unpacked at test time; its xfuser attention replaced by
    exact attention over gathered keys and values) with STAS Model Patch (Ray)'s worker patch equals
    one-process STAS bit for bit, 45 tokens on 2 ranks (padded to 46)."""
    from stas_harness import raylight
    src = raylight.source()
    if src is None or not src.exists():
        pytest.skip("raylight's source is not here (../shared/thirdparty/raylight-*.tar.gz or $STAS_RAYLIGHT_SRC)")
    root = raylight.unpack(src, tmp_path)
    torch.set_num_threads(1)
    names = ["wan_auto_batch2_cfg", "wan_cfg1_boundaries_only"]
    facts = run_ranks(2, raylight_ranks, str(root), names, start="fork")[0]
    assert facts["forward"] == "raylight.diffusion_models.wan.xdit_context_parallel"
    for name in names:
        assert facts[name]["usp_alone"] == 0.0, f"{name}: raylight's USP forward alone differs from one process: {facts}"
    check(facts, names)


# -- bypassing the node: raylight's workers keep their model across runs ---------------------------------

class _Ref:
    """What a call on a Ray actor returns: its value, or the error it raised (given back by ray.get)."""

    def __init__(self, fn):
        try:
            self.value, self.error = fn(), None
        except Exception as e:  # noqa: BLE001 -- Ray keeps a task's error for ray.get
            self.value, self.error = None, e


class _StandInRay:
    """The part of ``ray`` the node and raylight's driver nodes use, over in-process workers that run each
    call when it is submitted (an actor runs one caller's calls in submission order)."""

    cloudpickle = type("cloudpickle", (), {"register_pickle_by_value": staticmethod(lambda module: None)})

    @staticmethod
    def get(refs):
        for r in refs if isinstance(refs, list) else [refs]:
            if r.error is not None:
                raise r.error
        return [r.value for r in refs] if isinstance(refs, list) else refs.value


class _Method:
    def __init__(self, fn):
        self.fn = fn

    def options(self, **_):
        return self

    def remote(self, *a, **k):
        return _Ref(lambda: self.fn(*a, **k))


class _Handle:
    """A Ray actor handle over an in-process RayWorker stand-in."""

    def __init__(self, worker):
        self.worker = worker

    def __getattr__(self, name):
        return _Method(getattr(self.worker, name))


class _RayWorker:
    """raylight's RayWorker (distributed_worker/ray_worker.py), the methods this test calls, as raylight writes
    them: one model per worker, which model_function_runner replaces and common_ksampler samples."""

    def __init__(self, model):
        self.model, self.fail = model, False

    def model_function_runner(self, fn, *args, **kwargs):
        self.model = fn(self.model, *args, **kwargs)

    def common_ksampler(self, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent, **_):
        from stas_harness import comfy_env
        if self.fail:
            raise RuntimeError("CUDA out of memory (stand-in)")
        return ({"samples": comfy_env.sample(self.model, latent["samples"], steps=steps, cfg=cfg, seed=seed,
                                             positive=positive, negative=negative)},)


class _Loader:
    """raylight's Ray UNET Loader as far as STAS is concerned: RAY_ACTORS whose workers hold the model."""
    workers = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"unet_name": ("STRING", {"default": "tiny"})}}

    RETURN_TYPES = ("RAY_ACTORS",)
    FUNCTION = "load"
    CATEGORY = "test"

    def load(self, unet_name):
        return ({"workers": [_Handle(w) for w in self.workers]},)


class _Sampler:
    """raylight's XFuser KSampler (Advanced) as its ray_sample calls the workers: common_ksampler on each."""
    got = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ray_actors": ("RAY_ACTORS",), "noise_seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "ray_sample"
    CATEGORY = "test"
    OUTPUT_NODE = True

    def ray_sample(self, ray_actors, noise_seed):
        import ray

        from stas_harness import comfy_env
        lat = {"samples": comfy_env.latent(3, 6, 10)}
        futures = [a.common_ksampler.remote(noise_seed, 2, 2.0, "euler", "simple", comfy_env.text_cond(seed=1),
                                            comfy_env.text_cond(seed=2), lat) for a in ray_actors["workers"]]
        out = ray.get(futures)[0][0]
        self.got.append((noise_seed, out["samples"]))
        return (out,)


def _stas_keys(model):
    import comfy.patcher_extension as pe
    return [k for k in model.wrappers.get(pe.WrappersMP.APPLY_MODEL, {}) if k.startswith("comfyui-stas.")]


def test_bypassing_the_ray_node_samples_unsteered(pk, monkeypatch):
    """Runs of one workflow through ComfyUI's executor (one executor: its cache kept between runs, as in the
    app): loader -> STAS Model Patch (Ray) -> sampler steers; the same with the node bypassed (the frontend
    then links the sampler to the loader) samples the plain model, as on one GPU; enabling the node again
    steers again, its output cached or not. Between runs every worker holds the loader's model, unpatched.
    A second STAS (Ray) node replaces the first; a failed sampling leaves the workers unpatched too; a
    sampler fed by the loader and one fed by the node in one run give the plain and the steered result. The
    node alone (an output node, run though nothing consumes it) leaves the workers unpatched."""
    import execution
    import nodes as comfy_nodes

    from stas_harness import comfy_env, models
    monkeypatch.setitem(sys.modules, "ray", _StandInRay)
    for name, cls in (("StasTestRayLoader", _Loader), ("StasTestRaySampler", _Sampler)):
        monkeypatch.setitem(comfy_nodes.NODE_CLASS_MAPPINGS, name, cls)
    model = models.tiny_wan()
    workers = [_RayWorker(model), _RayWorker(model)]
    monkeypatch.setattr(_Loader, "workers", workers)
    monkeypatch.setattr(_Sampler, "got", [])
    settings = dict(PLAIN, blocks="1", end_percent=1.0)
    lat = comfy_env.latent(3, 6, 10)

    def one_gpu(seed, **extra):
        return comfy_env.sample(comfy_env.stas(model, **{**settings, **extra}), lat, steps=2, cfg=2.0, seed=seed)

    def plain(seed):
        return comfy_env.sample(model, lat, steps=2, cfg=2.0, seed=seed)

    loader = {"class_type": "StasTestRayLoader", "inputs": {"unet_name": "tiny"}}
    inputs = {k: v for k, v in settings.items() if k not in ("mask", "profile")}
    node = {"class_type": "STASModelPatchRay", "inputs": {**inputs, "ray_actors": ["1", 0]}}

    def sampler(src, seed):
        return {"class_type": "StasTestRaySampler", "inputs": {"ray_actors": [src, 0], "noise_seed": seed}}

    if "cache_args" in __import__("inspect").signature(execution.PromptExecutor).parameters:
        ex = execution.PromptExecutor(comfy_env._Server(), cache_args={"lru": 0, "ram": 2.0, "ram_inactive": 4.0})
    else:
        ex = execution.PromptExecutor(comfy_env._Server())

    def execute(prompt):
        valid = asyncio_run(execution.validate_prompt("t", prompt, None))
        assert valid[0], valid
        if hasattr(ex, "execute_async"):
            asyncio_run(ex.execute_async(prompt, "t", {}, valid[2]))
        else:
            ex.execute(prompt, "t", {}, valid[2])

    def run(prompt):
        n = len(_Sampler.got)
        execute(prompt)
        assert ex.success, ex.status_messages[-1:]
        for w in workers:  # between runs: the loader's model itself, nothing of STAS left on it
            assert w.model is model and not _stas_keys(w.model)
        return dict(_Sampler.got[n:])

    assert run({"1": loader, "2": node}) == {}  # an output node: it runs unconsumed, and leaves the workers alone
    steered = run({"1": loader, "2": node, "3": sampler("2", 1)})
    assert list(steered) == [1] and torch.equal(steered[1], one_gpu(1)) and not torch.equal(steered[1], plain(1))
    bypassed = run({"1": loader, "3": sampler("1", 2)})
    assert list(bypassed) == [2] and torch.equal(bypassed[2], plain(2))
    again = run({"1": loader, "2": node, "3": sampler("2", 3)})
    assert list(again) == [3] and torch.equal(again[3], one_gpu(3))
    chained = {**node, "inputs": {**node["inputs"], "blocks": "2", "ray_actors": ["2", 0]}}
    second = run({"1": loader, "2": node, "4": chained, "3": sampler("4", 4)})
    assert list(second) == [4] and torch.equal(second[4], one_gpu(4, blocks="2"))
    both = run({"1": loader, "2": node, "3": sampler("2", 5), "5": sampler("1", 6)})
    assert sorted(both) == [5, 6] and torch.equal(both[5], one_gpu(5)) and torch.equal(both[6], plain(6))
    workers[0].fail = True
    execute({"1": loader, "2": node, "3": sampler("2", 7)})
    assert not ex.success and "out of memory" in str(ex.status_messages[-1])
    assert all(w.model is model and not _stas_keys(w.model) for w in workers)


def asyncio_run(coro):
    import asyncio
    return asyncio.run(coro)


def test_steered_methods_are_raylights_sampling_methods(pk, tmp_path):
    """The worker methods that STAS Model Patch (Ray)'s output steers are exactly those of raylight's RayWorker
    that sample its model (comfy.sample.sample / sample_custom / a guider's sample), in raylight's source."""
    import ast
    import re

    from stas_harness import raylight
    src = raylight.source()
    if src is None or not src.exists():
        pytest.skip("raylight's source is not here (../shared/thirdparty/raylight-*.tar.gz or $STAS_RAYLIGHT_SRC)")
    text = (raylight.unpack(src, tmp_path) / "raylight" / "distributed_worker" / "ray_worker.py").read_text()
    worker = next(n for n in ast.parse(text).body if isinstance(n, ast.ClassDef) and n.name == "RayWorker")
    sampling = {f.name for f in worker.body if isinstance(f, ast.FunctionDef)
                and re.search(r"\.sample\(|\bsample_custom\(", ast.get_source_segment(text, f))}
    assert sampling and sampling == set(pk.module("nodes.ray_patch").SAMPLING_METHODS), sampling


class _ActorWorker(_RayWorker):
    """The same worker as a real Ray actor in a process of its own: ComfyUI and the tiny Wan loaded there."""

    def __init__(self):
        from stas_harness import comfy_env, models
        comfy_env.import_comfyui(comfy_env.comfyui_path(), cpu=True)
        torch.set_num_threads(1)
        self.base = models.tiny_wan()
        super().__init__(self.base)

    def state(self):
        return self.model is self.base, _stas_keys(self.model), any(m.endswith(".nodes.ray_patch") for m in sys.modules)


@pytest.mark.slow
def test_with_real_ray_actors(pk):
    """Where ``ray`` is installed (not in the testbeds: raylight itself needs CUDA, docs/multigpu.md): two real
    Ray actors on the CPU, each holding its model as raylight's workers do. The node leaves them unpatched;
    a sampling call through its output steers (equal to one process) and leaves them unpatched; one through
    the loader's handles samples the plain model; a refusal on a worker comes back under the node's name."""
    import os

    ray = pytest.importorskip("ray", reason="ray is not installed (raylight itself needs CUDA: docs/multigpu.md)")
    from stas_harness import comfy_env, models
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "COMFYUI_PATH": str(comfy_env.comfyui_path())}})
    try:
        workers = [ray.remote(_ActorWorker).remote() for _ in range(2)]
        loader = {"workers": workers}
        settings = {k: v for k, v in dict(PLAIN, blocks="1", end_percent=1.0).items() if k not in ("mask", "profile")}
        node = pk.module("nodes.ray_patch").StasModelPatchRay
        assert node.validate_inputs(ray_actors=None) is True  # linked, as ComfyUI validates it: raylight found
        out = node.execute(ray_actors=loader, **settings)[0]
        state = lambda: ray.get([w.state.remote() for w in workers])  # noqa: E731
        assert state() == [(True, [], True)] * 2  # the pack was imported there, and the model left as it was
        lat = comfy_env.latent(3, 6, 10)
        conds = (comfy_env.text_cond(seed=1), comfy_env.text_cond(seed=2), {"samples": lat})

        def sample(actors):
            return [r[0]["samples"] for r in ray.get([a.common_ksampler.remote(1, 2, 2.0, "euler", "simple", *conds)
                                                       for a in actors["workers"]])]

        steered, plain = sample(out), sample(loader)
        assert state() == [(True, [], True)] * 2
        model = models.tiny_wan()
        want = comfy_env.sample(comfy_env.stas(model, **settings), lat, steps=2, cfg=2.0, seed=1)
        want_plain = comfy_env.sample(model, lat, steps=2, cfg=2.0, seed=1)
        assert not torch.equal(want, want_plain)
        assert all(torch.equal(s, want) for s in steered) and all(torch.equal(p, want_plain) for p in plain)
        with pytest.raises(ValueError, match=r"^STAS Model Patch \(Ray\): blocks: block 9 does not exist"):
            node.execute(ray_actors=loader, **{**settings, "blocks": "9"})
        assert state() == [(True, [], True)] * 2
    finally:
        ray.shutdown()
