"""The shipped example workflows: well-formed files (always), and on every ComfyUI testbed:

- each loads in the real frontend (headless Chromium against a real server with this pack) with
  no dialog (missing nodes / models), no console or page error, no broken link, and every widget
  value kept as saved;
- every node type and widget value of the frontend's own API conversion validates against that
  server's /object_info;
- each runs end to end in real ComfyUI on tiny stand-ins: the diffusion models are random-weight
  files of the real architectures under the real file names (tools/make_standins.py); text
  encoders, CLIP vision and VAEs (multi-gigabyte, fixed architectures) are swapped for the
  test-only nodes of tests/comfy_test_nodes; sizes and step counts are shrunk for the CPU.
  LTX-2's checkpoint stand-in holds only the diffusion model (loaded by ComfyUI's checkpoint
  loader); its VAE, audio VAE and Gemma text encoder are test nodes. ComfyUI before 0.8.0 has no
  LTX-2 nodes: that workflow is skipped there. LoRAs are small random LoRAs on the tiny models'
  keys, applied by ComfyUI's own LoraLoaderModelOnly.
  STAS Sweep (workflow 9) renders its shrunk preview latent (still 3 latent frames) at the samplers'
  shrunk step count, and its table reaches the node and a Preview as Text node.
  Wan Animate 2 (workflow 10, ComfyUI 0.33.0 or later) runs on a tiny WanAnimate2Model (float32, where the
  released file is int8) with a random LoRA on its keys; Wan 2.2 S2V (11, ComfyUI 0.8.0 or later: 0.3.x refuses
  S2V) on a tiny WanModel_S2V that the 4-step LoRA stand-in fits, its wav2vec2 audio encoder a test node. In
  both, STAS's auto detection must steer the stand-in's planted channel in every sampler's run.
  A workflow loading a file that tools/make_standins.py has no stand-in for (NO_STANDIN, empty now) is checked
  in the frontend and against ComfyUI's template, not run.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from stas_harness.server import FrontendPage, find_comfyui, shrink_prompt, skip_missing

ROOT = Path(__file__).resolve().parents[1]
WF_DIR = ROOT / "example_workflows"
# in their numbered order ("11. ..." after "9. ...", not after "1. ...")
WORKFLOWS = sorted((p.stem for p in WF_DIR.glob("*.json")), key=lambda n: (int(n.split(".")[0]), n))
FRONTEND_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
# The official ComfyUI repackaged file names the workflows may use (tools/make_standins.py writes them).
OFFICIAL_FILES = {
    "wan2.1_t2v_1.3B_fp16.safetensors", "wan2.2_ti2v_5B_fp16.safetensors",
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
    "wan2.1_i2v_480p_14B_fp16.safetensors", "hunyuan_video_t2v_720p_bf16.safetensors",
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "clip_l.safetensors", "llava_llama3_fp8_scaled.safetensors",
    "wan_2.1_vae.safetensors", "wan2.2_vae.safetensors", "hunyuan_video_vae_bf16.safetensors",
    "clip_vision_h.safetensors", "ltx-2-19b-dev-fp8.safetensors", "gemma_3_12B_it_fp4_mixed.safetensors",
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors",
    "wan2.2_s2v_14B_fp8_scaled.safetensors", "wav2vec2_large_english_fp16.safetensors",
    "wan_animate_2_int8_convrot.safetensors", "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
    "Wan2_1_VAE_bf16.safetensors",
}
# Files the workflows load that tools/make_standins.py has no stand-in for (their folder); a workflow loading one
# is checked in the frontend and against ComfyUI's template, not run on stand-ins.
NO_STANDIN: dict[str, str] = {}
# Model files whose workflow needs a newer ComfyUI to run than to load (older testbeds skip its run): file -> (the
# first ComfyUI version that runs it, why)
NEWER_MODELS = {"wan2.2_s2v_14B_fp8_scaled.safetensors":
                ((0, 8, 0), ("STAS on Wan 2.2 S2V (ComfyUI 0.8.0 or later: 0.3.x passes S2V's blocks no "
                             "transformer_options, and STAS Model Patch refuses the model)"))}
# The S2V workflow's audio input, ComfyUI's S2V template's name for it (the test writes a short tone under it).
S2V_AUDIO = "video_wan2_2_14B_s2v_input_audio.MP3"
# The Wan Animate 2 workflow's pose video, ComfyUI's template's name for it (the test writes a short clip under it).
ANIMATE2_VIDEO = "street_dance_drive.mp4"
MODEL_WIDGETS = {"UNETLoader": 0, "CLIPLoader": 0, "VAELoader": 0, "CLIPVisionLoader": 0, "DualCLIPLoader": 1,
                 "CheckpointLoaderSimple": 0, "LTXVAudioVAELoader": 0, "LTXAVTextEncoderLoader": 1,
                 "LoraLoaderModelOnly": 0, "AudioEncoderLoader": 0}
# node type a workflow needs -> the ComfyUI release that brought it (older testbeds skip that workflow)
NEWER_NODES = {"LTXVEmptyLatentAudio": "LTX-2 nodes (ComfyUI 0.8.0 or later)",
               "WanAnimate2ToVideo": "Wan Animate 2 nodes (ComfyUI 0.33.0 or later)"}
# Display widgets some frontends send with the API prompt although they are no node input
# (Preview Any's text box: "preview" from frontend 1.27, and its mode toggle "previewMode" from
# 1.35), and Load Audio's player "audioUI" (frontend 1.27); the server ignores them.
DISPLAY_WIDGETS = {("PreviewAny", "preview"), ("PreviewAny", "previewMode"), ("LoadAudio", "audioUI")}


def standin_dirs() -> dict:
    """File name -> models folder, as tools/make_standins.py writes them (an independent oracle)."""
    from tools import make_standins as ms
    return {**{n: "diffusion_models" for n in ms.DIFFUSION}, **{n: "checkpoints" for n in ms.CHECKPOINTS},
            **ms.PLACEHOLDERS, **ms.LTX2_PLACEHOLDERS, **{n: "loras" for n in ms.LORAS}, **NO_STANDIN}


def load(name: str) -> dict:
    return json.loads((WF_DIR / f"{name}.json").read_text())


# -- the files themselves (no ComfyUI needed) -------------------------------------------------

def test_expected_workflows_exist():
    """The file name is the template card's title (the frontend reads nothing else for an extension's
    templates): readable, numbered in the order a new user should open them, basic first."""
    assert WORKFLOWS[:6] == ["1. Wan 2.1 T2V with STAS",
                             "2. Without vs with STAS",
                             "3. Wan 2.1 I2V with STAS", "4. Wan 2.2 TI2V 5B with STAS",
                             "5. Wan 2.2 A14B with STAS", "6. HunyuanVideo with STAS"]
    assert any("LTX-2" in w for w in WORKFLOWS[6:]), WORKFLOWS
    assert any("4-step LoRA" in w for w in WORKFLOWS[6:]), WORKFLOWS
    assert "9. Wan 2.1 T2V STAS Sweep" in WORKFLOWS[6:], WORKFLOWS
    assert WORKFLOWS[9:11] == ["10. Wan Animate 2 with STAS", "11. Wan 2.2 S2V with STAS"], WORKFLOWS


@pytest.mark.parametrize("name", WORKFLOWS)
def test_workflow_file(name):
    wf = load(name)
    thumb = WF_DIR / f"{name}.jpg"
    assert thumb.exists() and thumb.read_bytes()[:3] == b"\xff\xd8\xff", f"{name}.jpg (template thumbnail) missing"
    types = [n["type"] for n in wf["nodes"]]
    assert {"STASModelPatch", "STASSweep"} & set(types), "every workflow patches with STAS (or sweeps its settings)"
    notes = [n for n in wf["nodes"] if n["type"] == "Note"]
    assert notes and "STAS" in notes[0]["widgets_values"][0], "every workflow explains STAS in a Note"
    ids = {n["id"] for n in wf["nodes"]}
    link_ids = {lk[0] for lk in wf["links"]}
    for lk in wf["links"]:
        assert lk[1] in ids and lk[3] in ids, f"link {lk} joins a missing node"
    for n in wf["nodes"]:
        for i in n.get("inputs", []):
            assert i.get("link") is None or i["link"] in link_ids, f"{n['type']}.{i['name']}: dangling link"
        if n["type"] in MODEL_WIDGETS:
            names = n["widgets_values"][: MODEL_WIDGETS[n["type"]] + 1]
            assert set(names) <= OFFICIAL_FILES, f"{n['type']} uses {names}, not an official file name"
        if n["type"] in ("KSampler", "KSamplerAdvanced", "RandomNoise"):
            assert "randomize" not in n["widgets_values"], "seeds stay fixed so runs are comparable"


@pytest.mark.parametrize("name", WORKFLOWS)
def test_every_loader_carries_its_downloads(name):
    """Each file a loader names has a download entry on that node (the frontend's missing-models
    dialog reads node.properties.models), pointing at the official Comfy-Org repackaged release."""
    dirs = standin_dirs()
    loaders = [n for n in load(name)["nodes"] if n["type"] in MODEL_WIDGETS]
    assert loaders
    for n in loaders:
        files = n["widgets_values"][: MODEL_WIDGETS[n["type"]] + 1]
        entries = {m["name"]: m for m in n.get("properties", {}).get("models", [])}
        assert set(entries) == set(files), f"{n['type']} #{n['id']} loads {files}, has entries for {sorted(entries)}"
        for f in files:
            m = entries[f]
            assert m["directory"] == dirs[f], f"{f}: directory {m['directory']}, ComfyUI loads it from {dirs[f]}"
            url = m["url"].split("?")[0]
            assert url.startswith(("https://huggingface.co/Comfy-Org/", "https://huggingface.co/comfyanonymous/",
                                   "https://huggingface.co/Lightricks/")), url  # LTX-2's own repo, as ComfyUI's template
            assert url.endswith("/" + f), f"{f}: {m['url']} downloads another file"


def official_template(stem: str) -> dict:
    """ComfyUI's own template ``stem`` from the testbed's comfyui-workflow-templates packages, else skip."""
    found = find_comfyui()
    if found is None:
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    purelib = subprocess.run([found[1], "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    hits = sorted(Path(purelib).glob(f"comfyui_workflow_templates*/templates/{stem}.json"))
    if not hits:
        pytest.skip(f"ComfyUI's template {stem} is not installed with this ComfyUI")
    return json.loads(hits[0].read_text())


@pytest.mark.integration
def test_ltx2_workflow_mirrors_comfyui_template():
    """The LTX-2 workflow uses the nodes, model files and download URLs of ComfyUI's own LTX-2
    text-to-video template (its first stage's sampling settings), plus this pack's nodes."""
    name = next(w for w in WORKFLOWS if "LTX-2" in w)
    tpl = official_template("video_ltx2_t2v")
    tpl_nodes = list(tpl["nodes"]) + [n for sg in tpl.get("definitions", {}).get("subgraphs", []) for n in sg["nodes"]]
    tpl_models = {(m["name"], m["url"], m["directory"]) for n in tpl_nodes for m in n.get("properties", {}).get("models", [])}
    ours = load(name)["nodes"]
    our_models = {(m["name"], m["url"], m["directory"]) for n in ours for m in n.get("properties", {}).get("models", [])}
    older = {m for m in tpl_models if m[2] == "text_encoders"} - our_models
    if older and not {m for m in our_models if m[2] == "text_encoders"} & tpl_models:
        pytest.skip(f"this ComfyUI's older LTX-2 template names another text encoder: {sorted(m[0] for m in older)}")
    assert our_models and our_models <= tpl_models, our_models - tpl_models
    own = {"STASModelPatch", "STASBoundaryMaskBuilder", "PreviewImage"} | FRONTEND_ONLY
    assert {n["type"] for n in ours} - own <= {n["type"] for n in tpl_nodes}
    for node_type in ("LTXVScheduler", "KSamplerSelect", "CFGGuider", "EmptyLTXVLatentVideo"):
        mine = [n["widgets_values"] for n in ours if n["type"] == node_type]
        theirs = [n["widgets_values"] for n in tpl_nodes if n["type"] == node_type]
        assert mine and all(v in theirs for v in mine), f"{node_type}: {mine}, template: {theirs}"


@pytest.mark.integration
def test_wan22_4step_workflow_mirrors_comfyui_template():
    """The 4-step workflow is the LoRA path of ComfyUI's own Wan 2.2 14B text-to-video template (its files and
    download URLs, LoRA strengths, shift, sampler split, latent) with STAS between each expert's shift and sampler."""
    name = next(w for w in WORKFLOWS if "4-step LoRA" in w)
    tpl = official_template("video_wan2_2_14B_t2v")
    tpl_nodes = [n for n in list(tpl["nodes"]) + [n for sg in tpl.get("definitions", {}).get("subgraphs", [])
                                                  for n in sg["nodes"]] if n.get("mode") != 4]  # 4: bypassed path
    tpl_models = {(m["name"], m["url"], m["directory"]) for n in tpl_nodes for m in n.get("properties", {}).get("models", [])}
    wf = load(name)
    ours = wf["nodes"]
    our_models = {(m["name"], m["url"], m["directory"]) for n in ours for m in n.get("properties", {}).get("models", [])}
    loras = {m for m in our_models if m[2] == "loras"}
    assert len(loras) == 2 and loras <= tpl_models, loras - tpl_models
    # the same files; the template fetches wan_2.1_vae from the Wan 2.2 repository, ours (as every workflow) from 2.1
    assert {m[::2] for m in our_models} <= {m[::2] for m in tpl_models}, our_models - tpl_models

    def values(nodes, node_type, pick):
        return sorted(json.dumps(pick(n["widgets_values"])) for n in nodes if n["type"] == node_type)

    def rounded(v):  # 1 == 1.0 == 1.0000000000000002
        return [round(float(x), 6) if type(x) in (int, float) else x for x in v]

    def no_seed(v):  # without the seed and its control mode
        return rounded([x for i, x in enumerate(v) if i not in (1, 2)])

    for node_type, pick in (("LoraLoaderModelOnly", rounded), ("ModelSamplingSD3", rounded),
                            ("KSamplerAdvanced", no_seed), ("EmptyHunyuanLatentVideo", rounded)):
        mine, theirs = values(ours, node_type, pick), values(tpl_nodes, node_type, pick)
        assert len(mine) == {"EmptyHunyuanLatentVideo": 1}.get(node_type, 2) and mine == theirs, \
            f"{node_type}: {mine}, template: {theirs}"
    # each expert: UNETLoader -> LoraLoaderModelOnly -> ModelSamplingSD3 -> STAS Model Patch -> KSamplerAdvanced
    types = {n["id"]: n["type"] for n in ours}
    feeds = {types[lk[3]]: [] for lk in wf["links"]}
    for lk in wf["links"]:
        if lk[5] == "MODEL":
            feeds[types[lk[3]]].append(types[lk[1]])
    assert feeds["LoraLoaderModelOnly"] == ["UNETLoader"] * 2 and feeds["ModelSamplingSD3"] == ["LoraLoaderModelOnly"] * 2
    assert feeds["STASModelPatch"] == ["ModelSamplingSD3"] * 2 and feeds["KSamplerAdvanced"] == ["STASModelPatch"] * 2


