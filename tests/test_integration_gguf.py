"""STAS and the MA Recorder on GGUF-quantized Wan models loaded by ComfyUI-GGUF (UnetLoaderGGUF), in a real ComfyUI.

A tiny random-weight Wan 2.1 T2V and Wan 2.2 TI2V 5B are quantized here with the ``gguf`` package
(stas_harness/gguf.py) to Q8_0 and to the smallest type that package writes for the model's rows,
then loaded by ComfyUI-GGUF from scripts/setup.sh's copy in the testbed's custom_nodes/ (under CI a
missing ComfyUI-GGUF fails these tests). The block outputs are checked as in test_integration_families:
values alpha*M*sign from the quantized model's own hidden states at the steered tokens and channels,
bit-identical elsewhere. Also: the MA Recorder's values are the block output, the MA Visualizer draws
them, STAS survives ComfyUI-GGUF's own clone(), a LoRA on the GGUF model (either side of STAS) and
unloading between runs, and the user's model is never left patched.
"""
from __future__ import annotations

import functools
import types

import pytest
import torch

import test_integration_families as fam
from stas_harness import comfy_env as ce, gguf as gg, models
from stas_harness.comfy_env import latent
from stas_harness.server import skip_missing

pytestmark = pytest.mark.integration

VARIANTS = {"wan21": (dict(), "WAN21", 16), "wan22_5b": (dict(in_dim=48, out_dim=48), "WAN22", 48)}
BLOCK = 1


@pytest.fixture(scope="module")
def ggnodes(pk):
    """ComfyUI-GGUF loaded into this ComfyUI (once), or a skip / CI failure saying why not."""
    root = ce.comfyui_path()
    d = gg.comfyui_gguf_dir(root)
    if d is None:
        skip_missing(f"ComfyUI-GGUF not found in {root}/custom_nodes: bash scripts/setup.sh unpacks it there from "
                     "../shared/thirdparty (STAS_THIRDPARTY)")
    try:
        import gguf  # noqa: F401
    except ImportError:
        skip_missing("the gguf package is missing from this ComfyUI's python: bash scripts/setup.sh installs it")
    try:
        mappings = gg.load_comfyui_gguf(d)
    except Exception as e:  # noqa: BLE001  (an upstream incompatibility is reported, not hidden)
        pytest.skip(f"{gg.comfyui_gguf_version(d)} does not load on ComfyUI {ce.comfy_version()}: {e}")
    return types.SimpleNamespace(dir=d, version=gg.comfyui_gguf_version(d), mappings=mappings)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """diffusion_models and loras folders under a temp dir registered with ComfyUI (the testbed stays untouched)."""
    import folder_paths
    root = tmp_path_factory.mktemp("gguf_models")
    added = []
    for key in ("diffusion_models", "loras"):
        (root / key).mkdir()
        folder_paths.add_model_folder_path(key, str(root / key))
        added.append((key, str(root / key)))
    yield root
    for key, path in added:
        folder_paths.folder_names_and_paths[key][0].remove(path)
    folder_paths.filename_list_cache.clear()


def refresh():
    import folder_paths
    folder_paths.filename_list_cache.clear()


def smallest_type(sd) -> str:
    """The smallest GGML type the gguf package writes for every row length of ``sd`` that ComfyUI-GGUF reads."""
    names = gg.quant_types(gg.row_lengths(sd))
    assert names, "the gguf package writes no type for these rows"
    return names[0]


@functools.lru_cache(maxsize=None)
def state_dict(variant: str, seed: int = 0):
    kw = VARIANTS[variant][0]
    return models.random_state_dict(models.wan_module("WanModel", **kw), seed=seed)


def load_gguf(ggnodes, folders, variant: str, qtype: str):
    """The tiny ``variant`` written as GGUF in ``qtype`` and loaded by UnetLoaderGGUF; (model, file name, qtype)."""
    sd = state_dict(variant)
    qtype = smallest_type(sd) if qtype == "smallest" else qtype
    name = f"tiny_{variant}_{qtype}.gguf"
    path = folders / "diffusion_models" / name
    if not path.exists():
        written = gg.write_gguf(sd, path, qtype)
        assert written[f"blocks.{BLOCK}.self_attn.q.weight"] == qtype
    refresh()
    (model,) = ggnodes.mappings["UnetLoaderGGUF"]().load_unet(name)
    assert type(model).__name__ == "GGUFModelPatcher"
    assert type(model.model).__name__ == VARIANTS[variant][1]
    w = model.model.diffusion_model.blocks[BLOCK].self_attn.q.weight
    assert getattr(getattr(w, "tensor_type", None), "name", None) == qtype, "the weight is not quantized"
    return model, name, qtype


def video_latent(variant: str):
    return latent(c=VARIANTS[variant][2])


