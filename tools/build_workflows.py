"""Build example_workflows/*.json and their .jpg thumbnails in the real ComfyUI frontend.

Each workflow below is a list of nodes (type, position, widget values by name) and links (by
slot name). A real ComfyUI server with this pack is started (stas_harness/server.py), headless
Chromium creates the nodes with the frontend's own LiteGraph, connects them, and saves the graph
the way the frontend does (``app.graphToPrompt().workflow``); the thumbnail is a screenshot of
that graph. Build with the OLDEST supported ComfyUI so every newer frontend can load the files:

    COMFYUI_PATH=~/.cache/comfyui-stas/testbeds/comfyui-0.3.64/src \\
        ~/.cache/comfyui-stas/testbeds/comfyui-0.3.64/venv/bin/python tools/build_workflows.py [NAME or number ...]

except "7. LTX-2 with STAS": ComfyUI has LTX-2's nodes from 0.8.0 (an older one skips it), so build that
one with the 0.8.0 testbed (``... comfyui-0.8.0 ... tools/build_workflows.py 7``), and "10. Wan Animate 2 with
STAS", whose nodes (WanAnimate2ToVideo, WanAnimate2Cache) and template come with 0.33.0: build it with the 0.33.0
testbed (``... comfyui-0.33.0 ... tools/build_workflows.py 10``).

Every layout is compact (MAX_EXTENT, no overlapping nodes; the build stops otherwise) and the file's saved
view frames it in a 1600 x 1000 window, so each workflow opens readable from Browse Templates on frontends
1.27 to 1.58 (tests/test_workflow_view.py). Only positions, sizes and the saved view come from here; nodes,
links and widget values are the workflow's content.

Model file names are those of the official ComfyUI repackaged releases (as in ComfyUI's own
templates), so a user with those files runs the workflows unchanged. Every loader node carries its
files' download entries (``properties.models``: name, url, directory; MODEL_DOWNLOADS below, the
URLs ComfyUI's official templates use for the same files), so the frontend offers to download the
missing ones when a workflow is opened.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from _repo import ROOT  # first: the repository root on sys.path (tools/_repo.py)

OUT = ROOT / "example_workflows"

NEGATIVE = ("blurry, low quality, jpeg artifacts, overexposed, static frame, still image, subtitles, text, "
            "watermark, deformed, distorted, extra limbs, fused fingers, messy background, worst quality")
SEED = 42


class Graph:
    """Nodes and links of one workflow, by name; positions in canvas pixels.

    ``name`` is the file name, which is all the template browser shows of an extension's template
    (frontends 1.27 to 1.49 read no metadata for them: title and description are the file name, in
    the order ComfyUI's server lists the files), so it is a readable title whose leading number
    gives the order under "A -> Z"; ``blurb`` is the one-line description drawn on the thumbnail.
    """

    def __init__(self, name: str, blurb: str):
        self.name, self.blurb = name, blurb
        self.nodes: list[dict] = []
        self.links: list[tuple] = []
        self.groups: list[dict] = []
        self.focus: list[int] | None = None  # nodes the thumbnail shows (default: STAS Model Patch)
        self.downloads: dict[str, tuple[str, str]] = {}  # file name -> (folder, URL) replacing MODEL_DOWNLOADS'

    def add(self, type_: str, pos, title: str | None = None, size=None, color: str | None = None, **widgets) -> int:
        self.nodes.append(dict(type=type_, pos=list(pos), title=title, size=size, color=color, widgets=widgets))
        return len(self.nodes) - 1

    def link(self, src: int, out, dst: int, inp: str) -> None:
        self.links.append((src, out, dst, inp))

    def note(self, pos, text: str, size=(460, 300)) -> int:
        return self.add("Note", pos, title="About STAS in this workflow", size=list(size), text=text.strip())

    def group(self, title: str, bounding, color: str = "#3f789e") -> None:
        self.groups.append(dict(title=title, bounding=list(bounding), color=color))

    def spec(self) -> dict:
        return dict(nodes=self.nodes, links=self.links, groups=self.groups)


STAS_COLOR = "#2a4858"

# file name -> (models folder, URL): exactly as ComfyUI's official templates give them
# (comfyui-workflow-templates on PyPI: text_to_video_wan, image_to_video_wan, video_wan2_2_5B_ti2v,
# video_wan2_2_14B_t2v, hunyuan_video_text_to_video).
_WAN21 = "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
_WAN22 = "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/"
_HUNYUAN = "https://huggingface.co/Comfy-Org/HunyuanVideo_repackaged/resolve/main/split_files/"
_LTX2 = "https://huggingface.co/Lightricks/LTX-2/resolve/main/"  # video_ltx2_t2v (templates 0.11)
MODEL_DOWNLOADS = {
    "wan2.1_t2v_1.3B_fp16.safetensors":
        ("diffusion_models", _WAN21 + "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors?download=true"),
    "wan2.1_i2v_480p_14B_fp16.safetensors":
        ("diffusion_models", _WAN21 + "diffusion_models/wan2.1_i2v_480p_14B_fp16.safetensors"),
    "wan2.2_ti2v_5B_fp16.safetensors":
        ("diffusion_models", _WAN22 + "diffusion_models/wan2.2_ti2v_5B_fp16.safetensors"),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors":
        ("diffusion_models", _WAN22 + "diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors":
        ("diffusion_models", _WAN22 + "diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    "hunyuan_video_t2v_720p_bf16.safetensors":
        ("diffusion_models", _HUNYUAN + "diffusion_models/hunyuan_video_t2v_720p_bf16.safetensors?download=true"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors":
        ("text_encoders", _WAN21 + "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "clip_l.safetensors":
        ("text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors?download=true"),
    "llava_llama3_fp8_scaled.safetensors":
        ("text_encoders", _HUNYUAN + "text_encoders/llava_llama3_fp8_scaled.safetensors?download=true"),
    "clip_vision_h.safetensors":
        ("clip_vision", _WAN21 + "clip_vision/clip_vision_h.safetensors"),
    "wan_2.1_vae.safetensors": ("vae", _WAN21 + "vae/wan_2.1_vae.safetensors"),
    "wan2.2_vae.safetensors": ("vae", _WAN22 + "vae/wan2.2_vae.safetensors"),
    "hunyuan_video_vae_bf16.safetensors": ("vae", _HUNYUAN + "vae/hunyuan_video_vae_bf16.safetensors?download=true"),
    "ltx-2-19b-dev-fp8.safetensors": ("checkpoints", _LTX2 + "ltx-2-19b-dev-fp8.safetensors"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors":
        ("loras", _WAN22 + "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"),
    "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors":
        ("loras", _WAN22 + "loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"),
    "gemma_3_12B_it_fp4_mixed.safetensors":
        ("text_encoders", "https://huggingface.co/Comfy-Org/ltx-2/resolve/main/split_files/text_encoders/"
                          "gemma_3_12B_it_fp4_mixed.safetensors"),
}
MODEL_WIDGETS = {"UNETLoader": ("unet_name",), "CLIPLoader": ("clip_name",), "VAELoader": ("vae_name",),
                 "CLIPVisionLoader": ("clip_name",), "DualCLIPLoader": ("clip_name1", "clip_name2"),
                 "CheckpointLoaderSimple": ("ckpt_name",), "LTXVAudioVAELoader": ("ckpt_name",),
                 "LTXAVTextEncoderLoader": ("text_encoder", "ckpt_name"), "LoraLoaderModelOnly": ("lora_name",),
                 "AudioEncoderLoader": ("audio_encoder_name",)}


def add_model_downloads(wf: dict, overrides: dict | None = None) -> dict:
    """Give every loader node of a saved workflow the download entries of the files it loads, in the
    format of ComfyUI's templates (the frontend offers to download the missing ones on load);
    ``overrides`` (a Graph's ``downloads``) replaces MODEL_DOWNLOADS' entry of a file."""
    downloads = {**MODEL_DOWNLOADS, **(overrides or {})}
    for node in wf["nodes"]:
        if node["type"] not in MODEL_WIDGETS:
            continue
        names = node["widgets_values"][: len(MODEL_WIDGETS[node["type"]])]
        unknown = [n for n in names if n not in downloads]
        if unknown:
            raise SystemExit(f"{node['type']} loads {unknown}: add its official URL to MODEL_DOWNLOADS")
        node.setdefault("properties", {})["models"] = [
            {"name": n, "url": downloads[n][1], "directory": downloads[n][0]} for n in names]
    return wf


# -- reusable pieces -----------------------------------------------------------------------

def wan_text(g: Graph, pos, prompt: str, negative: str = NEGATIVE):
    """CLIPLoader (umt5) + positive and negative CLIPTextEncode; returns (clip, pos, neg) node keys."""
    x, y = pos
    clip = g.add("CLIPLoader", (x, y), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    p = g.add("CLIPTextEncode", (x + 250, y), title="Positive prompt", size=[400, 150], text=prompt)
    n = g.add("CLIPTextEncode", (x + 250, y + 200), title="Negative prompt", size=[400, 130], text=negative)
    g.link(clip, "CLIP", p, "clip")
    g.link(clip, "CLIP", n, "clip")
    return clip, p, n


def stas(g: Graph, pos, model_src: int, title: str | None = None, **overrides) -> int:
    """STAS Model Patch at the node's defaults (the paper's setting: the frontend creates the node with
    the defaults its schema declares), ``overrides`` on top, fed by ``model_src``."""
    st = g.add("STASModelPatch", pos, title=title, color=STAS_COLOR, **overrides)
    g.link(model_src, "MODEL", st, "model")
    return st


def diffusion_model(g: Graph, pos, unet_name: str, shift: float, title: str | None = None, shift_pos=None) -> int:
    """UNETLoader -> ModelSamplingSD3 (the official templates' shift); returns the shift node."""
    x, y = pos
    unet = g.add("UNETLoader", (x, y), title=title, unet_name=unet_name, weight_dtype="default")
    ms = g.add("ModelSamplingSD3", shift_pos or (x, y + 130), shift=shift)
    g.link(unet, "MODEL", ms, "model")
    return ms


def ksampler(g: Graph, pos, model_src, positive, negative, latent, steps: int, cfg: float,
             title: str | None = None) -> int:
    """KSampler (uni_pc / simple, as the official Wan templates) with a fixed seed, so bypassing STAS
    renders the same video without it. Sources are (node, output name) pairs."""
    ks = g.add("KSampler", pos, title=title, seed=SEED, control_after_generate="fixed", steps=steps, cfg=cfg,
               sampler_name="uni_pc", scheduler="simple", denoise=1.0)
    g.link(model_src[0], model_src[1], ks, "model")
    g.link(positive[0], positive[1], ks, "positive")
    g.link(negative[0], negative[1], ks, "negative")
    g.link(latent[0], latent[1], ks, "latent_image")
    return ks


def decode_and_save(g: Graph, pos, latent_src, vae, fps: float, prefix: str, tiled: bool = False):
    """VAE decode -> Create Video -> Save Video, stacked in one 400-wide column from ``pos`` down."""
    x, y = pos
    if tiled:
        dec = g.add("VAEDecodeTiled", (x, y), tile_size=256, overlap=64, temporal_size=64, temporal_overlap=8)
    else:
        dec = g.add("VAEDecode", (x, y))
    g.link(latent_src[0], latent_src[1], dec, "samples")
    g.link(vae, "VAE", dec, "vae")
    y += 200 if tiled else 100
    vid = g.add("CreateVideo", (x, y), fps=fps)
    g.link(dec, "IMAGE", vid, "images")
    save = g.add("SaveVideo", (x, y + 130), size=[400, 380], filename_prefix=prefix, format="auto", codec="auto")
    g.link(vid, "VIDEO", save, "video")
    return dec


def mask_builder_with_preview(g: Graph, pos, latent_src, patch_hw: int = 2, preview_pos=None) -> int:
    """Boundary Mask Builder on this workflow's latent, with its preview image shown (at ``preview_pos``,
    default below it)."""
    x, y = pos
    mb = g.add("STASBoundaryMaskBuilder", (x, y), color=STAS_COLOR, first_frame=True, boundaries=True, head=1.0,
               tail=1.0, unit="rows", patch_t=1, patch_hw=patch_hw)
    g.link(latent_src[0], latent_src[1], mb, "latent")
    prev = g.add("PreviewImage", preview_pos or (x, y + 270), title="Which tokens STAS steers", size=[330, 280])
    g.link(mb, "preview", prev, "images")
    return mb


# -- the workflows ---------------------------------------------------------------------------

def wan21_t2v() -> Graph:
    g = Graph("1. Wan 2.1 T2V with STAS",
              "The basic setup: one STAS Model Patch between the model and the sampler.")
    ms = diffusion_model(g, (0, 0), "wan2.1_t2v_1.3B_fp16.safetensors", 8.0)
    _, pos, neg = wan_text(g, (0, 240), "a red fox trotting through fresh snow in a pine forest at sunrise, "
                                        "tracking shot, soft golden light, breath visible in the cold air")
    lat = g.add("EmptyHunyuanLatentVideo", (0, 630), width=832, height=480, length=33, batch_size=1)
    mb = mask_builder_with_preview(g, (0, 810), (lat, "LATENT"), preview_pos=(250, 630))
    st = stas(g, (700, 0), ms)
    g.link(mb, "mask", st, "mask")
    ks = ksampler(g, (950, 0), (st, "MODEL"), (pos, "CONDITIONING"), (neg, "CONDITIONING"), (lat, "LATENT"), 30, 6.0)
    vae = g.add("VAELoader", (950, 320), vae_name="wan_2.1_vae.safetensors")
    decode_and_save(g, (1240, 0), (ks, "LATENT"), vae, 16, "video/stas_wan21_t2v")
    g.note((700, 460), """
STAS (Structured Activation Steering) steers the massive activations of the first latent frame and of the head/tail token rows of every later latent frame toward a scaled global maximum, in one block, during early denoising. No extra model pass.

Settings that matter:
- blocks = middle (block 15 of Wan 2.1 1.3B's 30, as in the paper)
- end_percent = 0.4: steer the first 40% of denoising only
- alpha = 1.0, blend = 1.0: replace with the global max (sign kept)
- apply_to = cond: CFG then extrapolates along the steer
- mask: the Boundary Mask Builder; its preview shows the steered tokens of this latent

Bypass STAS (Ctrl+B) to render the same seed without it.
""")
    return g


def wan22_ti2v_5b() -> Graph:
    g = Graph("4. Wan 2.2 TI2V 5B with STAS", "Wan 2.2 5B: per-frame timesteps, 48-channel latent; same defaults.")
    ms = diffusion_model(g, (0, 0), "wan2.2_ti2v_5B_fp16.safetensors", 8.0)
    _, pos, neg = wan_text(g, (0, 240), "a street musician playing guitar in a retro subway station, commuters "
                                        "hurrying past, warm dim light, handheld camera")
    vae = g.add("VAELoader", (0, 630), vae_name="wan2.2_vae.safetensors")
    lat = g.add("Wan22ImageToVideoLatent", (250, 630), width=1280, height=704, length=121, batch_size=1)
    g.link(vae, "VAE", lat, "vae")
    st = stas(g, (700, 0), ms)
    ks = ksampler(g, (950, 0), (st, "MODEL"), (pos, "CONDITIONING"), (neg, "CONDITIONING"), (lat, "LATENT"), 20, 5.0)
    decode_and_save(g, (1240, 0), (ks, "LATENT"), vae, 24, "video/stas_wan22_ti2v_5b")
    g.note((700, 460), """
Wan 2.2 TI2V 5B with STAS. This model runs per-frame timesteps and a 48-channel latent; STAS steers the same token groups (first latent frame, head/tail rows of every later frame) in the middle block (15 of 30) during the first 40% of denoising.

Settings that matter: blocks = middle, end_percent = 0.4, alpha = 1.0, apply_to = cond. With a start image (connect a Load Image to Wan22ImageToVideoLatent's start_image) the first latent frame is the given image; keep first_frame steering on: its tokens still carry the largest massive activations.

Bypass STAS (Ctrl+B) to compare with the same seed.
""")
    return g


def two_experts(g: Graph, x: int, models, pos, neg, lat, steps: int, cfg: float, split: int, end: int,
                prefix: str) -> None:
    """Wan 2.2 A14B's sampling: KSamplerAdvanced steps 0-``split`` on the high-noise expert's model, the
    rest (up to ``end``) on the low-noise one's, then decode and save; at canvas x ``x``."""
    common = dict(steps=steps, cfg=cfg, sampler_name="euler", scheduler="simple")
    k1 = g.add("KSamplerAdvanced", (x, 0), title=f"Steps 0-{split}: high-noise expert", add_noise="enable",
               noise_seed=SEED, control_after_generate="fixed", **common, start_at_step=0, end_at_step=split,
               return_with_leftover_noise="enable")
    k2 = g.add("KSamplerAdvanced", (x, 390), title=f"Steps {split}-{steps}: low-noise expert", add_noise="disable",
               noise_seed=0, control_after_generate="fixed", **common, start_at_step=split, end_at_step=end,
               return_with_leftover_noise="disable")
    for k, st in zip((k1, k2), models):
        g.link(st, "MODEL", k, "model")
        g.link(pos, "CONDITIONING", k, "positive")
        g.link(neg, "CONDITIONING", k, "negative")
    g.link(lat, "LATENT", k1, "latent_image")
    g.link(k1, "LATENT", k2, "latent_image")
    vae = g.add("VAELoader", (x, 780), vae_name="wan_2.1_vae.safetensors")
    decode_and_save(g, (x + 290, 0), (k2, "LATENT"), vae, 16, prefix)


def wan22_a14b() -> Graph:
    g = Graph("5. Wan 2.2 A14B with STAS",
              "Both experts patched, each steering only the steps it runs.")
    hi = diffusion_model(g, (0, 0), "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", 8.0, title="High-noise expert",
                         shift_pos=(250, 0))
    lo = diffusion_model(g, (0, 130), "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors", 8.0, title="Low-noise expert",
                         shift_pos=(250, 130))
    _, pos, neg = wan_text(g, (0, 260), "a paper boat drifting down a rain-soaked cobblestone street, "
                                        "reflections of neon signs, low camera following the boat")
    lat = g.add("EmptyHunyuanLatentVideo", (0, 640), width=640, height=640, length=81, batch_size=1)
    sth = stas(g, (700, 0), hi, title="STAS (high-noise expert)")
    stl = stas(g, (700, 370), lo, title="STAS (low-noise expert)")
    g.focus = [sth, stl]
    two_experts(g, 950, (sth, stl), pos, neg, lat, steps=20, cfg=3.5, split=10, end=10000,
                prefix="video/stas_wan22_a14b")
    g.note((250, 640), """
Wan 2.2 A14B is two models: the high-noise expert runs the first steps, the low-noise expert the rest. Each expert gets its own STAS Model Patch with the same settings. start/end_percent are fractions of the whole denoising schedule, mapped to sigma by each model, so each STAS steers only the steps its expert actually runs that fall inside the window.

With the split at step 10 of 20 and end_percent = 0.4, the high-noise expert does all the steering and the low-noise STAS steers nothing (it costs nothing, and says so in the console before its first step). Move the split earlier or raise end_percent and the low-noise expert steers its share too.

blocks = middle = block 20 of 40. Bypass both STAS nodes (Ctrl+B) to compare with the same seed.
""", size=(420, 400))
    return g


def wan22_a14b_4step() -> Graph:
    """ComfyUI's Wan 2.2 14B text-to-video template (video_wan2_2_14B_t2v) with its LightX2V 4-step LoRAs:
    UNETLoader -> LoraLoaderModelOnly -> ModelSamplingSD3 (shift 5) per expert, 4 steps, cfg 1; STAS on each."""
    g = Graph("8. Wan 2.2 A14B 4-step LoRA with STAS",
              "4-step LoRA, cfg 1: STAS steers steps 1 and 2 of 4, on the high-noise expert.")
    experts = []
    for y, which, unet in ((0, "High", "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors"),
                           (130, "Low", "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors")):
        u = g.add("UNETLoader", (0, y), title=f"{which}-noise expert", unet_name=unet, weight_dtype="default")
        lo = g.add("LoraLoaderModelOnly", (250, y), title=f"4-step LoRA ({which.lower()} noise)",
                   lora_name=f"wan2.2_t2v_lightx2v_4steps_lora_v1.1_{which.lower()}_noise.safetensors",
                   strength_model=1.0)
        g.link(u, "MODEL", lo, "model")
        ms = g.add("ModelSamplingSD3", (500, y), shift=5.0)
        g.link(lo, "MODEL", ms, "model")
        experts.append(ms)
    _, pos, neg = wan_text(g, (0, 260), "a paper boat drifting down a rain-soaked cobblestone street, "
                                        "reflections of neon signs, low camera following the boat")
    lat = g.add("EmptyHunyuanLatentVideo", (0, 640), width=640, height=640, length=81, batch_size=1)
    sth = stas(g, (750, 0), experts[0], title="STAS (high-noise expert)")
    stl = stas(g, (750, 370), experts[1], title="STAS (low-noise expert)")
    g.focus = [sth, stl]
    two_experts(g, 1000, (sth, stl), pos, neg, lat, steps=4, cfg=1.0, split=2, end=4,
                prefix="video/stas_wan22_a14b_4step")
    g.note((250, 640), """
Wan 2.2 A14B with the LightX2V 4-step LoRAs (as in ComfyUI's own Wan 2.2 14B text-to-video template): a LoRA on each expert, 4 steps, cfg 1, the high-noise expert runs steps 1-2, the low-noise expert steps 3-4. Each expert gets its own STAS Model Patch with the default settings.

With 4 steps the default window (end_percent = 0.4) holds the steps that start at 0 and 0.25 of denoising: steps 1 and 2, both on the high-noise expert. The low-noise STAS steers nothing (it costs nothing, and says so in the console before its first step). cfg 1 runs only the positive pass, which apply_to = cond steers. Raise end_percent above 0.5 to steer step 3 on the low-noise expert too.

blocks = middle = block 20 of 40. Bypass both STAS nodes (Ctrl+B) to compare with the same seed.
""", size=(460, 440))
    return g


def wan21_i2v() -> Graph:
    g = Graph("3. Wan 2.1 I2V with STAS", "Image to video: the first latent frame is your image.")
    ms = diffusion_model(g, (0, 0), "wan2.1_i2v_480p_14B_fp16.safetensors", 8.0)
    _, pos, neg = wan_text(g, (0, 240), "the scene comes alive: gentle wind moves the grass, the camera slowly "
                                        "pushes in, natural motion")
    img = g.add("LoadImage", (0, 630), size=[300, 340], image="example.png", upload="image")
    cvl = g.add("CLIPVisionLoader", (340, 630), clip_name="clip_vision_h.safetensors")
    cve = g.add("CLIPVisionEncode", (340, 740), crop="none")
    g.link(cvl, "CLIP_VISION", cve, "clip_vision")
    g.link(img, "IMAGE", cve, "image")
    vae = g.add("VAELoader", (340, 870), vae_name="wan_2.1_vae.safetensors")
    i2v = g.add("WanImageToVideo", (700, 370), width=512, height=512, length=33, batch_size=1)
    g.link(pos, "CONDITIONING", i2v, "positive")
    g.link(neg, "CONDITIONING", i2v, "negative")
    g.link(vae, "VAE", i2v, "vae")
    g.link(cve, "CLIP_VISION_OUTPUT", i2v, "clip_vision_output")
    g.link(img, "IMAGE", i2v, "start_image")
    st = stas(g, (700, 0), ms)
    ks = ksampler(g, (950, 0), (st, "MODEL"), (i2v, "positive"), (i2v, "negative"), (i2v, "latent"), 20, 6.0)
    decode_and_save(g, (1240, 0), (ks, "LATENT"), vae, 16, "video/stas_wan21_i2v")
    g.note((700, 660), """
Wan 2.1 image-to-video with STAS. The first latent frame is the input image (concatenated to the model input); STAS steers its tokens and the head/tail rows of every later latent frame in the middle block (20 of 40) during the first 40% of denoising.

Settings that matter: blocks = middle, end_percent = 0.4, alpha = 1.0, apply_to = cond. If the video drifts from the image, try a lower alpha (0.8) or blend 0.5.

Put your own image in ComfyUI/input (example.png ships with ComfyUI). Bypass STAS (Ctrl+B) to compare with the same seed.
""")
    return g


def hunyuan_t2v() -> Graph:
    g = Graph("6. HunyuanVideo with STAS",
              "HunyuanVideo: middle block = single-stream block 10; cond only.")
    ms = diffusion_model(g, (0, 0), "hunyuan_video_t2v_720p_bf16.safetensors", 7.0)
    clip = g.add("DualCLIPLoader", (0, 240), clip_name1="clip_l.safetensors",
                 clip_name2="llava_llama3_fp8_scaled.safetensors", type="hunyuan_video", device="default")
    enc = g.add("CLIPTextEncode", (250, 240), title="Prompt", size=[400, 160],
                text="a hummingbird hovering at a bright red flower in slow motion, shallow depth of field, "
                     "morning light, macro shot")
    g.link(clip, "CLIP", enc, "clip")
    guid = g.add("FluxGuidance", (250, 450), guidance=6.0)
    g.link(enc, "CONDITIONING", guid, "conditioning")
    lat = g.add("EmptyHunyuanLatentVideo", (0, 430), width=848, height=480, length=73, batch_size=1)
    st = stas(g, (700, 0), ms)
    guider = g.add("BasicGuider", (950, 0))
    g.link(st, "MODEL", guider, "model")
    g.link(guid, "CONDITIONING", guider, "conditioning")
    sel = g.add("KSamplerSelect", (950, 100), sampler_name="euler")
    sch = g.add("BasicScheduler", (950, 210), scheduler="simple", steps=20, denoise=1.0)
    g.link(st, "MODEL", sch, "model")
    noise = g.add("RandomNoise", (950, 370), noise_seed=SEED, control_after_generate="fixed")
    sca = g.add("SamplerCustomAdvanced", (1200, 0))
    for src, out, inp in ((noise, "NOISE", "noise"), (guider, "GUIDER", "guider"), (sel, "SAMPLER", "sampler"),
                          (sch, "SIGMAS", "sigmas"), (lat, "LATENT", "latent_image")):
        g.link(src, out, sca, inp)
    vae = g.add("VAELoader", (1200, 170), vae_name="hunyuan_video_vae_bf16.safetensors")
    decode_and_save(g, (1450, 0), (sca, "output"), vae, 24, "video/stas_hunyuan_t2v", tiled=True)
    g.note((700, 510), """
HunyuanVideo with STAS. HunyuanVideo has 20 double-stream and 40 single-stream blocks; STAS counts them in that order, so blocks = middle is block 30 = single-stream block 10. In single-stream blocks the text tokens are left alone: only video tokens are steered.

HunyuanVideo is guidance-distilled (FluxGuidance, no negative pass), so apply_to must be cond (uncond would steer nothing and is refused). end_percent = 0.4, alpha = 1.0.

Bypass STAS (Ctrl+B) to compare with the same noise seed.
""")
    return g


def ltx2_t2v() -> Graph:
    """ComfyUI's LTX-2 text-to-video template (video_ltx2_t2v), its first stage: the dev model with
    CFG over audio + video latents; STAS on the checkpoint's model, steering the video stream."""
    g = Graph("7. LTX-2 with STAS", "LTX-2 audio + video: STAS steers the video stream only.")
    ckpt_name = "ltx-2-19b-dev-fp8.safetensors"
    ckpt = g.add("CheckpointLoaderSimple", (0, 0), ckpt_name=ckpt_name)
    te = g.add("LTXAVTextEncoderLoader", (0, 150), text_encoder="gemma_3_12B_it_fp4_mixed.safetensors",
               ckpt_name=ckpt_name)
    p = g.add("CLIPTextEncode", (300, 0), title="Positive prompt", size=[400, 150],
              text="a close-up of a cheerful puppet with curly yarn hair holding a small red umbrella in the rain; "
                   "she looks up and sings a short happy melody, raindrops pattering on the umbrella")
    n = g.add("CLIPTextEncode", (300, 190), title="Negative prompt", size=[400, 110],
              text="blurry, low quality, still frame, frames, watermark, overlay, titles, has blurbox, has subtitles")
    for enc in (p, n):
        g.link(te, "CLIP", enc, "clip")
    cond = g.add("LTXVConditioning", (300, 350), frame_rate=24.0)
    g.link(p, "CONDITIONING", cond, "positive")
    g.link(n, "CONDITIONING", cond, "negative")
    lat = g.add("EmptyLTXVLatentVideo", (0, 290), width=768, height=512, length=97, batch_size=1)
    avae = g.add("LTXVAudioVAELoader", (0, 470), ckpt_name=ckpt_name)
    alat = g.add("LTXVEmptyLatentAudio", (0, 580), frames_number=97, frame_rate=24, batch_size=1)
    g.link(avae, 0, alat, "audio_vae")
    av = g.add("LTXVConcatAVLatent", (0, 740))
    g.link(lat, "LATENT", av, "video_latent")
    g.link(alat, 0, av, "audio_latent")
    mb = mask_builder_with_preview(g, (300, 480), (lat, "LATENT"), patch_hw=1)
    st = stas(g, (740, 0), ckpt)
    g.link(mb, "mask", st, "mask")
    guider = g.add("CFGGuider", (990, 0), cfg=4.0)
    g.link(st, "MODEL", guider, "model")
    g.link(cond, 0, guider, "positive")
    g.link(cond, 1, guider, "negative")
    sel = g.add("KSamplerSelect", (990, 150), sampler_name="euler_ancestral")
    sch = g.add("LTXVScheduler", (990, 260), steps=20, max_shift=2.05, base_shift=0.95, stretch=True, terminal=0.1)
    g.link(av, 0, sch, "latent")
    noise = g.add("RandomNoise", (1240, 160), noise_seed=SEED, control_after_generate="fixed")
    sca = g.add("SamplerCustomAdvanced", (1240, 0))
    for src, out, inp in ((noise, "NOISE", "noise"), (guider, "GUIDER", "guider"), (sel, "SAMPLER", "sampler"),
                          (sch, 0, "sigmas"), (av, 0, "latent_image")):
        g.link(src, out, sca, inp)
    sep = g.add("LTXVSeparateAVLatent", (1240, 300))
    g.link(sca, "output", sep, "av_latent")
    dec = g.add("VAEDecodeTiled", (1490, 0), tile_size=512, overlap=64, temporal_size=4096, temporal_overlap=8)
    g.link(sep, 0, dec, "samples")
    g.link(ckpt, "VAE", dec, "vae")
    adec = g.add("LTXVAudioVAEDecode", (1490, 200))
    g.link(sep, 1, adec, "samples")
    g.link(avae, 0, adec, "audio_vae")
    vid = g.add("CreateVideo", (1490, 300), fps=24.0)
    g.link(dec, "IMAGE", vid, "images")
    g.link(adec, 0, vid, "audio")
    save = g.add("SaveVideo", (1490, 430), size=[400, 380], filename_prefix="video/stas_ltx2_t2v", format="auto",
                 codec="auto")
    g.link(vid, "VIDEO", save, "video")
    g.note((740, 470), """
LTX-2 with STAS: ComfyUI's LTX-2 text-to-video template in one stage (its first stage's dev model, scheduler and CFG 4, at 768x512, without the x2 upscale pass), with STAS between the checkpoint's model and the guider. In the two-stage template, patch the first stage's model only. LTX-2 makes video and audio together; STAS steers only the video tokens (first latent frame, head/tail rows of every later frame) in the middle block (24 of 48) during the first 40% of denoising, and never touches the audio stream.

Settings that matter: blocks = middle, end_percent = 0.4, alpha = 1.0, apply_to = cond. The Boundary Mask Builder takes the video latent with patch_hw = 1 (LTX: one token per latent pixel). Width and height: multiples of 32; length: 8k + 1 frames; keep the frame rate the same in LTXV Conditioning, the audio latent and Create Video.

Bypass STAS (Ctrl+B) to compare with the same noise seed.
""", size=(700, 330))
    return g


def analysis() -> Graph:
    g = Graph("2. Without vs with STAS",
              "Same seed without | with STAS in one video; MAs of both runs recorded.")
    ms = diffusion_model(g, (0, 0), "wan2.1_t2v_1.3B_fp16.safetensors", 8.0)
    _, pos, neg = wan_text(g, (0, 220), "a red fox trotting through fresh snow in a pine forest at sunrise, "
                                        "tracking shot, soft golden light")
    # the densest example: laid out to fit 2000 x 1200 canvas units (opens readable at 1600 x 1000, see BUILD_JS)
    g.nodes[pos].update(pos=[263, 0], size=[300, 150])
    g.nodes[neg].update(pos=[263, 190], size=[300, 120])
    g.nodes[ms].update(pos=[0, 120])
    lat = g.add("EmptyHunyuanLatentVideo", (0, 370), width=832, height=480, length=33, batch_size=1)
    mb = g.add("STASBoundaryMaskBuilder", (0, 550), color=STAS_COLOR, first_frame=True, boundaries=True, head=1.0,
               tail=1.0, unit="rows", patch_t=1, patch_hw=2)
    g.link(lat, "LATENT", mb, "latent")
    rec_kw = dict(blocks="middle", steps="all", record="cond", channels="auto", top_k=4, token_stride=0,
                  max_memory_mb=256)
    # A: without STAS.  B: with STAS (the recorder after STAS also records values before/after steering)
    rec_a = g.add("STASMARecorder", (263, 360), title="MA Recorder (without STAS)", color=STAS_COLOR, **rec_kw)
    g.link(ms, "MODEL", rec_a, "model")
    st = stas(g, (520, 360), ms)
    g.link(mb, "mask", st, "mask")
    rec_b = g.add("STASMARecorder", (263, 630), title="MA Recorder (with STAS)", color=STAS_COLOR, **rec_kw)
    g.link(st, "MODEL", rec_b, "model")
    conds = ((pos, "CONDITIONING"), (neg, "CONDITIONING"), (lat, "LATENT"))
    ks_a = ksampler(g, (760, 0), (rec_a, "model"), *conds, 30, 6.0, title="KSampler (without STAS)")
    ks_b = ksampler(g, (760, 310), (rec_b, "model"), *conds, 30, 6.0, title="KSampler (with STAS, same seed)")
    vae = g.add("VAELoader", (0, 820), vae_name="wan_2.1_vae.safetensors")
    dec_a = g.add("VAEDecode", (520, 700), title="Decode (without STAS)")
    dec_b = g.add("VAEDecode", (520, 790), title="Decode (with STAS)")
    for dec, ks in ((dec_a, ks_a), (dec_b, ks_b)):
        g.link(ks, "LATENT", dec, "samples")
        g.link(vae, "VAE", dec, "vae")
    stitch = g.add("ImageStitch", (760, 620), title="Side by side: without | with STAS", direction="right",
                   match_image_size=True, spacing_width=8, spacing_color="white")
    g.link(dec_a, "IMAGE", stitch, "image1")
    g.link(dec_b, "IMAGE", stitch, "image2")
    vid = g.add("CreateVideo", (760, 820), fps=16.0)
    g.focus = [st, rec_b]
    g.link(stitch, "IMAGE", vid, "images")
    save = g.add("SaveVideo", (760, 950), size=[240, 250], filename_prefix="video/stas_side_by_side", format="auto",
                 codec="auto")
    g.link(vid, "VIDEO", save, "video")
    # visualizers: one per run
    vis_kw = dict(block=-1, step=0, sample=0, chunk="cond", channel="max", threshold=50.0, log_scale=False,
                  export=False, filename_prefix="stas/ma_recording")
    vis = {}
    for key, x, label in (("a", 1030, "without STAS"), ("b", 1520, "with STAS")):
        vis[key] = g.add("STASMAVisualizer", (x, 0), title=f"MA Visualizer ({label})", size=[480, 600],
                         color=STAS_COLOR, **vis_kw)
        rec, ks = (rec_a, ks_a) if key == "a" else (rec_b, ks_b)
        g.link(rec, "recording", vis[key], "recording")
        g.link(ks, "LATENT", vis[key], "latent")
        g.link(mb, "mask", vis[key], "mask")
    for key, out, xy, title in (("a", "profile", (1030, 700), "Token profile (without STAS)"),
                               ("a", "hierarchy", (1270, 700), "Hierarchy by block x step (without STAS)"),
                               ("b", "steering", (1573, 700), "Steering: before vs after (with STAS)"),
                               ("b", "heatmaps", (1030, 950), "Per-frame heatmaps (with STAS)")):
        prev = g.add("PreviewImage", xy, title=title, size=[230, 190])
        g.link(vis[key], out, prev, "images")
    # the decoded videos themselves: change across the VAE's chunk seams, with STAS (A) vs without (B)
    seam = g.add("STASTemporalSeamMeter", (0, 930), color=STAS_COLOR, temporal_compression=4,
                 causal_first_frame=True, flag_contrast=1.5, motion_compensation=True, analysis_size=320)
    g.link(dec_b, "IMAGE", seam, "images")
    g.link(dec_a, "IMAGE", seam, "images_b")
    seam_plot = g.add("PreviewImage", (1285, 950), title="Seams: with STAS (A, blue) vs without (B, orange)",
                      size=[350, 240])
    g.link(seam, "plot", seam_plot, "images")
    seam_text = g.add("PreviewAny", (1650, 950), title="Seam summary", size=[350, 240])
    g.link(seam, "summary", seam_text, "source")
    g.note((263, 900), """
Analysis: the same prompt and seed rendered without (left) and with (right) STAS, the two videos side by side in one file, and the massive activations of the middle block recorded in both runs.

- MA Recorder: records the chosen blocks and steps while the sampler runs. Placed after STAS, it also records each steered value before and after steering.
- MA Visualizer: token-index profile (first frame > boundary rows > interior is the hierarchy STAS exploits), per-frame heatmaps, block x step hierarchy, steering before/after, and a text summary with the detected MA channels. Its chart inside the node is interactive.
- The Boundary Mask Builder feeds the same mask to STAS and to both visualizers, so "boundary" means the same tokens everywhere.
- Temporal Seam Meter: on the decoded videos, how much frames change across the VAE's chunk seams (frames 4k | 4k+1) compared with inside the chunks, with STAS (A) and without (B). Seam ratio 1 = seams invisible; the summary says A - B in words.

See docs/visualizer.md for how to read the figures.
""", size=(470, 300))
    return g


# ComfyUI's own Wan 2.1 1.3B text-to-video template (comfyui-workflow-templates: text_to_video_wan): its
# prompts and its download URLs of the files (text encoder and VAE with "?download=true").
WAN21_T2V_TEMPLATE_PROMPT = ("a fox moving quickly in a beautiful winter scenery nature trees mountains daytime "
                             "tracking camera")
WAN21_T2V_TEMPLATE_NEGATIVE = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
                               "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，"
                               "形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")
WAN21_T2V_TEMPLATE_DOWNLOADS = {
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors":
        ("text_encoders", _WAN21 + "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors?download=true"),
    "wan_2.1_vae.safetensors": ("vae", _WAN21 + "vae/wan_2.1_vae.safetensors?download=true"),
}


def wan21_t2v_sweep() -> Graph:
    """ComfyUI's Wan 2.1 1.3B text-to-video template (text_to_video_wan: files, URLs, prompts, shift 8, 832x480,
    33 frames, KSampler 30 steps cfg 6 uni_pc/simple, CreateVideo 16 fps + SaveVideo) with STAS Sweep between
    the model and the KSampler: the sweep renders a small preview latent with each STAS setting and hands the
    winner's patched model to the full-size render."""
    g = Graph("9. Wan 2.1 T2V STAS Sweep",
              "Sweep STAS settings on a quick preview, then render full size with the best.")
    g.downloads = WAN21_T2V_TEMPLATE_DOWNLOADS
    ms = diffusion_model(g, (0, 0), "wan2.1_t2v_1.3B_fp16.safetensors", 8.0)
    _, pos, neg = wan_text(g, (0, 240), WAN21_T2V_TEMPLATE_PROMPT, WAN21_T2V_TEMPLATE_NEGATIVE)
    vae = g.add("VAELoader", (0, 400), vae_name="wan_2.1_vae.safetensors")
    preview = g.add("EmptyHunyuanLatentVideo", (0, 630), title="Preview latent (the sweep's renders)",
                    width=480, height=272, length=33, batch_size=1)
    full = g.add("EmptyHunyuanLatentVideo", (300, 630), title="Full-size latent (the final render)",
                 width=832, height=480, length=33, batch_size=1)
    sw = g.add("STASSweep", (700, 0), color=STAS_COLOR, size=[360, 400], seed=SEED, control_after_generate="fixed",
               steps=10, cfg=6.0, sampler_name="uni_pc", scheduler="simple", alphas="0.5, 1.0", blocks="middle",
               windows="0-0.2, 0-0.4", tolerance=0.1)
    g.focus = [sw]
    g.link(ms, "MODEL", sw, "model")
    g.link(pos, "CONDITIONING", sw, "positive")
    g.link(neg, "CONDITIONING", sw, "negative")
    g.link(preview, "LATENT", sw, "latent_image")
    g.link(vae, "VAE", sw, "vae")
    ks = ksampler(g, (1120, 0), (sw, "model"), (pos, "CONDITIONING"), (neg, "CONDITIONING"), (full, "LATENT"),
                  30, 6.0, title="KSampler (full size, the sweep's winner)")
    decode_and_save(g, (1450, 0), (ks, "LATENT"), vae, 16, "video/stas_wan21_sweep")
    grid = g.add("PreviewImage", (700, 820), title="Sweep grid: each render after the middle VAE seam",
                 size=[380, 330])
    g.link(sw, "grid", grid, "images")
    cmp_vid = g.add("CreateVideo", (1120, 320), title="Create Video (baseline | winner)", fps=16.0)
    g.link(sw, "comparison", cmp_vid, "images")
    cmp_save = g.add("SaveVideo", (1450, 670), title="Preview: baseline (left) | winner (right)", size=[400, 300],
                     filename_prefix="video/stas_sweep_baseline_vs_winner", format="auto", codec="auto")
    g.link(cmp_vid, "VIDEO", cmp_save, "video")
    table = g.add("PreviewAny", (0, 820), title="Sweep table", size=[650, 330])
    g.link(sw, "table", table, "source")
    g.note((700, 450), """
STAS Sweep renders the preview latent with the same seed once without STAS (the baseline) and once per combination of alphas x blocks x windows, decodes each and scores it: score = 0.5 seam ratio + 0.5 flicker, each relative to the unpatched baseline (1.000), lower is better; variants that freeze motion or blur (motion or sharpness more than tolerance below the baseline's) are disqualified. The grid shows one frame per render right after the middle VAE seam with its score (green = winner, red = disqualified), the table lists every render's scores (winner marked *), and the comparison video plays baseline | winner. Its model output is the winner's STAS patch, or the input unpatched if no variant beats the baseline; the KSampler renders the full-size video with it.
""", size=(360, 320))
    return g



# ComfyUI's own Wan 2.2 S2V template (comfyui-workflow-templates: video_wan2_2_14B_s2v, the same in the packages of
# ComfyUI 0.3.64 to 0.33.0): its files and download URLs (the VAE from the Wan 2.2 repository), prompts, shift, 4-step
# LoRA path (4 steps, cfg 1 from its Steps / CFG primitives), 640x640 chunks of 77 frames, two Video S2V Extend
# subgraphs (each: WanSoundImageToVideoExtend -> KSampler -> LatentConcat), its first-frame fix and 16 fps video.
S2V_TEMPLATE_PROMPT = ("The man is playing the guitar. He looks down at his hands playing the guitar and sings "
                       "affectionately and gently.")
S2V_TEMPLATE_AUDIO = "video_wan2_2_14B_s2v_input_audio.MP3"  # the template's input name: put your audio there
S2V_TEMPLATE_DOWNLOADS = {
    "wan2.2_s2v_14B_fp8_scaled.safetensors":
        ("diffusion_models", _WAN22 + "diffusion_models/wan2.2_s2v_14B_fp8_scaled.safetensors"),
    "wav2vec2_large_english_fp16.safetensors":
        ("audio_encoders", _WAN22 + "audio_encoders/wav2vec2_large_english_fp16.safetensors"),
    "wan_2.1_vae.safetensors": ("vae", _WAN22 + "vae/wan_2.1_vae.safetensors"),
}


def wan22_s2v() -> Graph:
    """ComfyUI's Wan 2.2 S2V template (video_wan2_2_14B_s2v), its subgraphs laid out flat, with STAS Model Patch
    between ModelSamplingSD3 and the three samplers (first chunk and two extensions) and the Boundary Mask Builder on
    the first chunk's latent. Seeds fixed (the template randomizes the first)."""
    g = Graph("11. Wan 2.2 S2V with STAS",
              "Speech to video: STAS steers the video, never the reference, motion frames or audio.")
    g.downloads = S2V_TEMPLATE_DOWNLOADS
    unet = g.add("UNETLoader", (0, 0), unet_name="wan2.2_s2v_14B_fp8_scaled.safetensors", weight_dtype="default")
    lora = g.add("LoraLoaderModelOnly", (0, 130), lora_name="wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
                 strength_model=1.0)
    g.link(unet, "MODEL", lora, "model")
    ms = g.add("ModelSamplingSD3", (0, 260), shift=8.0)
    g.link(lora, "MODEL", ms, "model")
    clip = g.add("CLIPLoader", (0, 360), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    vae = g.add("VAELoader", (0, 510), vae_name="wan_2.1_vae.safetensors")
    aenc = g.add("AudioEncoderLoader", (0, 610), audio_encoder_name="wav2vec2_large_english_fp16.safetensors")
    audio = g.add("LoadAudio", (0, 710), audio=S2V_TEMPLATE_AUDIO)
    aee = g.add("AudioEncoderEncode", (0, 940))
    g.link(aenc, "AUDIO_ENCODER", aee, "audio_encoder")
    g.link(audio, "AUDIO", aee, "audio")
    pos = g.add("CLIPTextEncode", (250, 0), title="Positive prompt", size=[400, 150], text=S2V_TEMPLATE_PROMPT)
    neg = g.add("CLIPTextEncode", (250, 200), title="Negative prompt", size=[400, 130],
                text=WAN21_T2V_TEMPLATE_NEGATIVE)
    g.link(clip, "CLIP", pos, "clip")
    g.link(clip, "CLIP", neg, "clip")
    img = g.add("LoadImage", (250, 380), size=[300, 340], image="example.png", upload="image")
    s2v = g.add("WanSoundImageToVideo", (300, 770), width=640, height=640, length=77, batch_size=1)
    for src, out, inp in ((pos, "CONDITIONING", "positive"), (neg, "CONDITIONING", "negative"), (vae, "VAE", "vae"),
                          (aee, "AUDIO_ENCODER_OUTPUT", "audio_encoder_output"), (img, "IMAGE", "ref_image")):
        g.link(src, out, s2v, inp)
    mb = g.add("STASBoundaryMaskBuilder", (690, 340), color=STAS_COLOR, first_frame=True, boundaries=True, head=1.0,
               tail=1.0, unit="rows", patch_t=1, patch_hw=2)
    g.link(s2v, "latent", mb, "latent")
    prev = g.add("PreviewImage", (690, 620), title="Which tokens STAS steers", size=[235, 280])
    g.link(mb, "preview", prev, "images")
    st = stas(g, (690, 0), ms)
    g.link(mb, "mask", st, "mask")
    ks = ksampler(g, (940, 0), (st, "MODEL"), (s2v, "positive"), (s2v, "negative"), (s2v, "latent"), 4, 1.0)
    latent = (ks, "LATENT")
    for x, y in ((940, 320), (1190, 0)):  # the template's two Video S2V Extend subgraphs
        ext = g.add("WanSoundImageToVideoExtend", (x, y), title="Video S2V Extend", length=77)
        for src, out, inp in ((pos, "CONDITIONING", "positive"), (neg, "CONDITIONING", "negative"),
                              (vae, "VAE", "vae"), (latent[0], latent[1], "video_latent"),
                              (aee, "AUDIO_ENCODER_OUTPUT", "audio_encoder_output"), (img, "IMAGE", "ref_image")):
            g.link(src, out, ext, inp)
        kse = ksampler(g, (x, y + 260), (st, "MODEL"), (ext, "positive"), (ext, "negative"), (ext, "latent"), 4, 1.0,
                       title="KSampler (extend)")
        cat = g.add("LatentConcat", (x, y + 570), dim="t")
        g.link(latent[0], latent[1], cat, "samples1")
        g.link(kse, "LATENT", cat, "samples2")
        latent = (cat, "LATENT")
    cut = g.add("LatentCut", (1190, 700), dim="t", index=0, amount=1)
    g.link(latent[0], latent[1], cut, "samples")
    first = g.add("LatentConcat", (1190, 880), title="LatentConcat (first frame twice)", dim="t")
    g.link(cut, "LATENT", first, "samples1")
    g.link(latent[0], latent[1], first, "samples2")
    dec = g.add("VAEDecode", (1440, 0))
    g.link(first, "LATENT", dec, "samples")
    g.link(vae, "VAE", dec, "vae")
    drop = g.add("ImageFromBatch", (1440, 100), title="ImageFromBatch (drop the doubled frames)", batch_index=3,
                 length=4096)
    g.link(dec, "IMAGE", drop, "image")
    vid = g.add("CreateVideo", (1440, 240), fps=16.0)
    g.link(drop, "IMAGE", vid, "images")
    g.link(audio, "AUDIO", vid, "audio")
    save = g.add("SaveVideo", (1440, 390), size=[400, 380], filename_prefix="video/stas_wan22_s2v", format="auto",
                 codec="auto")
    g.link(vid, "VIDEO", save, "video")
    g.note((1440, 820), """
Wan 2.2 S2V (speech to video) with STAS, from ComfyUI's own S2V template: 4-step LoRA, cfg 1, a first chunk of 77 frames and two Video S2V Extend chunks, all three sampled with the one STAS-patched model.

What STAS steers: only the tokens of the latent being sampled (its first latent frame and the head/tail rows of every later latent frame, in block 20 of 40, steps 1-2 of 4). The reference image's tokens and the motion-frame tokens, which the model appends after the video, are never steered and never enter the global max; audio is added into the video after the block.

Needs ComfyUI 0.8.0 or later (0.3.x refuses S2V). Put your image and audio in ComfyUI/input. Bypass STAS (Ctrl+B) to compare.
""", size=(400, 400))
    return g



# ComfyUI's own Wan Animate 2 template (comfyui-workflow-templates 0.11, ComfyUI 0.33.0: video_wan_animate2; it
# replaced the Wan 2.2 Animate template video_wan2_2_14B_animate, which needed three custom node packs): its files and
# download URLs, prompts, LoRA, WanAnimate2Cache, shift, lcm 6 steps cfg 1, the 482x854 pose video of 81 frames.
_ANIMATE2 = "https://huggingface.co/Comfy-Org/Wan-Animate-2/resolve/main/"
ANIMATE2_DOWNLOADS = {
    "wan_animate_2_int8_convrot.safetensors":
        ("diffusion_models", _ANIMATE2 + "diffusion_models/wan_animate_2_int8_convrot.safetensors"),
    "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors":
        ("loras", _ANIMATE2 + "loras/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ("text_encoders", _ANIMATE2 + "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "clip_vision_h.safetensors": ("clip_vision", _ANIMATE2 + "clip_vision/clip_vision_h.safetensors"),
    "Wan2_1_VAE_bf16.safetensors": ("vae", _ANIMATE2 + "vae/Wan2_1_VAE_bf16.safetensors"),
}
ANIMATE2_PROMPT = ("Character appearance description: A young woman with fair skin, slender build, and messy "
                   "shoulder-length bubblegum-pink hair. She wears a black cropped distressed leather jacket with gold "
                   "buttons and buckles over a dark bandeau top. Both arms are gold and black mechanical prosthetics "
                   "with visible gears and joints. She wears black leather shorts, a wide black belt with a large gold "
                   "buckle, and black straps on her right thigh.\nBackground description: Plain light gray studio "
                   "background, soft even lighting, no decorations.\n")
ANIMATE2_VIDEO = "street_dance_drive.mp4"  # the template's input name: put your pose video there
ANIMATE2_POSE_PROMPT = "A girl doing energetic street dance with rhythmic steps and dynamic arm gestures, background stationary"


def wan_animate2() -> Graph:
    """ComfyUI's Wan Animate 2 template (video_wan_animate2): its Motion Transfer subgraph laid out flat (its context
    window and frame-drop switches, off in the template, and its side-by-side stitch left out), with STAS Model Patch
    between ModelSamplingSD3 and SamplerCustom. Seed fixed (the template randomizes it)."""
    g = Graph("10. Wan Animate 2 with STAS",
              "Character animation: STAS steers the generated frames, never the reference or pose.")
    g.downloads = ANIMATE2_DOWNLOADS
    unet = g.add("UNETLoader", (0, 0), unet_name="wan_animate_2_int8_convrot.safetensors", weight_dtype="default")
    lora = g.add("LoraLoaderModelOnly", (0, 130),
                 lora_name="lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", strength_model=1.0)
    g.link(unet, "MODEL", lora, "model")
    cache = g.add("WanAnimate2Cache", (0, 260), device="gpu", dtype="int8")
    g.link(lora, "MODEL", cache, "model")
    ms = g.add("ModelSamplingSD3", (0, 390), shift=5.0)
    g.link(cache, "MODEL", ms, "model")
    clip = g.add("CLIPLoader", (0, 490), clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")
    cvl = g.add("CLIPVisionLoader", (0, 640), clip_name="clip_vision_h.safetensors")
    vae = g.add("VAELoader", (0, 740), vae_name="Wan2_1_VAE_bf16.safetensors")
    ksel = g.add("KSamplerSelect", (0, 840), sampler_name="lcm")
    sched = g.add("BasicScheduler", (0, 940), scheduler="simple", steps=6, denoise=1.0)
    g.link(cache, "MODEL", sched, "model")
    pos = g.add("CLIPTextEncode", (250, 0), title="Positive prompt (the character)", size=[400, 150], text=ANIMATE2_PROMPT)
    pose_txt = g.add("CLIPTextEncode", (250, 200), title="Pose prompt (the motion)", size=[400, 100],
                     text=ANIMATE2_POSE_PROMPT)
    neg = g.add("CLIPTextEncode", (250, 350), title="Negative prompt", size=[400, 120], text=WAN21_T2V_TEMPLATE_NEGATIVE)
    for t in (pos, pose_txt, neg):
        g.link(clip, "CLIP", t, "clip")
    img = g.add("LoadImage", (250, 520), title="Load Image (Reference Image)", size=[400, 330], image="example.png",
                upload="image")
    st = stas(g, (690, 0), ms)
    vid_in = g.add("LoadVideo", (690, 340), title="Load Video (Pose Video)", size=[230, 330], file=ANIMATE2_VIDEO)
    comps = g.add("GetVideoComponents", (690, 720))
    g.link(vid_in, "VIDEO", comps, "video")
    rpose = g.add("ResizeImageMaskNode", (940, 0), title="Resize (pose video)", resize_type="scale dimensions",
                  **{"resize_type.width": 482, "resize_type.height": 854, "resize_type.crop": "center"},
                  scale_method="area")
    g.link(comps, "images", rpose, "input")
    size = g.add("GetImageSize", (940, 230))
    g.link(rpose, "resized", size, "image")
    rref = g.add("ResizeImageMaskNode", (940, 380), title="Resize (reference)", resize_type="scale dimensions",
                 **{"resize_type.width": 481, "resize_type.height": 854, "resize_type.crop": "center"},
                 scale_method="area")
    g.link(img, "IMAGE", rref, "input")
    g.link(size, "width", rref, "resize_type.width")
    g.link(size, "height", rref, "resize_type.height")
    first = g.add("ImageFromBatch", (690, 870), batch_index=0, length=1)
    g.link(rpose, "resized", first, "image")
    cve = g.add("CLIPVisionEncode", (250, 900), crop="none")
    g.link(cvl, "CLIP_VISION", cve, "clip_vision")
    g.link(rref, "resized", cve, "image")
    cvp = g.add("CLIPVisionEncode", (250, 1030), title="CLIPVisionEncode (pose)", crop="none")
    g.link(cvl, "CLIP_VISION", cvp, "clip_vision")
    g.link(first, "IMAGE", cvp, "image")
    an = g.add("WanAnimate2ToVideo", (1190, 0), width=832, height=480, length=81, batch_size=1, video_frame_offset=0,
               pose_strength=1.0, pose_start_percent=0.0, pose_end_percent=1.0, reference_image_strength=1.0)
    for src, out, inp in ((pos, "CONDITIONING", "positive"), (neg, "CONDITIONING", "negative"), (vae, "VAE", "vae"),
                          (rref, "resized", "reference_image"), (rpose, "resized", "pose_video"),
                          (cve, "CLIP_VISION_OUTPUT", "clip_vision_output"), (pose_txt, "CONDITIONING", "positive_pose"),
                          (cvp, "CLIP_VISION_OUTPUT", "clip_vision_output_pose"), (size, "width", "width"),
                          (size, "height", "height")):
        g.link(src, out, an, inp)
    # the Boundary Mask Builder's preview on the generated frames: latent frame 0 is the reference image (STAS counts
    # its frames from latent frame 1; the mask is rules, not a shape, so the same mask fits the model's latent)
    cut = g.add("LatentCut", (940, 890), title="Generated frames", dim="t", index=1, amount=4096)
    g.link(an, "latent", cut, "samples")
    mb = g.add("STASBoundaryMaskBuilder", (1190, 950), color=STAS_COLOR, first_frame=True, boundaries=True, head=1.0,
               tail=1.0, unit="rows", patch_t=1, patch_hw=2)
    g.link(cut, "LATENT", mb, "latent")
    prev = g.add("PreviewImage", (1580, 900), title="Which tokens STAS steers", size=[400, 320])
    g.link(mb, "preview", prev, "images")
    g.link(mb, "mask", st, "mask")
    sc = g.add("SamplerCustom", (940, 620), add_noise=True, noise_seed=SEED, control_after_generate="fixed", cfg=1.0)
    for src, out, inp in ((st, "MODEL", "model"), (an, "positive", "positive"), (an, "negative", "negative"),
                          (ksel, "SAMPLER", "sampler"), (sched, "SIGMAS", "sigmas"), (an, "latent", "latent_image")):
        g.link(src, out, sc, inp)
    trim = g.add("TrimVideoLatent", (1190, 560), trim_amount=0)
    g.link(sc, "output", trim, "samples")
    g.link(an, "trim_latent", trim, "trim_amount")
    dec = g.add("VAEDecode", (1190, 700))
    g.link(trim, "LATENT", dec, "samples")
    g.link(vae, "VAE", dec, "vae")
    cv = g.add("CreateVideo", (1190, 800), fps=30.0)
    g.link(dec, "IMAGE", cv, "images")
    g.link(comps, "audio", cv, "audio")
    g.link(comps, "fps", cv, "fps")
    save = g.add("SaveVideo", (1580, 0), size=[400, 380], filename_prefix="video/stas_wan_animate2", format="auto",
                 codec="auto")
    g.link(cv, "VIDEO", save, "video")
    g.note((1580, 430), """
Wan Animate 2 (character animation: a reference image moved by a pose video) with STAS, from ComfyUI's own Wan Animate 2 template: step-distill LoRA, lcm, 6 steps, cfg 1.

What STAS steers: the generated frames only. Latent frame 0 of the model input is the reference image (WanAnimate2ToVideo puts it there, TrimVideoLatent cuts it after sampling): STAS skips its tokens, so the steered first frame is latent frame 1, and the head/tail rows of every later latent frame (the preview shows them on the latent without frame 0), in block 20 of 40, steps 1-3 of 6. The reference, the pose branch and CLIP vision are never steered and never enter the global max.

Needs ComfyUI 0.33.0 or later. Put your image and pose video in ComfyUI/input. Bypass STAS (Ctrl+B) to compare.
""", size=(400, 430))
    return g


WORKFLOWS = [wan21_t2v, wan22_ti2v_5b, wan22_a14b, wan21_i2v, hunyuan_t2v, analysis, ltx2_t2v, wan22_a14b_4step,
             wan21_t2v_sweep, wan_animate2, wan22_s2v]

BUILD_JS = """
async ({nodes, links, groups}) => {
  const g = app.graph;
  g.clear();
  const made = [];
  for (const s of nodes) {
    const n = LiteGraph.createNode(s.type);
    if (!n) throw new Error("the frontend does not know node type " + s.type);
    g.add(n);
    n.pos = s.pos;
    if (s.title) n.title = s.title;
    if (s.color) { n.color = s.color; n.bgcolor = "#1f3a47"; }
    for (const [name, value] of Object.entries(s.widgets)) {
      const w = (n.widgets || []).find(w => w.name === name);
      if (!w) throw new Error(s.type + " has no widget " + name + " (has " + (n.widgets || []).map(w => w.name) + ")");
      w.value = value;
    }
    // never below the node's own minimum (a frontend widens a node to its title when it loads it)
    const min = n.computeSize();
    n.size = s.size ? [Math.max(s.size[0], min[0]), Math.max(s.size[1], min[1])] : min;
    made.push(n);
  }
  for (const [src, out, dst, inp] of links) {
    const a = made[src], b = made[dst];
    const oi = typeof out === "number" ? out : a.findOutputSlot(out);
    const ii = b.findInputSlot(inp);
    if (oi < 0 || ii < 0) throw new Error("no slot " + a.type + "." + out + " -> " + b.type + "." + inp);
    if (!a.connect(oi, b, ii)) throw new Error("cannot connect " + a.type + "." + out + " -> " + b.type + "." + inp);
  }
  for (const gr of groups) {
    const group = new LiteGraph.LGraphGroup(gr.title);
    group.pos = gr.bounding.slice(0, 2); group.size = gr.bounding.slice(2, 4); group.color = gr.color;
    g.add(group);
  }
  // frame the whole graph inside the canvas area (right of the side bar, below the top bar)
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of g._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const c = app.canvas, r = c.canvas.getBoundingClientRect();
  const R = [r.left + 80, r.top + 100, r.right - 20, r.bottom - 20], pad = 30;
  const s = Math.min((R[2] - R[0]) / (x1 - x0 + 2 * pad), (R[3] - R[1]) / (y1 - y0 + 2 * pad));
  c.ds.scale = s;
  c.ds.offset = [(R[0] - r.left) / s - x0 + pad, (R[1] - r.top) / s - y0 + pad];
  c.setDirty(true, true);
  c.draw(true, true);
  const clip = {x: R[0], y: R[1], width: (x1 - x0 + 2 * pad) * s, height: (y1 - y0 + 2 * pad) * s};
  const p = await app.graphToPrompt();
  return [JSON.stringify(p.workflow), clip];
}
"""


FOCUS_JS = """
(focus) => {
  // frame the nodes that matter (by creation order) in a square at the top left of the canvas area
  const g = app.graph, c = app.canvas, r = c.canvas.getBoundingClientRect();
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const i of focus) {
    const n = g._nodes[i];
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  const side = 1000, pad = 40, left = r.left + 80, top = r.top + 100;
  const w = x1 - x0 + 2 * pad, h = y1 - y0 + 2 * pad, s = Math.min(side / w, side / h, 2.5);
  c.ds.scale = s;
  c.ds.offset = [(left - r.left) / s - x0 + pad + (side / s - w) / 2, (top - r.top) / s - y0 + pad + (side / s - h) / 2];
  c.setDirty(true, true);
  c.draw(true, true);
  return {x: left, y: top, width: side, height: side};
}
"""

THUMB = 512

# Opened from Browse Templates, frontends 1.49 and later fit the whole graph into 75 % of the window
# (fitView); 1.27 and 1.35 restore the view saved in the file. Below a zoom of 8 px / 14 px = 0.571 (at
# device pixel ratio 1) every frontend draws nodes as blank boxes. So every layout stays within MAX_EXTENT
# canvas units (titles included): 75 % of a 1600 x 1000 window then gives a zoom of at least 0.58; and the
# saved view frames the graph in such a window (tests/test_workflow_view.py opens each one so).
WINDOW = (1600, 1000)
MAX_EXTENT = (2030, 1260)


def extent(wf: dict) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of a saved workflow's nodes, title bars included."""
    title = 30
    return (min(n["pos"][0] for n in wf["nodes"]), min(n["pos"][1] - title for n in wf["nodes"]),
            max(n["pos"][0] + n["size"][0] for n in wf["nodes"]), max(n["pos"][1] + n["size"][1] for n in wf["nodes"]))


def overlaps(wf: dict, gap: float = 8) -> list[str]:
    """Pairs of nodes (title bars included) closer than ``gap`` canvas units."""
    boxes = [(f"{n.get('title') or n['type']} #{n['id']}", n["pos"][0], n["pos"][1] - 30, n["pos"][0] + n["size"][0],
              n["pos"][1] + n["size"][1]) for n in wf["nodes"]]
    return [f"{a[0]} / {b[0]}" for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[1] < b[3] + gap and b[1] < a[3] + gap and a[2] < b[4] + gap and b[2] < a[4] + gap]


def saved_view(wf: dict) -> dict:
    """``extra.ds``: the whole graph in a WINDOW-sized window. The canvas is the whole window from frontend
    1.49 (the side bar and the menu lie over it) and the part right of the side bar and below the menu in 1.27
    (64 and 78 px there): the graph goes where both show it."""
    x0, y0, x1, y1 = extent(wf)
    left, top, right, bottom = 72, 86, WINDOW[0] - 64 - 12, WINDOW[1] - 78 - 12
    scale = min(1.0, (right - left) / (x1 - x0), (bottom - top) / (y1 - y0))
    cx, cy = (left + right) / 2, (top + bottom) / 2
    return {"scale": round(scale, 4), "offset": [round(cx / scale - (x0 + x1) / 2, 1), round(cy / scale - (y0 + y1) / 2, 1)]}


def save_thumbnail(png: bytes, path: Path, blurb: str) -> None:
    """The template browser's card image (shown at 256 x 256): the pack's nodes of this workflow,
    large enough to read, over a caption with the workflow's one-line description."""
    import io
    import textwrap

    from PIL import Image, ImageDraw, ImageFont  # ships with ComfyUI
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    caption_h, top = 128, 56  # 1.49 lays a "Node graph" badge over the card's top left corner
    card = Image.new("RGB", (THUMB, THUMB), (24, 24, 27))
    graph_h = THUMB - caption_h - top
    shot = shot.resize((graph_h, graph_h), Image.LANCZOS)
    card.paste(shot, ((THUMB - graph_h) // 2, top))
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, top + graph_h, THUMB, THUMB), fill=(42, 72, 88))
    try:
        font = ImageFont.truetype("DejaVuSans-Bold.ttf", 27)
    except OSError:
        font = ImageFont.load_default(size=27)
    width = 40
    while width > 10 and max(font.getlength(t) for t in textwrap.wrap(blurb, width)) > THUMB - 32:
        width -= 1
    lines = textwrap.wrap(blurb, width)
    if len(lines) > 3:
        raise SystemExit(f"thumbnail caption too long for three lines: {blurb!r}")
    y = top + graph_h + (caption_h - 36 * len(lines)) // 2
    for line in lines:
        draw.text((16, y), line, fill=(240, 240, 240), font=font)
        y += 36
    card.save(path, "JPEG", quality=88, optimize=True)


def write_inputs(g: Graph, folder: Path) -> None:
    """Short stand-ins, in the build server's input folder, for the video and audio files the graph's Load Video /
    Load Audio nodes name (the templates' names), so the frontend previews them instead of marking the node."""
    import math
    import wave

    import av  # ships with ComfyUI
    import numpy as np
    for n in g.nodes:
        if n["type"] == "LoadVideo" and not (folder / n["widgets"]["file"]).exists():
            with av.open(str(folder / n["widgets"]["file"]), "w") as c:
                st = c.add_stream("mpeg4", rate=16)
                st.width = st.height = 64
                st.pix_fmt = "yuv420p"
                for i in range(9):
                    img = np.full((64, 64, 3), 40 + 20 * i, np.uint8)
                    for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                        c.mux(p)
                for p in st.encode():
                    c.mux(p)
        if n["type"] == "LoadAudio" and not (folder / n["widgets"]["audio"]).exists():
            with wave.open(str(folder / n["widgets"]["audio"]), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(np.array([8000 * math.sin(2 * math.pi * 440 * i / 16000) for i in range(16000)],
                                       dtype="<i2").tobytes())


def main(argv: list[str]) -> int:
    from stas_harness.server import CHROMIUM, CHROMIUM_ARGS, ComfyServer, FrontendPage, ensure_playwright, find_comfyui

    found = find_comfyui()
    if found is None:
        raise SystemExit("set COMFYUI_PATH to a ComfyUI checkout (the oldest supported one)")
    chosen = [w for w in WORKFLOWS if not argv or any(w().name.startswith(a) for a in argv)]
    sync_api = ensure_playwright()
    OUT.mkdir(exist_ok=True)
    with ComfyServer(*found, test_nodes=False) as srv, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        for make in chosen:
            g = make()
            missing = {n["type"] for n in g.nodes} - set(srv.object_info()) - {"Note"}
            if missing:  # LTX-2 on 0.3.64: leave the file as it is
                print(f"skipped {g.name}: this ComfyUI has no {sorted(missing)}; build it with a newer one")
                continue
            write_inputs(g, srv.input_dir)
            ctx = browser.new_context(viewport={"width": 2600, "height": 1500})  # zoom >= 0.6: full-quality nodes
            page = FrontendPage(ctx.new_page(), srv).open()
            text, _ = page.evaluate(BUILD_JS, g.spec())
            wf = add_model_downloads(json.loads(text), g.downloads)
            x0, y0, x1, y1 = extent(wf)
            if x1 - x0 > MAX_EXTENT[0] or y1 - y0 > MAX_EXTENT[1]:
                raise SystemExit(f"{g.name}: {x1 - x0:.0f} x {y1 - y0:.0f} canvas units, more than {MAX_EXTENT}: "
                                 "opened from Browse Templates it would be drawn as blank boxes; lay it out tighter")
            if overlaps(wf):
                raise SystemExit(f"{g.name}: nodes overlap: {overlaps(wf)}")
            wf.setdefault("extra", {})["ds"] = saved_view(wf)
            (OUT / f"{g.name}.json").write_text(json.dumps(wf, indent=2, ensure_ascii=False) + "\n")
            focus = g.focus or [next(i for i, n in enumerate(g.nodes) if n["type"] == "STASModelPatch")]
            clip = page.evaluate(FOCUS_JS, focus)
            page.wait_for_timeout(500)
            save_thumbnail(page.screenshot(type="png", clip=clip), OUT / f"{g.name}.jpg", g.blurb)
            if page.errors():
                raise SystemExit(f"{g.name}: the frontend reported errors: {page.errors()}")
            print(f"wrote {g.name}.json ({len(wf['nodes'])} nodes, {len(wf['links'])} links) and {g.name}.jpg")
            ctx.close()
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