def sources(wf: dict) -> dict:
    """(node id, input name) -> (the node that feeds it, its output slot)."""
    by_id = {n["id"]: n for n in wf["nodes"]}
    links = {lk[0]: lk for lk in wf["links"]}
    return {(n["id"], i["name"]): (by_id[links[i["link"]][1]], links[i["link"]][2])
            for n in wf["nodes"] for i in n.get("inputs", []) if i.get("link") is not None}


@pytest.mark.integration
def test_wan21_sweep_workflow_mirrors_comfyui_template():
    """The sweep workflow is ComfyUI's own Wan 2.1 1.3B text-to-video template (its files and download URLs, prompts,
    shift, latent, sampler, video save) with STAS Sweep between the model and the KSampler: the sweep renders a smaller
    preview latent of the template's length with the final render's seed, cfg, sampler and scheduler, and its winner's
    model renders the template's full-size latent; its grid, comparison video and table are shown."""
    name = next(w for w in WORKFLOWS if "STAS Sweep" in w)
    tpl = official_template("text_to_video_wan")
    tpl_nodes = [n for n in list(tpl["nodes"]) + [n for sg in tpl.get("definitions", {}).get("subgraphs", [])
                                                  for n in sg["nodes"]] if n.get("mode") != 4]
    tpl_models = {(m["name"], m["url"], m["directory"]) for n in tpl_nodes for m in n.get("properties", {}).get("models", [])}
    wf = load(name)
    ours = wf["nodes"]
    our_models = {(m["name"], m["url"], m["directory"]) for n in ours for m in n.get("properties", {}).get("models", [])}
    assert our_models == tpl_models, (our_models ^ tpl_models)
    own = {"STASSweep", "PreviewImage", "PreviewAny"} | FRONTEND_ONLY
    assert {n["type"] for n in ours} - own <= {n["type"] for n in tpl_nodes}

    def values(nodes, node_type, pick=lambda v: v):
        return sorted({json.dumps(pick(n["widgets_values"]), ensure_ascii=False) for n in nodes if n["type"] == node_type})

    def rounded(v):  # 6 == 6.0
        return [round(float(x), 6) if type(x) in (int, float) else x for x in v]

    def no_seed(v):  # without the seed and its control mode
        return rounded(v[2:])

    for node_type, pick in (("UNETLoader", rounded), ("CLIPLoader", rounded), ("VAELoader", rounded),
                            ("ModelSamplingSD3", rounded), ("CLIPTextEncode", rounded), ("KSampler", no_seed),
                            ("CreateVideo", rounded), ("SaveVideo", lambda v: v[1:])):
        mine, theirs = values(ours, node_type, pick), values(tpl_nodes, node_type, pick)
        assert mine and mine == theirs, f"{node_type}: {mine}, template: {theirs}"
    src = sources(wf)
    (sweep,) = [n for n in ours if n["type"] == "STASSweep"]
    (ks,) = [n for n in ours if n["type"] == "KSampler"]
    (tpl_lat,) = [n["widgets_values"] for n in tpl_nodes if n["type"] == "EmptyHunyuanLatentVideo"]
    feed = {k: src[(sweep["id"], k)][0]["type"] for k in ("model", "positive", "negative", "latent_image", "vae")}
    assert feed == {"model": "ModelSamplingSD3", "positive": "CLIPTextEncode", "negative": "CLIPTextEncode",
                    "latent_image": "EmptyHunyuanLatentVideo", "vae": "VAELoader"}, feed
    assert src[(ks["id"], "model")] == (sweep, 0), "the KSampler renders with the sweep's winner"
    assert src[(ks["id"], "positive")] == src[(sweep["id"], "positive")]
    assert src[(ks["id"], "negative")] == src[(sweep["id"], "negative")]
    full, preview = src[(ks["id"], "latent_image")][0], src[(sweep["id"], "latent_image")][0]
    assert full["type"] == "EmptyHunyuanLatentVideo" and full["widgets_values"] == tpl_lat
    w, h, length, batch = preview["widgets_values"]
    assert w % 16 == 0 and h % 16 == 0 and w * h < tpl_lat[0] * tpl_lat[1] and length == tpl_lat[2] and batch == 1
    sv, kv = sweep["widgets_values"], ks["widgets_values"]   # seed, control, steps, cfg, sampler, scheduler, ...
    assert sv[:2] == kv[:2] and rounded(sv[3:6]) == rounded(kv[3:6]) and sv[2] < kv[2], (sv, kv)
    shown = {src[(n["id"], i["name"])][1]: n["type"] for n in ours for i in n.get("inputs", [])
             if i.get("link") is not None and src[(n["id"], i["name"])][0] is sweep and n is not ks}
    assert shown == {1: "PreviewImage", 2: "CreateVideo", 3: "PreviewAny"}, shown   # grid, comparison, table
    note = next(n["widgets_values"][0] for n in ours if n["type"] == "Note")
    assert "STAS Sweep" in note and "baseline" in note and "lower is better" in note