def steered_exactly(pk, model, lat, steps=2):
    """Sample ``model`` with STAS on BLOCK between test recorders; every steered call equals the formula."""
    m, rec = fam.patched_with_recorders(pk, model, [("double_block", BLOCK, BLOCK)])
    out = ce.sample(m, lat, steps=steps, cfg=2.0)
    assert torch.isfinite(out).all()
    pre, post = rec[BLOCK]
    assert len(pre.calls) == steps and len(post.calls) == steps
    for a, b in zip(pre.calls, post.calls):
        fam.check_call(a, b, 0, fam.grid_of(lat), 0)
    return out, pre


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "smallest"])
def test_gguf_steered_exactly_and_nothing_leaks(pk, ggnodes, folders, variant, qtype):
    model, _, qtype = load_gguf(ggnodes, folders, variant, qtype)
    lat = video_latent(variant)
    before = ce.sample(model, lat, steps=2, cfg=2.0)
    _, pre = steered_exactly(pk, model, lat)
    # the hidden states STAS read are the quantized model's own: the unquantized model gives others
    plain = models.load_random(models.wan_module("WanModel", **VARIANTS[variant][0]))
    _, plain_pre = steered_exactly(pk, plain, lat)
    assert not torch.equal(pre.calls[0]["img"], plain_pre.calls[0]["img"]), f"{qtype} changed nothing"
    assert torch.equal(ce.sample(model, lat, steps=2, cfg=2.0), before), "the GGUF model was left patched"
    assert type(model).__name__ == "GGUFModelPatcher"


def write_lora(folders, name: str, dm, rank: int = 4, seed: int = 7):
    """A LoRA (lora_up / lora_down / alpha, ComfyUI's key format) on BLOCK's attention q and ffn.0."""
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for mod in (f"blocks.{BLOCK}.self_attn.q", f"blocks.{BLOCK}.ffn.0"):
        w = dm.get_submodule(mod).weight
        out_f, in_f = getattr(w, "tensor_shape", None) or w.shape
        sd[f"diffusion_model.{mod}.lora_up.weight"] = torch.randn(out_f, rank, generator=g) * 0.2
        sd[f"diffusion_model.{mod}.lora_down.weight"] = torch.randn(rank, in_f, generator=g) * 0.2
        sd[f"diffusion_model.{mod}.alpha"] = torch.tensor(float(rank))
    save_file(sd, str(folders / "loras" / name))
    refresh()
    return name


def lora(model, name, strength=1.0):
    import nodes as comfy_nodes
    return comfy_nodes.LoraLoaderModelOnly().load_lora_model_only(model, name, strength)[0]


def test_gguf_clone_lora_either_side_and_reload(pk, ggnodes, folders):
    """ComfyUI-GGUF's clone() keeps STAS; a LoRA on the GGUF model is applied with STAS before or after it and
    steering stays exact; unloading between runs changes nothing; the unpatched model stays unpatched."""
    import comfy.model_management as mm
    model, _, _ = load_gguf(ggnodes, folders, "wan21", "Q8_0")
    lat = video_latent("wan21")
    plain = ce.sample(model, lat, steps=2, cfg=2.0)
    name = write_lora(folders, "tiny_wan21_lora.safetensors", model.model.diffusion_model)

    steered = fam.stas(model, blocks=str(BLOCK))
    assert type(steered).__name__ == "GGUFModelPatcher", "STAS's clone lost ComfyUI-GGUF's patcher"
    again = steered.clone()    # ComfyUI-GGUF's own clone, after STAS
    assert type(again).__name__ == "GGUFModelPatcher"
    assert torch.equal(ce.sample(again, lat, steps=2, cfg=2.0), ce.sample(steered, lat, steps=2, cfg=2.0))

    with_lora = lora(model, name)
    lora_only = ce.sample(with_lora, lat, steps=2, cfg=2.0)
    assert not torch.equal(lora_only, plain), "the LoRA changed nothing on the GGUF model"
    out_after, _ = steered_exactly(pk, with_lora, lat)                   # LoRA -> STAS
    stas_then_lora = lora(fam.stas(model, blocks=str(BLOCK)), name)     # STAS -> LoRA
    assert type(stas_then_lora).__name__ == "GGUFModelPatcher"
    out_before = ce.sample(stas_then_lora, lat, steps=2, cfg=2.0)
    assert torch.equal(out_before, out_after), "the node order of STAS and the LoRA changed the result"
    assert not torch.equal(out_after, lora_only), "STAS steered nothing under the LoRA"

    mm.unload_all_models()
    assert torch.equal(ce.sample(stas_then_lora, lat, steps=2, cfg=2.0), out_before), "a reload changed the result"
    mm.unload_all_models()
    assert torch.equal(ce.sample(model, lat, steps=2, cfg=2.0), plain), "the GGUF model was left patched"
    assert not model.model_options["transformer_options"].get("patches_replace", {}).get("dit")


