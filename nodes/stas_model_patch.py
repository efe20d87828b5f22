"""STAS Model Patch: MODEL in, a clone with Structured Activation Steering out."""
from __future__ import annotations

import json
import logging

from comfy_api.latest import io

from ..stas_core.channels import MAX_CHANNELS, parse_channels
from ..stas_core.layout import BoundarySpec
from ..stas_core.schedule import SigmaWindow
from .families import family_of, select_blocks
from .fingerprint import model_fingerprint, node_model_file
from .guiders import PROMPTS
from .patching import StasPlan
from .types import StasMask, StasProfile, named_errors

log = logging.getLogger("comfyui-stas")

def check_profile(profile, model, family: str, hidden: int, n_blocks: int, blocks, source=None) -> None:
    """Refuse a profile of another model (``source``: the model's file, for the message); say (once, in the log)
    what is only partly checked or borrowed."""
    try:
        profile.check_model(family, hidden, n_blocks,
                            model_fingerprint(model) if profile.fingerprint is not None else None, source)
    except ValueError as e:
        raise ValueError(f"STAS Model Patch: {e}") from None
    most = max(len(profile.channels_for(b) or ()) for b in blocks)
    if most > MAX_CHANNELS:
        raise ValueError(f"STAS Model Patch: the profile lists {most} channels for one block, more than the "
                         f"{MAX_CHANNELS} STAS steers per block. Record it again with a smaller top_k.")
    if profile.fingerprint is None:
        log.warning("STAS Model Patch: the connected MA profile has no model fingerprint (saved by an older "
                    "comfyui-stas), so only its family, hidden size and block count were checked. Save it again "
                    "from a recording of this model to have the model checked too.")
    borrowed = {b: s for b, s in profile.block_sources(blocks).items() if b != s}
    if borrowed:
        log.warning("STAS Model Patch: the MA profile has no channels for block(s) %s; using those of the nearest "
                    "profiled block (%s). Record these blocks too (MA Recorder blocks) to calibrate them.",
                    ", ".join(map(str, borrowed)), ", ".join(f"{b} <- {s}" for b, s in borrowed.items()))


def warn_preset(profile, settings: dict) -> None:
    """A STAS Sweep preset carries the settings it was swept with: say so when this node's differ."""
    swept = json.loads(profile.info.get("preset") or "{}")
    differ = {k: v for k, v in swept.items() if k in settings and settings[k] != v}
    if differ:
        log.warning("STAS Model Patch: the profile is a STAS Sweep preset swept with %s; this node is set to %s. Set "
                    "those to steer as the sweep did.", ", ".join(f"{k} {v}" for k, v in swept.items()),
                    ", ".join(f"{k} {settings[k]}" for k in differ))


class StasModelPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASModelPatch",
            display_name="STAS Model Patch",
            category="model_patches/stas",
            description="Structured Activation Steering (arXiv 2603.17825): pulls the massive activations of first-frame and "
                        "boundary tokens toward a scaled maximum in early denoising. Training-free, no extra pass; Wan, "
                        "HunyuanVideo, CogVideoX, LTX-Video / LTX-2, Kandinsky 5, Mochi, MiniMax H3.",
            inputs=[
                io.Model.Input("model", tooltip="Video model to patch (cloned, never changed)."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Target as a multiple of the maximum |h| (1.0 = the maximum itself)."),
                io.Float.Input("blend", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How far steered values move toward the target (1 = replace, 0 = off)."),
                io.String.Input("blocks", default="middle",
                                tooltip="Blocks to steer: 'middle', '15', '10-20', '0,5,9', 'all' or -1 (the last)."),
                io.String.Input("channels", default="auto",
                                tooltip="Channels to steer: 'auto' (detected per run) or a list like '12,407'."),
                io.Float.Input("threshold", default=50.0, min=1.0, max=100000.0, step=1.0,
                               tooltip="auto channels: peak / mean |h| at which a channel counts as massive."),
                io.Int.Input("top_k", default=4, min=1, max=MAX_CHANNELS,
                             tooltip="auto channels: steer at most this many of the strongest channels."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of denoising where steering starts (0 = the first step)."),
                io.Float.Input("end_percent", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of denoising where steering stops (0.4 = the paper's window)."),
                io.Combo.Input("apply_to", options=list(PROMPTS), default="cond",
                               tooltip="Guider pass to steer: cond (positive), uncond (negative) or both."),
                StasMask.Input("mask", optional=True,
                               tooltip="Tokens to steer, from Boundary Mask Builder (none = the paper's tokens)."),
                StasProfile.Input("profile", optional=True,
                                  tooltip="MA profile from Load MA Profile, used instead of auto channels."),
            ],
            outputs=[io.Model.Output(tooltip="The patched clone (bypass this node to sample unsteered).")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, alpha, blend, blocks, channels, threshold, top_k, start_percent, end_percent,
                apply_to, mask=None, profile=None) -> io.NodeOutput:
        with named_errors("STAS Model Patch"):
            dm = model.get_model_object("diffusion_model")
            fam = family_of(dm)
            refs = select_blocks(fam, dm, blocks)
            hidden = fam.hidden_size(dm)
            sel = parse_channels(channels, threshold, top_k)
            sel.validate(hidden)
            if profile is not None:
                if not sel.auto:
                    raise ValueError("STAS Model Patch: both a profile and an explicit channel list are given. "
                                     "Set channels to 'auto' to use the profile, or disconnect the profile.")
                check_profile(profile, model, fam.name, hidden, len(fam.blocks(dm)), [r.flat for r in refs],
                              node_model_file(cls))
                warn_preset(profile, dict(alpha=alpha, blocks=blocks, start_percent=start_percent,
                                          end_percent=end_percent))
            if apply_to not in PROMPTS:
                raise ValueError(f"STAS Model Patch: apply_to must be one of {list(PROMPTS)}, got {apply_to!r}.")
            if not 0.0 <= blend <= 1.0 or alpha < 0.0:
                raise ValueError("STAS Model Patch: alpha must be >= 0 and blend within 0..1.")
            ms = model.get_model_object("model_sampling")
            window = SigmaWindow.from_percents(start_percent, end_percent, ms.percent_to_sigma)
            idle = ("blend is 0" if blend == 0.0 else
                    f"its window {window.describe()} holds no sigma" if window.sigma_start <= window.sigma_end else None)
            if idle is not None:   # as SkipLayerGuidance does: a node that would change nothing patches nothing
                log.info("%s: %s, so STAS would change nothing; the MODEL passes through unpatched.", _label(cls), idle)
                return io.NodeOutput(model)
            plan = StasPlan(
                family=fam, blocks=tuple(refs), spec=mask if mask is not None else BoundarySpec(),
                channels=sel, alpha=float(alpha), blend=float(blend), window=window,
                apply_to=PROMPTS[apply_to], hidden_size=hidden, profile=profile, label=_label(cls),
                shard=cls.sequence_parallel(),
            )
        return io.NodeOutput(plan.install(model))

    @classmethod
    def sequence_parallel(cls):
        """The plan's ``shard`` source (None: one process; nodes/ray_patch.py: raylight's workers)."""
        return None


def _label(cls) -> str:
    """How the console names this node: with its id in the graph when ComfyUI runs it."""
    node_id = getattr(getattr(cls, "hidden", None), "unique_id", None)
    return f"STAS Model Patch #{node_id}" if node_id is not None else "STAS Model Patch"