def template_nodes(tpl: dict) -> list[dict]:
    """A template's nodes that run: its top-level nodes and its subgraphs' nodes, bypassed ones (mode 4) left out."""
    return [n for n in list(tpl["nodes"]) + [n for sg in tpl.get("definitions", {}).get("subgraphs", [])
                                             for n in sg["nodes"]] if n.get("mode") != 4]


@pytest.mark.integration
def test_wan22_s2v_workflow_mirrors_comfyui_template():
    """The S2V workflow is ComfyUI's own Wan 2.2 S2V template (video_wan2_2_14B_s2v: its files and download URLs,
    prompts, 4-step LoRA, shift, chunk size and length, sampler, its two Video S2V Extend subgraphs laid out flat, the
    first-frame fix, 16 fps video with the audio) with STAS Model Patch between ModelSamplingSD3 and all three
    samplers, and the Boundary Mask Builder on the first chunk's latent."""
    name = next(w for w in WORKFLOWS if "S2V" in w)
    tpl = official_template("video_wan2_2_14B_s2v")
    tpl_nodes = template_nodes(tpl)
    tpl_models = {(m["name"], m["url"], m["directory"]) for n in tpl_nodes for m in n.get("properties", {}).get("models", [])}
    wf = load(name)
    ours = wf["nodes"]
    our_models = {(m["name"], m["url"], m["directory"]) for n in ours for m in n.get("properties", {}).get("models", [])}
    assert our_models == tpl_models, (our_models ^ tpl_models)
    own = {"STASModelPatch", "STASBoundaryMaskBuilder", "PreviewImage"} | FRONTEND_ONLY
    subgraphs = {sg["id"] for sg in tpl["definitions"]["subgraphs"]}   # laid out flat here
    tpl_types = {n["type"] for n in tpl_nodes} - subgraphs - FRONTEND_ONLY - {"PrimitiveInt", "PrimitiveFloat"}
    assert {n["type"] for n in ours} - own == tpl_types, ({n["type"] for n in ours} - own) ^ tpl_types

    def values(nodes, node_type, pick=lambda v: v):
        return sorted({json.dumps(pick(n["widgets_values"]), ensure_ascii=False) for n in nodes if n["type"] == node_type})

    def rounded(v):  # 8 == 8.0
        return [round(float(x), 6) if type(x) in (int, float) else x for x in v]

    for node_type, pick in (("UNETLoader", rounded), ("LoraLoaderModelOnly", rounded), ("CLIPLoader", rounded),
                            ("VAELoader", rounded), ("AudioEncoderLoader", rounded), ("ModelSamplingSD3", rounded),
                            ("CLIPTextEncode", rounded), ("WanSoundImageToVideo", rounded),
                            ("WanSoundImageToVideoExtend", rounded), ("LatentCut", rounded),
                            ("LatentConcat", rounded), ("CreateVideo", rounded), ("SaveVideo", lambda v: v[1:])):
        mine, theirs = values(ours, node_type, pick), values(tpl_nodes, node_type, pick)
        assert mine and mine == theirs, f"{node_type}: {mine}, template: {theirs}"
    prim = {n.get("title"): n["widgets_values"][0] for n in tpl_nodes if n["type"].startswith("Primitive")}
    assert prim["Steps"] == 4 and prim["CFG"] == 1 and prim["Chunk Length"] == 77, prim  # the 4-step LoRA path
    tpl_ks = {json.dumps(rounded(n["widgets_values"][4:])) for n in tpl_nodes if n["type"] == "KSampler"}
    kss = [n for n in ours if n["type"] == "KSampler"]
    assert len(kss) == 3, "the first chunk and two extensions"
    for ks in kss:
        v = ks["widgets_values"]   # seed, control, steps, cfg, sampler, scheduler, denoise
        assert v[1] == "fixed" and v[2] == prim["Steps"] and round(v[3], 6) == prim["CFG"], v
        assert {json.dumps(rounded(v[4:]))} == tpl_ks, (v, tpl_ks)
    (drop,) = [n for n in ours if n["type"] == "ImageFromBatch"]
    (tpl_drop,) = [n for n in tpl_nodes if n["type"] == "ImageFromBatch"]
    assert drop["widgets_values"] == [prim["Batch sizes"], tpl_drop["widgets_values"][1]], drop["widgets_values"]
    src = sources(wf)
    by_type = lambda t: [n for n in ours if n["type"] == t]  # noqa: E731
    (st,) = by_type("STASModelPatch")
    (mb,) = by_type("STASBoundaryMaskBuilder")
    (s2v,) = by_type("WanSoundImageToVideo")
    assert src[(st["id"], "model")][0]["type"] == "ModelSamplingSD3"
    assert src[(src[(st["id"], "model")][0]["id"], "model")][0]["type"] == "LoraLoaderModelOnly"
    assert all(src[(ks["id"], "model")] == (st, 0) for ks in kss), "every sampler samples the STAS-patched model"
    assert src[(st["id"], "mask")][0] is mb and src[(mb["id"], "latent")][0] is s2v
    (create,) = by_type("CreateVideo")
    assert src[(create["id"], "audio")][0]["type"] == "LoadAudio"
    note = next(n["widgets_values"][0] for n in ours if n["type"] == "Note")
    assert "reference image" in note and "motion-frame" in note and "never steered" in note