def recorded_exactly(pk, model, lat, order="recorder"):
    """MA Recorder on ``model`` (``order`` 'lora': a LoRA was put after the recorder by the caller) between test
    recorders; the recorded peaks equal the block output bit for bit. Returns (samples, recording)."""
    rm, rec = pk.rec.execute(model=model, blocks=str(BLOCK), steps="all", record="cond", channels="auto", top_k=2,
                             token_stride=0, max_memory_mb=64).result
    assert type(rm).__name__ == "GGUFModelPatcher"
    post = fam.Rec(inner=rm.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", BLOCK)])
    rm2 = rm.clone()
    rm2.set_model_patch_replace(post, "dit", "double_block", BLOCK)
    samples = ce.sample(rm2, lat, steps=2, cfg=2.0)
    run = rec.runs[-1]
    assert sorted(run.entries) == [(BLOCK, 0, 0), (BLOCK, 1, 0)]
    for s, call in enumerate(post.calls):
        row = call["cond_or_uncond"].index(0)
        assert torch.equal(run.entries[(BLOCK, s, 0)].peak[0], call["img"][row].abs().amax(0).float())
    return samples, rec


def test_gguf_recorder_and_visualizer(pk, ggnodes, folders):
    """The MA Recorder on a GGUF model records the block output bit for bit (also under a LoRA and after an
    unload) and changes nothing that is sampled; the MA Visualizer draws it."""
    import comfy.model_management as mm
    model, _, qtype = load_gguf(ggnodes, folders, "wan21", "smallest")
    lat = video_latent("wan21")
    reference = ce.sample(model, lat, steps=2, cfg=2.0)
    samples, rec = recorded_exactly(pk, model, lat)
    assert torch.equal(samples, reference), "recording changed the sampled latent"
    mm.unload_all_models()
    again, rec2 = recorded_exactly(pk, model, lat)
    assert torch.equal(again, reference) and all(
        torch.equal(rec.runs[-1].entries[k].peak, e.peak) for k, e in rec2.runs[-1].entries.items())
    name = write_lora(folders, "tiny_wan21_lora_rec.safetensors", model.model.diffusion_model, seed=5)
    under_lora, _ = recorded_exactly(pk, lora(model, name), lat)
    assert not torch.equal(under_lora, reference), "the LoRA changed nothing"

    res = pk.vis.execute(recording=rec, latent={"samples": samples}, block=-1, step=0, sample=0, chunk="cond",
                         channel="max", threshold=1.0, log_scale=False, export=False, filename_prefix="stas/gguf",
                         mask=None)
    profile, heat, hier, steer, text = res.result
    assert f"block {BLOCK}" in text and res.ui["stas_profile"][0]["grid"] == list(fam.grid_of(lat))
    assert profile.shape[0] == 1 and profile.shape[-1] == 3 and float(profile.max()) <= 1
    assert torch.equal(ce.sample(model, lat, steps=2, cfg=2.0), reference), "the GGUF model was left patched"


def test_gguf_graph_through_comfyui_executor(pk, ggnodes, folders, tmp_path, monkeypatch):
    """Unet Loader (GGUF) -> STAS Model Patch -> MA Recorder -> KSampler -> MA Visualizer, run by ComfyUI's own
    executor: the graph runs and the visualizer reports the steering it saw."""
    import folder_paths
    ce.ensure_test_nodes()
    ce.ensure_extra_node("EmptyHunyuanLatentVideo", "nodes_hunyuan.py")
    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path / "output"))
    monkeypatch.setattr(folder_paths, "get_temp_directory", lambda: str(tmp_path / "temp"))
    _, name, _ = load_gguf(ggnodes, folders, "wan21", "Q8_0")
    vis = {k: v for k, v in ce.node_defaults(pk.vis).items() if k not in ("recording", "latent")}
    prompt = {
        "1": {"class_type": "UnetLoaderGGUF", "inputs": {"unet_name": name}},
        "2": {"class_type": "STASModelPatch", "inputs": {**ce.node_defaults(pk.stas), "model": ["1", 0],
                                                         "blocks": str(BLOCK), "channels": "3,70",
                                                         "end_percent": 1.0}},
        "3": {"class_type": "STASMARecorder", "inputs": {**ce.node_defaults(pk.rec), "model": ["2", 0],
                                                         "blocks": str(BLOCK)}},
        "4": {"class_type": "STASTestTextEncoder", "inputs": {"kind": "wan"}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 0], "text": "a cat"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 0], "text": "blurry"}},
        "7": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 32, "height": 32, "length": 5,
                                                                  "batch_size": 1}},
        "8": {"class_type": "KSampler", "inputs": {
            "model": ["3", 0], "positive": ["5", 0], "negative": ["6", 0], "latent_image": ["7", 0], "seed": 0,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "STASMAVisualizer", "inputs": {**vis, "recording": ["3", 1], "latent": ["8", 0]}},
    }
    ex = ce.run_prompt(prompt)
    assert ex.success, ex.status_messages
    summary = ex.history_result["outputs"]["9"]["stas_profile"][0]["summary"]
    assert "STAS steering here: channels [3, 70]" in summary, summary
