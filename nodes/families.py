"""Model-family knowledge in one place: which video DiTs STAS supports, where their visual
tokens sit in a block output, and how a block is hooked.  Nodes and patches ask a ``Family``
and never look at model classes themselves; unverified variants are refused by exact class name."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from ..stas_core.layout import Grid, grid_from_latent

SUPPORTED = ("Wan 2.1/2.2 (T2V, I2V, FLF, VACE, Fun, Camera, TI2V 5B, A14B, S2V, Animate, HuMo, SCAIL, WanDancer, "
             "FlowRVS), HunyuanVideo (1.0 and 1.5), CogVideoX, LTX-Video, LTX-2 (audio-video), Kandinsky 5 (video), "
             "Mochi, MiniMax H3 (audio-video)")

REFUSED: Dict[str, Tuple[str, str]] = {
    # diffusion-model class name -> (what it is and why STAS does not steer it, what to use instead)
    "CausalWanModel": (
        "autoregressive Wan: it generates the video chunk by chunk with a KV cache, so a model call sees one chunk, "
        "and the first frame and the frame boundaries STAS steers are not those of the video it makes",
        "Use a Wan 2.1/2.2 model loaded with Load Diffusion Model and sampled with KSampler."),
    "NaDiT": (
        "SeedVR2 video restoration and upscaling: it restores a video it is given, so there is no generated first "
        "frame and no first-frame seam to steer",
        "Use STAS Model Patch on the model that generates the video, then upscale with SeedVR2."),
    "GeneralDIT": (
        "Cosmos 1.0: its blocks have no block-replace hook and STAS has not verified its token layout",
        "Use a Wan 2.1/2.2 or another supported video model."),
    "MiniTrainDIT": (
        "Cosmos Predict2 / Anima: its blocks have no block-replace hook and STAS has not verified its token layout",
        "Use a Wan 2.1/2.2 or another supported video model."),
}
"""Video models STAS refuses by class, with the reason and what to use instead (``family_of``'s message)."""


@dataclass(frozen=True)
class BlockRef:
    """One hookable block: ``kind`` is ComfyUI's patches_replace key ("double_block",
    "single_block") or "block" for families hooked by object patch; ``index`` counts within
    its kind; ``flat`` is the index the user types (all blocks in forward order)."""

    kind: str
    index: int
    flat: int


class Family:
    name: str = ""
    hook: str = "replace"  # "replace": patches_replace["dit"]; "object": object patch on forward
    lead_frames: int = 0
    """Latent frames at the start of the model input that are no frames of the generated video (Wan 2.2 Animate's
    reference image): ``grid`` leaves them out, and their tokens count in ``video_prefix``."""
    loop_keeps_output: bool = True
    """(hook "replace") The block loop keeps a replaced block's output in a local until the next
    replaced block (``out = blocks_replace[...]``): ``Plan.install`` puts a pass-through patch on every
    later block so that output is not held through the rest of the loop."""
    _classes: Tuple[str, ...] = ()

    @classmethod
    def matches(cls, diffusion_model: Any) -> bool:
        return type(diffusion_model).__name__ in cls._classes

    def refusal(self, dm: Any) -> str | None:
        """A model of this family's class that is no video model of it: what it is, to refuse it by name."""
        return None

    # -- static facts -------------------------------------------------------------------
    def block_groups(self, dm: Any) -> List[Tuple[str, int]]:
        raise NotImplementedError

    def patch_size(self, dm: Any) -> Tuple[int, int, int]:
        raise NotImplementedError

    def hidden_size(self, dm: Any) -> int:
        raise NotImplementedError

    def group_edges(self, dm: Any) -> Dict[int, str]:
        """Flat index -> "end" for the last block of a group that another group follows, "start" for the
        first block of each later group (see ``hooks.hold`` / ``hooks.drop_held``)."""
        edges, flat, groups = {}, 0, [(k, n) for k, n in self.block_groups(dm) if n]
        for g, (_, n) in enumerate(groups):
            if g:
                edges[flat] = "start"
            if g < len(groups) - 1:
                edges[flat + n - 1] = "end"
            flat += n
        return edges

    def blocks(self, dm: Any) -> List[BlockRef]:
        out, flat = [], 0
        for kind, n in self.block_groups(dm):
            for i in range(n):
                out.append(BlockRef(kind, i, flat))
                flat += 1
        return out

    block_words: Dict[str, str] = {}  # what users call each kind of block ("blocks" where there is one kind)

    def describe_blocks(self, dm: Any) -> str:
        parts, flat = [], 0
        for kind, n in self.block_groups(dm):
            if n:   # HunyuanVideo 1.5 has no single-stream block
                parts.append(f"{flat}-{flat + n - 1} {self.block_words.get(kind, 'blocks')}")
            flat += n
        return ", ".join(parts)

    # -- per call -----------------------------------------------------------------------
    @staticmethod
    def latent_shape(shape: Tuple[int, ...], latent_shapes=None) -> Tuple[int, ...]:
        """The video latent's shape [B, C, T, H, W] of a sampler or model input of ``shape``. A
        NestedTensor latent (LTX-2: video, audio) reaches them packed flat [B, 1, N], its parts'
        shapes in ``latent_shapes``, video first."""
        if latent_shapes is not None and len(latent_shapes) > 1:
            return (int(shape[0]),) + tuple(int(s) for s in latent_shapes[0][1:])
        return tuple(shape)

    def grid(self, dm: Any, x_shape: Tuple[int, ...], cond: Mapping[str, Any] | None = None) -> Grid:
        """The video's token grid in a model call with input shape ``x_shape`` and ``cond`` (the call's
        model kwargs; None for the sampler's latent)."""
        t, h, w = grid_from_latent(self.latent_shape(x_shape, (cond or {}).get("latent_shapes")), self.patch_size(dm))
        return (max(t - self.lead_frames, 0), h, w)

    def block_hidden(self, out: Any):
        """The video hidden states [B, N, C] in what a hooked block returns (edited in place)."""
        return out["img"]

    def prefix_tokens(self, dm: Any, cond_kwargs: Mapping[str, Any]) -> int:
        """Tokens the model puts before the video tokens (reference latents, and reference frames that are not
        frames of the generated video, as Wan 2.2 Animate's frame 0). Tokens after the video tokens (appended
        reference, motion or pose tokens) need no hook: STAS reads only ``prefix + T*H*W`` tokens. ``grid``
        must leave such leading frames out of the video's grid."""
        return 0

    def video_prefix(self, dm: Any, cond_kwargs: Mapping[str, Any], grid: Grid) -> int:
        """Tokens before the first video token of a model call whose video grid is ``grid``: ``prefix_tokens``
        and the tokens of the ``lead_frames``. What patching.py and recorder_patch.py use."""
        return self.prefix_tokens(dm, cond_kwargs) + self.lead_frames * grid[1] * grid[2]

    def visual_start(self, kind: str, transformer_options: Mapping[str, Any], prefix: int) -> int:
        """Index of the first video token in the tensor the block hook edits."""
        return prefix

    def call_grid(self, ctx_grid: Grid, transformer_options: Mapping[str, Any]) -> Grid:
        return ctx_grid

    def object_patch_name(self, ref: BlockRef) -> str:
        raise NotImplementedError

    def block_module(self, dm: Any, ref: BlockRef) -> Any:
        """The module an object patch of ``ref`` stands in for (``hook = "object"`` only)."""
        raise NotImplementedError


class WanFamily(Family):
    """Wan 2.1/2.2 and the Wan-derived classes whose video tokens come first, (t, h, w) order, every latent frame of
    the model input a frame of the generated video, conditioning tokens (if any) after them (docs/models.md):
    WanModel (T2V, I2V, FLF, Fun, 2.2, FlowRVS), VACE, Camera; S2V (reference and motion-frame tokens appended;
    audio added into the video tokens after the block); HuMo (reference tokens appended, audio by cross-attention);
    WanDancer (music added into the video tokens after the block). Fun's ref_conv reference tokens come first."""

    name = "Wan"
    _classes = ("WanModel", "VaceWanModel", "CameraWanModel", "WanModel_S2V", "HumoWanModel", "WanDancerModel")

    def refusal(self, dm):
        # Older ComfyUI (0.3.64) calls S2V's block patches without transformer_options: STAS would steer nothing.
        if type(dm).__name__ == "WanModel_S2V":
            import inspect
            try:
                src = inspect.getsource(type(dm).forward_orig)
            except (OSError, TypeError):
                return None
            if '"pe": freqs, "transformer_options"' not in src:
                return ("Wan 2.2 S2V models in this ComfyUI version (its blocks do not hand block patches the call's "
                        "transformer_options, so STAS could steer nothing; update ComfyUI to 0.8 or later)")
        return None

    def block_groups(self, dm):
        return [("double_block", len(dm.blocks))]

    def patch_size(self, dm):
        return tuple(int(p) for p in dm.patch_size)

    def hidden_size(self, dm):
        return int(dm.dim)

    def prefix_tokens(self, dm, cond_kwargs):
        # Wan Fun / reference-latent models prepend ref_conv(reference_latent) tokens.
        ref = cond_kwargs.get("reference_latent")
        if getattr(dm, "ref_conv", None) is None or ref is None:
            return 0
        _, ph, pw = self.patch_size(dm)
        return (ref.shape[-2] // ph) * (ref.shape[-1] // pw)

    def call_grid(self, ctx_grid, transformer_options):
        # Newer Wan publishes its grid; it may include time-concatenated reference frames
        # (Phantom), which sit after the video and are not latent frames of the video.
        gs = transformer_options.get("grid_sizes")
        if gs is None or len(gs) != 3:
            return ctx_grid
        return (min(int(gs[0]), ctx_grid[0]), int(gs[1]), int(gs[2]))


class WanReferenceFramesFamily(WanFamily):
    """SCAIL and SCAIL-2 (pose-driven Wan): the reference latent's frames are concatenated in time *before* the video
    (``torch.cat((reference_latent, x), dim=2)``, cut off again after the head) and the pose tokens appended after
    it. The video is the model input's latent frames; its first frame is the first token frame after the references."""

    _classes = ("SCAILWanModel", "SCAIL2WanModel")

    def prefix_tokens(self, dm, cond_kwargs):
        ref = cond_kwargs.get("reference_latent")
        if ref is None:
            return 0
        return math.prod(-(-int(s) // p) for s, p in zip(ref.shape[-3:], self.patch_size(dm)))  # padded to the patch


class WanAnimateFamily(WanFamily):
    """Wan 2.2 Animate (AnimateWanModel) and WanAnimate2Model: latent frame 0 of the model input is the reference
    image (WanAnimateToVideo puts it there and trims it after sampling, ``trim_latent``); the generated video is
    frames 1..T-1. Pose latents are added into frames 1.. (Animate) or run in a separate branch (Animate 2); face
    motion is added into the tokens after the block. STAS skips frame 0's tokens and counts only frames 1.. in M."""

    _classes = ("AnimateWanModel", "WanAnimate2Model")
    lead_frames = 1


class HunyuanVideoFamily(Family):
    """HunyuanVideo 1.0 (T2V, I2V, SkyReels) and 1.5 (T2V, I2V, SR): one ComfyUI class, differing
in parameters only, with video tokens where 1.0 has them.  HunyuanImage 2.1 (same class) is refused."""

    name = "HunyuanVideo"
    _classes = ("HunyuanVideo",)

    def refusal(self, dm):
        if len(dm.patch_size) != 3 or (getattr(dm, "vector_in", None) is None
                                       and getattr(dm, "vision_in", None) is None):
            return "HunyuanImage 2.1 models (an image model in ComfyUI's HunyuanVideo class)"
        return None

    block_words = {"double_block": "double-stream blocks", "single_block": "single-stream blocks"}

    def block_groups(self, dm):
        return [("double_block", len(dm.double_blocks)), ("single_block", len(dm.single_blocks))]

    def patch_size(self, dm):
        return tuple(int(p) for p in dm.patch_size)

    def hidden_size(self, dm):
        return int(dm.hidden_size)

    def prefix_tokens(self, dm, cond_kwargs):
        ref = cond_kwargs.get("ref_latent")
        if ref is None:
            return 0
        p = self.patch_size(dm)
        return math.prod(s // q for s, q in zip(ref.shape[-3:], p))

    def visual_start(self, kind, transformer_options, prefix):
        # Single-stream blocks hold image and text together: image first in older ComfyUI,
        # text first (announced by img_slice) in newer.
        if kind == "single_block":
            sl = transformer_options.get("img_slice")
            if sl is not None:
                return int(sl[0]) + prefix
        return prefix


class CogVideoXFamily(Family):
    name = "CogVideoX"
    hook = "object"
    _classes = ("CogVideoXTransformer3DModel",)

    def block_groups(self, dm):
        return [("block", len(dm.blocks))]

    def patch_size(self, dm):
        pt = dm.patch_size_t if dm.patch_size_t is not None else 1
        return (int(pt), int(dm.patch_size), int(dm.patch_size))

    def hidden_size(self, dm):
        return int(dm.dim)

    def object_patch_name(self, ref):
        return f"diffusion_model.blocks.{ref.index}.forward"

    def block_module(self, dm, ref):
        return dm.blocks[ref.index]

    def block_hidden(self, out):
        return out[0]  # (hidden_states, encoder_hidden_states)


class LTXVideoFamily(Family):
    """LTX-Video (0.9.x) and LTX-2: patch size 1, frame-major tokens, 8x temporal / 32x spatial VAE.
    LTX-2 audio-video blocks get and return ``img`` = (video, audio); only the video is steered.
    Guide frames (LTXVAddGuide) sit after the video latent's frames and their tokens after its tokens."""

    name = "LTX-Video"
    _classes = ("LTXVModel", "LTXAVModel")
    loop_keeps_output = False  # a block adds into its input and returns it: ``out`` holds the loop's own tensor

    def block_groups(self, dm):
        return [("double_block", len(dm.transformer_blocks))]

    def patch_size(self, dm):
        return tuple(int(p) for p in dm.patchifier.patch_size)

    def hidden_size(self, dm):
        return int(dm.inner_dim)

    def grid(self, dm, x_shape, cond=None):
        t, h, w = super().grid(dm, x_shape, cond)
        kf = (cond or {}).get("keyframe_idxs")
        if kf is not None and kf.shape[2] and h * w:
            t -= kf.shape[2] // (h * w)  # the guides' latent frames are not frames of the video
        return (max(t, 1), h, w)

    def block_hidden(self, out):
        img = out["img"]
        return img[0] if isinstance(img, (tuple, list)) else img


class Kandinsky5Family(Family):
    """Kandinsky 5 video (Lite, Pro): HunyuanVideo VAE (4x), patch 1x2x2, (t, h, w) tokens. Its
    block-replace hook cannot run the block (ComfyUI bug), so blocks are object-patched."""

    name = "Kandinsky 5"
    hook = "object"
    _classes = ("Kandinsky5",)

    def refusal(self, dm):
        if int(dm.visual_embed_dim) == int(dm.in_visual_dim) * math.prod(dm.patch_size):  # no image/mask concat
            return "Kandinsky 5 image models (an image model in ComfyUI's Kandinsky5 class)"
        return None

    def block_groups(self, dm):
        return [("block", len(dm.visual_transformer_blocks))]

    def patch_size(self, dm):
        return tuple(int(p) for p in dm.patch_size)

    def hidden_size(self, dm):
        return int(dm.model_dim)

    def object_patch_name(self, ref):
        return f"diffusion_model.visual_transformer_blocks.{ref.index}.forward"

    def block_module(self, dm, ref):
        return dm.visual_transformer_blocks[ref.index]

    def block_hidden(self, out):
        return out  # TransformerDecoderBlock returns the visual hidden states alone


class MochiFamily(Family):
    """Genmo Mochi 1: 6x temporal / 8x spatial VAE, patch 1x2x2, (t, h, w) tokens."""

    name = "Mochi"
    _classes = ("AsymmDiTJoint",)

    def block_groups(self, dm):
        return [("double_block", len(dm.blocks))]

    def patch_size(self, dm):
        return (1, int(dm.patch_size), int(dm.patch_size))

    def hidden_size(self, dm):
        return int(dm.hidden_size_x)


class MiniMaxH3Family(Family):
    """MiniMax H3 (audio-video, one stream): each block gets and returns one packed sequence ``[S, hidden]`` (no batch
    dimension; the model runs batch 1, so cond and uncond are separate calls of their own lengths) in the order text,
    guide / keyframe rows (``MiniMaxH3AddGuide``, ``MiniMaxH3ImageToVideo``: latent and audio rows of their own) or
    reference rows (``MiniMaxH3ReferenceToVideo``), the generated audio, then the generated video, always last:
    latent frames in (t, h, w) order, patch 1x2x2, latent frame 0 the video's first frame. Only the video segment is
    steered and enters M. The block edits its input in place and returns it (``h`` is the loop's own tensor)."""

    name = "MiniMax H3"
    _classes = ("MiniMaxH3Model",)
    loop_keeps_output = False

    def block_groups(self, dm):
        return [("double_block", len(dm.blocks))]

    def patch_size(self, dm):
        return tuple(int(p) for p in dm.patch_size)

    def hidden_size(self, dm):
        return int(dm.hidden_size)

    def block_hidden(self, out):
        return out["img"].unsqueeze(0)  # [S, C] -> a [1, S, C] view: edits reach the block's tensor

    def video_prefix(self, dm, cond_kwargs, grid):
        # The model's own PackedLayout (built by model_base.extra_conds per prompt, once per run) says where the video
        # segment starts; for a call of another shape it is rebuilt as the forward rebuilds it (same text and guides).
        payload = cond_kwargs.get("minimax_payload") or {}
        layout, shapes = payload.get("layout"), cond_kwargs.get("latent_shapes")
        if layout is None or shapes is None or len(shapes) < 2:
            raise RuntimeError("STAS: a MiniMax H3 model call carries no packed layout (minimax_payload), so STAS "
                               "cannot find its video tokens. Sample the latent of Empty MiniMax H3 AV Latent with "
                               "ComfyUI's MiniMax H3 conditioning; otherwise please report it with the workflow.")
        _, ph, pw = self.patch_size(dm)
        sig = (layout.signature[0], int(grid[0]), int(grid[1]) * ph, int(grid[2]) * pw, int(shapes[1][-1]))
        if tuple(layout.signature) != sig:
            layout = type(layout)(*sig, keyframes=payload.get("keyframes"), refs=payload.get("refs"))
        return next(a for a, _, kind in layout.segments if kind == "video")


FAMILIES: Tuple[Family, ...] = (WanFamily(), WanReferenceFramesFamily(), WanAnimateFamily(), HunyuanVideoFamily(),
                                CogVideoXFamily(), LTXVideoFamily(), Kandinsky5Family(), MochiFamily(),
                                MiniMaxH3Family())


def family_of(diffusion_model: Any) -> Family:
    """The family of a loaded diffusion model, or a ValueError that names the model, why it is refused, what to use
    instead and the supported ones (callers prefix the node's name)."""
    cls = type(diffusion_model).__name__
    if cls in REFUSED:
        why, instead = REFUSED[cls]
        raise ValueError(f"STAS does not support {cls} models ({why}). {instead} Supported: {SUPPORTED}.")
    fam = next((f for f in FAMILIES if f.matches(diffusion_model)), None)
    what = f"{cls} models" if fam is None else fam.refusal(diffusion_model)
    if what is None:
        return fam
    raise ValueError(
        f"STAS does not support {what}. Supported: {SUPPORTED}. "
        "Connect the MODEL output of a loader of one of those (autoregressive Wan, SeedVR2, Cosmos and "
        "image models are not supported).")


def select_blocks(fam: Family, dm: Any, text: str) -> List[BlockRef]:
    from ..stas_core.blocks import parse_blocks

    refs = fam.blocks(dm)
    try:
        picked = parse_blocks(text, len(refs))
    except ValueError as e:
        if len([n for _, n in fam.block_groups(dm) if n]) < 2:  # the message already gives the one valid range
            raise
        raise ValueError(f"{str(e).rstrip('.')} ({fam.name}: {fam.describe_blocks(dm)}).") from None
    if not picked:
        raise ValueError(f"blocks: no block selected; STAS would do nothing. Use 'middle', an index or a range "
                         f"({fam.name}: {fam.describe_blocks(dm)}).")
    return [refs[i] for i in picked]