@pytest.mark.integration
def test_wan_animate2_workflow_mirrors_comfyui_template():
    """The Wan Animate 2 workflow is the Motion Transfer subgraph of ComfyUI's own Wan Animate 2 template
    (video_wan_animate2: its files and download URLs, prompts, LoRA, WanAnimate2Cache, shift, lcm / 6 steps / cfg 1,
    pose-video and reference resizes, WanAnimate2ToVideo settings, trim, video with the pose video's audio and fps),
    laid out flat, with STAS Model Patch between ModelSamplingSD3 and SamplerCustom. Left out: the template's two
    switches (context windows, dropping the first frame; both off there) and its side-by-side comparison."""
    name = next(w for w in WORKFLOWS if "Animate" in w)
    tpl = official_template("video_wan_animate2")
    motion = next(sg for sg in tpl["definitions"]["subgraphs"] if sg["name"].startswith("Motion Transfer"))
    (inst,) = [n for n in tpl["nodes"] if n["type"] == motion["id"] and n.get("mode") != 4]
    tpl_nodes = [n for n in motion["nodes"] if n.get("mode") != 4]
    # the subgraph's widgets shown on its node (prompts, sizes, files, ...): subgraph input name -> value
    promoted = [i["name"] for i in motion["inputs"] if not {"IMAGE", "MASK", "VIDEO"} & set(i["type"].split(","))]
    shown = dict(zip(promoted, inst["widgets_values"]))
    wf = load(name)
    ours = wf["nodes"]
    tpl_models = {(m["name"], m["url"], m["directory"]) for n in tpl_nodes for m in n.get("properties", {}).get("models", [])}
    our_models = {(m["name"], m["url"], m["directory"]) for n in ours for m in n.get("properties", {}).get("models", [])}
    assert our_models == tpl_models, (our_models ^ tpl_models)
    assert {shown[k] for k in ("unet_name_1", "lora_name_1", "clip_name_2", "clip_name_3", "vae_name_1")} == \
        {m[0] for m in our_models}
    own = {"STASModelPatch", "STASBoundaryMaskBuilder", "PreviewImage", "LatentCut"} | FRONTEND_ONLY
    left_out = {"ComfySwitchNode", "ContextWindowsManual", "PrimitiveBoolean"}
    outer = {"LoadImage", "LoadVideo", "CreateVideo", "SaveVideo"}   # the template's nodes outside the subgraph
    assert {n["type"] for n in ours} - own == {n["type"] for n in tpl_nodes} - left_out | outer
    assert shown["switch_1"] is False and shown["value_1"] is False, "the template turned its switches on"

    def values(nodes, node_type, pick=lambda v: v):
        return sorted({json.dumps(pick(n["widgets_values"]), ensure_ascii=False) for n in nodes if n["type"] == node_type})

    def rounded(v):
        return [round(float(x), 6) if type(x) in (int, float) else x for x in v]

    for node_type in ("UNETLoader", "LoraLoaderModelOnly", "CLIPLoader", "CLIPVisionLoader", "VAELoader",
                      "WanAnimate2Cache", "ModelSamplingSD3", "KSamplerSelect", "BasicScheduler", "CLIPVisionEncode",
                      "ResizeImageMaskNode", "TrimVideoLatent", "ImageFromBatch"):
        theirs = values(tpl_nodes, node_type, rounded)
        if node_type == "ImageFromBatch":   # [1, 4096] belongs to the frame-drop switch left out
            theirs = [v for v in theirs if v != "[1.0, 4096.0]"]
        if node_type == "ResizeImageMaskNode":   # sizes come from the subgraph's widgets (the pose video's)
            theirs = sorted({json.dumps(rounded([*json.loads(v)[:1], shown["resize_type.width"],
                                                 shown["resize_type.height_1"], *json.loads(v)[3:]]))
                             for v in theirs} | {v for v in theirs if json.loads(v)[1] == 481})
        mine = values(ours, node_type, rounded)
        assert mine and mine == theirs, f"{node_type}: {mine}, template: {theirs}"
    prompts = {n["widgets_values"][0] for n in ours if n["type"] == "CLIPTextEncode"}
    (tpl_neg,) = [n["widgets_values"][0] for n in tpl_nodes if n["type"] == "CLIPTextEncode" and "Negative" in (n.get("title") or "")]
    assert prompts == {shown["text"], shown["text_4"], tpl_neg}, prompts
    (an,) = [n for n in ours if n["type"] == "WanAnimate2ToVideo"]
    (tpl_an,) = [n for n in tpl_nodes if n["type"] == "WanAnimate2ToVideo"]
    w = dict(zip(("width", "height", "length", "batch_size", "video_frame_offset", "pose_strength",
                  "pose_start_percent", "pose_end_percent", "reference_image_strength"), an["widgets_values"]))
    assert w["length"] == shown["length"] and w["video_frame_offset"] == shown["video_frame_offset_1"]
    assert (w["pose_strength"], w["pose_start_percent"], w["pose_end_percent"], w["reference_image_strength"]) == \
        (shown["pose_strength_1"], shown["pose_start_percent_1"], shown["pose_end_percent_1"],
         shown["reference_image_strength_1"])
    assert an["widgets_values"][:2] == tpl_an["widgets_values"][:2] and w["batch_size"] == 1
    (sc,) = [n for n in ours if n["type"] == "SamplerCustom"]
    (tpl_sc,) = [n for n in tpl_nodes if n["type"] == "SamplerCustom"]
    assert sc["widgets_values"][0] == tpl_sc["widgets_values"][0] and sc["widgets_values"][2] == "fixed"
    assert round(sc["widgets_values"][3], 6) == round(tpl_sc["widgets_values"][3], 6)
    tpl_out = {n["type"]: n["widgets_values"] for n in tpl["nodes"] if n["type"] in ("CreateVideo", "SaveVideo")}
    assert [n["widgets_values"] for n in ours if n["type"] == "CreateVideo"] == [tpl_out["CreateVideo"]]
    assert [n["widgets_values"][1:3] for n in ours if n["type"] == "SaveVideo"] == [tpl_out["SaveVideo"][1:3]]
    src = sources(wf)
    (st,) = [n for n in ours if n["type"] == "STASModelPatch"]
    chain = [st]
    while chain[-1]["type"] != "UNETLoader":
        chain.append(src[(chain[-1]["id"], "model")][0])
    assert [n["type"] for n in chain] == ["STASModelPatch", "ModelSamplingSD3", "WanAnimate2Cache",
                                          "LoraLoaderModelOnly", "UNETLoader"]
    assert src[(sc["id"], "model")] == (st, 0), "SamplerCustom samples the STAS-patched model"
    for inp in ("width", "height"):
        assert src[(an["id"], inp)][0]["type"] == "GetImageSize", "the size comes from the resized pose video"
    (mb,) = [n for n in ours if n["type"] == "STASBoundaryMaskBuilder"]
    cut = src[(mb["id"], "latent")][0]   # the mask's preview: the latent without the reference frame 0
    assert src[(st["id"], "mask")][0] is mb and cut["type"] == "LatentCut" and src[(cut["id"], "samples")][0] is an
    assert cut["widgets_values"][:2] == ["t", 1] and cut["widgets_values"][2] >= shown["length"]
    note = next(n["widgets_values"][0] for n in ours if n["type"] == "Note")
    assert "latent frame 1" in note and "reference" in note and "never steered" in note


# -- in the real frontend and server -------------------------------------------------------------

@pytest.fixture(scope="module")
def standins(comfy_server):
    """Stand-in model files under the official names in the test server's models folder."""
    r = subprocess.run([comfy_server.python, "-B", str(ROOT / "tools" / "make_standins.py"), "--comfyui",
                        str(comfy_server.src), "--models", str(comfy_server.models_dir), "--plant-ma"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    write_tone(comfy_server.input_dir / S2V_AUDIO, seconds=3.0)   # audio for all three shrunk S2V chunks
    write_clip(comfy_server.input_dir / ANIMATE2_VIDEO)
    for f, folder in NO_STANDIN.items():  # listed (so the frontend finds nothing missing), never loaded
        (comfy_server.models_dir / folder).mkdir(parents=True, exist_ok=True)
        (comfy_server.models_dir / folder / f).write_bytes(b"")
    comfy_server.object_info(refresh=True)
    return comfy_server


def write_clip(path: Path, frames: int = 9, size: int = 64) -> None:
    """A short moving-gradient video under the Wan Animate 2 workflow's pose-video name."""
    import av
    import numpy as np
    with av.open(str(path), "w") as c:
        st = c.add_stream("mpeg4", rate=16)
        st.width = st.height = size
        st.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size, size, 3), 40, np.uint8)
            img[:, (i * 6) % size:(i * 6) % size + 8] = 220
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    """A short 440 Hz tone (WAV data; ComfyUI's LoadAudio reads by content) under the S2V workflow's audio name."""
    import math
    import struct
    import wave
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))


LOAD_JS = """
async (wf) => {
  await app.loadGraphData(wf);
  await new Promise(r => setTimeout(r, 1500));
  const g = app.graph, problems = [];
  const links = g.links instanceof Map ? [...g.links.values()] : Object.values(g.links || {});
  const byId = id => g.getNodeById(id);
  for (const l of links) {
    if (!l) continue;
    const a = byId(l.origin_id), b = byId(l.target_id);
    if (!a || !b) { problems.push(`link ${l.id}: missing node`); continue; }
    const inp = b.inputs?.[l.target_slot], out = a.outputs?.[l.origin_slot];
    if (!inp || inp.link !== l.id) problems.push(`link ${l.id}: ${b.type} input ${l.target_slot} does not hold it`);
    if (!out || !(out.links || []).includes(l.id)) problems.push(`link ${l.id}: ${a.type} output ${l.origin_slot} does not hold it`);
    if (inp && out && !LiteGraph.isValidConnection(out.type, inp.type)) problems.push(`link ${l.id}: ${out.type} -> ${inp.type}`);
  }
  const saved = new Map(wf.nodes.map(n => [String(n.id), n]));  // newer frontends use string ids
  const widgets = [];
  for (const n of g._nodes) {
    const orig = saved.get(String(n.id));
    if (!orig) { problems.push(`node ${n.id} ${n.type} appeared`); continue; }
    if (n.type !== orig.type) problems.push(`node ${n.id}: ${orig.type} loaded as ${n.type}`);
    if (!LiteGraph.registered_node_types[n.type]) problems.push(`node ${n.id}: type ${n.type} is not registered`);
    for (const i of n.inputs || []) if (i.link != null && !links.find(l => l && l.id === i.link)) problems.push(`${n.type}.${i.name}: broken link ${i.link}`);
    const vals = (n.widgets || []).map(w => w.value);
    const want = Array.isArray(orig.widgets_values) ? orig.widgets_values : [];
    for (let k = 0; k < want.length; k++) {
      if (JSON.stringify(vals[k]) !== JSON.stringify(want[k])) widgets.push(`${n.type} #${n.id} widget ${k} (${n.widgets?.[k]?.name}): saved ${JSON.stringify(want[k])}, loaded ${JSON.stringify(vals[k])}`);
    }
    for (const w of n.widgets || []) {
      const opts = w.options?.values;
      if (w.type === "combo" && Array.isArray(opts) && opts.length && !opts.includes(w.value)) widgets.push(`${n.type}.${w.name}: ${JSON.stringify(w.value)} not among its options`);
    }
  }
  if (g._nodes.length !== wf.nodes.length) problems.push(`${g._nodes.length} nodes loaded, ${wf.nodes.length} saved`);
  const dialogs = [...document.querySelectorAll('.p-dialog, .comfy-modal[style*="flex"]')].filter(d => d.offsetParent !== null).map(d => d.innerText.slice(0, 300));
  const toasts = [...document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn')].map(t => t.innerText.slice(0, 300));
  let prompt = null;
  try { prompt = (await app.graphToPrompt()).output; } catch (e) { problems.push(`graphToPrompt failed: ${e}`); }
  return {problems, widgets, dialogs, toasts, prompt};
}
"""


def missing_newer_nodes(server, name: str) -> list[str]:
    """What this ComfyUI lacks of the newer node types (NEWER_NODES) the workflow uses."""
    info = server.object_info()
    return sorted({NEWER_NODES[n["type"]] for n in load(name)["nodes"] if n["type"] in NEWER_NODES
                   and n["type"] not in info})


def skip_if_too_old(server, name: str) -> None:
    missing = missing_newer_nodes(server, name)
    if missing:
        pytest.skip(f"{name}: ComfyUI {server.version()} has no {', '.join(missing)}")


@pytest.fixture(scope="module")
def loaded(standins, browser):
    """Each workflow loaded once in its own page: what the frontend reported, and its API prompt."""
    out = {}
    for name in WORKFLOWS:
        if missing_newer_nodes(standins, name):
            continue
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = FrontendPage(ctx.new_page(), standins).open()
        res = page.evaluate(LOAD_JS, load(name))
        res["errors"] = page.errors()
        out[name] = res
        ctx.close()
    return out


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("name", WORKFLOWS)
def test_loads_in_frontend(loaded, standins, name):
    skip_if_too_old(standins, name)
    r = loaded[name]
    assert r["dialogs"] == [], f"dialog on load: {r['dialogs']}"
    assert r["toasts"] == [], f"error toast on load: {r['toasts']}"
    assert r["errors"] == [], f"frontend errors: {r['errors']}"
    assert r["problems"] == [], f"graph problems: {r['problems']}"
    # Load Audio's player (audioUI, and upload on some frontends) shows the loaded file: not a saved value
    widgets = [w for w in r["widgets"] if not (w.startswith("LoadAudio #") and ("(audioUI)" in w or "(upload)" in w))]
    assert widgets == [], f"widget values not kept: {widgets}"


def _check_value(node_type: str, name: str, value, spec) -> str | None:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    options = kind if isinstance(kind, list) else opts.get("options") if kind == "COMBO" else None
    where = f"{node_type}.{name} = {value!r}"
    if options is not None:
        return None if value in options else f"{where}: not one of {options[:12]}"
    if kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
            return f"{where}: not a number"
        if value < opts.get("min", float("-inf")) or value > opts.get("max", float("inf")):
            return f"{where}: outside {opts.get('min')}..{opts.get('max')}"
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{where}: not a boolean"
    elif kind == "STRING" and not isinstance(value, str):
        return f"{where}: not a string"
    return None  # sockets given a literal are caught by ComfyUI itself when the prompt runs


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("name", WORKFLOWS)
def test_nodes_and_widget_values_match_object_info(loaded, standins, name):
    skip_if_too_old(standins, name)
    info = standins.object_info()
    wf = load(name)
    unknown = {n["type"] for n in wf["nodes"]} - set(info) - FRONTEND_ONLY
    assert not unknown, f"node types the server does not know: {unknown}"
    errors = []
    for nid, node in loaded[name]["prompt"].items():
        spec = info[node["class_type"]]["input"]
        allowed = {**spec.get("required", {}), **spec.get("optional", {})}
        for req in spec.get("required", {}):
            if req not in node["inputs"]:
                errors.append(f"{node['class_type']} #{nid}: required input {req} missing")
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                continue  # a link
            base = k.split(".")[0]  # dynamic combos send 'format.codec'
            if (node["class_type"], base) in DISPLAY_WIDGETS:
                continue
            if base not in allowed:
                errors.append(f"{node['class_type']} #{nid}: unknown input {k}")
            elif base == k:
                err = _check_value(node["class_type"], k, v, allowed[k])
                if err:
                    errors.append(err)
    assert errors == []


# -- execution on stand-ins ------------------------------------------------------------------------

TEXT_KIND = {"wan": "wan", "hunyuan_video": "hunyuan_video"}
CHECKPOINT_VAE = {"ltx-2-19b-dev-fp8.safetensors": "ltx2"}


def _vae_kind(name: str) -> str:
    return "wan2.2" if name.startswith("wan2.2") else "hunyuan_video" if "hunyuan" in name else "wan2.1"


# conditioning nodes that make a video latent (beyond stas_harness.shrink_prompt's): their literal width, height,
# length are shrunk like the empty latents' (linked ones follow their source, e.g. a shrunk resize)
VIDEO_LATENT_NODES = {"WanSoundImageToVideo", "WanSoundImageToVideoExtend", "WanAnimate2ToVideo"}
CPU_SIZE, CPU_LENGTH = 64, 9


def shrink_for_cpu(prompt: dict) -> dict:
    """Swap the multi-gigabyte loaders for test stand-ins; tiny latents and images, few steps."""
    out = {}
    for nid, node in shrink_prompt(prompt, length=CPU_LENGTH, size=CPU_SIZE).items():
        ct, inp = node["class_type"], node["inputs"]
        if ct in VIDEO_LATENT_NODES:
            inp = {**inp, **{k: v for k, v in (("width", CPU_SIZE), ("height", CPU_SIZE), ("length", CPU_LENGTH))
                             if isinstance(inp.get(k), int)}}
        elif ct == "ResizeImageMaskNode" and inp.get("resize_type") == "scale dimensions":
            inp = {**inp, "resize_type.width": CPU_SIZE, "resize_type.height": CPU_SIZE}
        if ct in ("CLIPLoader", "DualCLIPLoader"):
            ct, inp = "STASTestTextEncoder", {"kind": TEXT_KIND[inp["type"]]}
        elif ct == "VAELoader":
            ct, inp = "STASTestVAE", {"kind": _vae_kind(inp["vae_name"])}
        elif ct == "CLIPVisionLoader":
            ct, inp = "STASTestCLIPVision", {}
        elif ct == "CheckpointLoaderSimple":  # the real loader on the stand-in file, a stand-in VAE
            ct, inp = "STASTestCheckpoint", {"ckpt_name": inp["ckpt_name"], "vae_kind": CHECKPOINT_VAE[inp["ckpt_name"]]}
        elif ct == "LTXAVTextEncoderLoader":
            ct, inp = "STASTestTextEncoder", {"kind": "ltxav"}
        elif ct == "LTXVAudioVAELoader":
            ct, inp = "STASTestAudioVAE", {}
        elif ct == "AudioEncoderLoader":
            ct, inp = "STASTestAudioEncoder", {}
        elif ct == "STASSweep":  # few steps per render, like the samplers (its preview latent is shrunk above)
            inp = {**inp, "steps": min(inp["steps"], 4)}
        out[nid] = {"class_type": ct, "inputs": inp}
    return out


@pytest.mark.integration
@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("name", WORKFLOWS)
def test_runs_on_standins(loaded, standins, name):
    skip_if_too_old(standins, name)
    no_standin = sorted({f for n in load(name)["nodes"] if n["type"] in MODEL_WIDGETS
                         for f in n["widgets_values"][: MODEL_WIDGETS[n["type"]] + 1] if f in NO_STANDIN})
    if no_standin:
        pytest.skip(f"{name}: tools/make_standins.py has no stand-in for {', '.join(no_standin)} yet (the model "
                    "class itself is steered on tiny models in tests/test_integration_wan_variants.py)")
    version = tuple(int(x) for x in re.findall(r"\d+", standins.version())[:3])
    newer = sorted({why for n in load(name)["nodes"] if n["type"] in MODEL_WIDGETS
                    for f in n["widgets_values"][: MODEL_WIDGETS[n["type"]] + 1] if f in NEWER_MODELS
                    for first, why in [NEWER_MODELS[f]] if version < first})
    if newer:
        pytest.skip(f"{name}: ComfyUI {standins.version()} does not run {', '.join(newer)}")
    prompt = shrink_for_cpu(loaded[name]["prompt"])
    log_start = standins.log_path.stat().st_size if standins.log_path.exists() else 0
    entry = standins.run(prompt, timeout=600)
    outputs = entry["outputs"]
    saved = [(nid, prompt[nid]["class_type"]) for nid in outputs]
    videos = [p for nid, ct in saved if ct == "SaveVideo" for p in standins.output_files(entry, nid)]
    assert videos and all(p.exists() and p.stat().st_size > 0 for p in videos), f"no video written: {outputs}"
    with open(standins.log_path, "rb") as f:
        f.seek(log_start)
        log = f.read().decode(errors="replace")
    if any(node["class_type"] == "LTXVAudioVAEDecode" for node in prompt.values()):  # LTX-2: sound and picture
        import av
        with av.open(str(videos[0])) as c:
            assert c.streams.video and c.streams.audio, f"{videos[0].name}: the audio track is missing"
        # STAS ran inside the LTX-2 graph: auto detection found the stand-in's planted channel and steered it
        assert "auto detection steered channel(s) [77]" in log, log[-3000:]
    types = [node["class_type"] for node in prompt.values()]
    if "LoraLoaderModelOnly" in types:
        assert "lora key not loaded" not in log, "a LoRA stand-in does not fit its model"
    if types.count("LoraLoaderModelOnly") == 2 and "KSamplerAdvanced" in types:  # the 4-step LoRA graph
        # the high-noise expert steers both its steps (1, 2 of 4: inside the default window); the low-noise
        # expert's STAS says before its first step that its steps (3, 4) lie outside the window
        assert log.count("auto detection steered channel(s) [77]") == 1, log[-3000:]
        assert log.count("will steer nothing in this run: none of this run's 2 steps") == 1, log[-3000:]
    if {"WanSoundImageToVideo", "WanAnimate2ToVideo"} & set(types):
        # S2V: one STAS-patched model samples the first chunk and both extensions; Animate 2: one SamplerCustom.
        # Each run's auto detection found the stand-in's planted channel among the video tokens and steered it.
        runs = sum(types.count(t) for t in ("KSampler", "SamplerCustom"))
        assert runs and log.count("auto detection steered channel(s) [77]") == runs, log[-3000:]
        assert "will steer nothing" not in log, log[-3000:]
        import av
        with av.open(str(videos[0])) as c:
            frames, has_audio = c.streams.video[0].frames, bool(c.streams.audio)
        if "WanSoundImageToVideo" in types:  # three chunks of 3 latent frames and the first-frame fix (10 latent
            # frames, 37 images), less the 3 images ImageFromBatch drops; the sound from Load Audio
            assert (frames, has_audio) == (1 + 4 * (3 * 3) - 3, True), (frames, has_audio)
        else:  # the reference frame trimmed off: 3 latent frames, 9 images
            assert frames == CPU_LENGTH, frames
    for nid, ct in saved:
        if ct == "PreviewImage":
            assert all(p.exists() for p in standins.output_files(entry, nid))
        if ct == "STASMAVisualizer":
            assert outputs[nid].get("stas_profile"), "MA Visualizer sent no chart data to the frontend"
    sweeps = [nid for nid, node in prompt.items() if node["class_type"] == "STASSweep"]
    if sweeps:  # the sweep scored the baseline and every variant; its table is shown in the node and as text
        assert len(videos) == 2, f"the final video and the baseline | winner comparison: {videos}"
        (table,) = outputs[sweeps[0]]["text"]
        rows = table.split("\n\n")[0].splitlines()
        assert "unpatched baseline" in rows[1] and len(rows) == 2 + 4, table   # head, baseline, 2 alphas x 2 windows
        assert "Winner (*)" in table or "No variant scored below the unpatched baseline" in table, table
        texts = [t for nid, ct in saved if ct == "PreviewAny" for t in outputs[nid].get("text", [])]
        assert table in texts, texts
        assert any(ct == "PreviewImage" and standins.output_files(entry, nid) for nid, ct in saved), outputs
    meters = [nid for nid, node in prompt.items() if node["class_type"] == "STASTemporalSeamMeter"]
    if meters:  # its summary reaches a Preview as Text node: both decoded renders were measured and compared
        texts = [t for nid, ct in saved if ct == "PreviewAny" for t in outputs[nid].get("text", [])]
        assert any(t.startswith("Temporal Seam Meter: 9 frames") and "A - B: seam ratio" in t for t in texts), texts


@pytest.mark.integration
@pytest.mark.slow
def test_testbed_left_untouched(standins):
    """The server ran from the testbed without writing into it (all state lives in its base dir)."""
    changed = []
    for dirpath, dirnames, filenames in os.walk(standins.src):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            p = Path(dirpath) / f
            if p.stat().st_mtime > standins.started_at:
                changed.append(str(p.relative_to(standins.src)))
    assert changed == []


# -- README's first-run command ----------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.slow
def test_first_run_command(tmp_path):
    """`python3 scripts/first_run.py --comfyui PATH` (README, "First run") on this testbed."""
    found = find_comfyui()
    if found is None:
        skip_missing("real ComfyUI not found: set COMFYUI_PATH to a ComfyUI checkout (see README, 'Tests')")
    src, python = found
    out = tmp_path / "stas_first_run"
    env = dict(os.environ, COMFYUI_PYTHON=python)
    r = subprocess.run(["python3", "scripts/first_run.py", "--comfyui", str(src), "--out", str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    report = (out / "report.md").read_text()
    names = {p.name.rsplit("_", 2)[0] for p in out.glob("*.png")}
    assert names >= {"mask_preview", "with_stas_profile", "with_stas_heatmaps", "with_stas_hierarchy",
                     "with_stas_steering", "without_stas_profile"}, names
    assert "ch 77" in report, "the planted massive-activation channel was not detected"
    assert "STAS steering here: channels [77]" in report, "STAS did not steer the planted channel"
    # one shared colour scale for the two runs' hierarchies; the report names only images it wrote
    assert (out / "hierarchy_without_vs_with.png").stat().st_size > 0
    assert "_frame_" not in report and "**Boundary tokens**" in report and "Exported:" not in report
    for line in report.splitlines():
        if line.startswith("- `") and line.split("`")[1].endswith(".png"):
            assert (out / line.split("`")[1]).exists(), line
