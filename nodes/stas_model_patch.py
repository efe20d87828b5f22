"""STAS Model Patch: MODEL in, a clone with Structured Activation Steering out."""
from __future__ import annotations

from comfy_api.latest import io

from ..stas_core.channels import MAX_CHANNELS, parse_channels
from ..stas_core.layout import BoundarySpec
from ..stas_core.schedule import SigmaWindow
from .families import family_of, select_blocks
from .patching import StasPlan, install
from .types import StasMask, StasProfile

APPLY_TO = {"cond": frozenset({0}), "uncond": frozenset({1}), "both": frozenset({0, 1})}


def validate_latent(plan: StasPlan, dm, shape) -> None:
    """Run by the OUTER_SAMPLE wrapper before the first step of every sampling run."""
    if len(shape) != 5:
        raise ValueError(f"STAS Model Patch: the sampler got a latent of shape {shape}, not a video latent "
                         "[B, C, T, H, W]. STAS steers video models; remove it from image workflows.")
    grid = plan.family.grid(dm, shape)
    if plan.spec.is_empty_for(grid):
        raise ValueError(f"STAS Model Patch: the mask ({plan.spec.describe()}) selects no token of this "
                         f"{grid[0]}x{grid[1]}x{grid[2]} latent grid (boundaries need at least two latent "
                         "frames). Turn on first_frame in the Boundary Mask Builder or render more frames.")


class StasModelPatch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASModelPatch",
            display_name="STAS Model Patch",
            category="model_patches/stas",
            description="Structured Activation Steering (arXiv 2603.17825): during early denoising, steer the "
                        "massive-activation channels of first-frame and boundary tokens toward a scaled global-"
                        "maximum reference. Training-free, no extra forward pass. Wan, HunyuanVideo, CogVideoX.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan 2.1/2.2, HunyuanVideo or CogVideoX model. It is cloned, never changed."),
                io.Float.Input("alpha", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scale of the global-maximum reference: steered values move toward alpha * max|h| (sign kept). 1.0 = the maximum itself."),
                io.Float.Input("blend", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How far to move toward the target: 1.0 replaces the value (the paper), 0.0 leaves it unchanged."),
                io.String.Input("blocks", default="middle",
                                tooltip="Blocks whose output is steered: 'middle' (the paper: block 15 of 30), an index '15', a range '10-20', a list '0,5,9', or 'all'. HunyuanVideo counts double-stream blocks first, then single-stream."),
                io.String.Input("channels", default="auto",
                                tooltip="'auto' detects the massive-activation channels at the first steered step of each run; or list channel indices like '12,407'."),
                io.Float.Input("threshold", default=50.0, min=1.0, max=100000.0, step=1.0,
                               tooltip="auto channels: a channel counts as massive when its peak |h| is at least this many times the mean |h| of the hidden state."),
                io.Int.Input("top_k", default=4, min=1, max=MAX_CHANNELS,
                             tooltip="auto channels: keep at most this many channels (the strongest)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Start of steering, as a fraction of denoising (0 = first step). Mapped to sigma by the model itself."),
                io.Float.Input("end_percent", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="End of steering, as a fraction of denoising. The paper steers the first 40% (20 of 50 steps)."),
                io.Combo.Input("apply_to", options=list(APPLY_TO), default="cond",
                               tooltip="Which CFG pass is steered: cond (positive; CFG then extrapolates along the steer), uncond (negative), or both."),
                StasMask.Input("mask", optional=True,
                               tooltip="Tokens to steer, from Boundary Mask Builder. Default: first latent frame plus one token row at the head and tail of every later frame."),
                StasProfile.Input("profile", optional=True,
                                  tooltip="MA profile (from Load MA Profile): use its calibrated channels instead of 'channels'. Set channels to 'auto' when a profile is connected."),
            ],
            outputs=[io.Model.Output(tooltip="The patched clone. Bypass or remove the node to sample unsteered.")],
        )

    @classmethod
    def execute(cls, model, alpha, blend, blocks, channels, threshold, top_k, start_percent, end_percent,
                apply_to, mask=None, profile=None) -> io.NodeOutput:
        dm = model.get_model_object("diffusion_model")
        fam = family_of(dm)
        refs = select_blocks(fam, dm, blocks)
        hidden = fam.hidden_size(dm)
        try:
            sel = parse_channels(channels, threshold, top_k)
            sel.validate(hidden)
        except ValueError as e:
            raise ValueError(f"STAS Model Patch: {e}") from None
        if profile is not None:
            if not sel.auto:
                raise ValueError("STAS Model Patch: both a profile and an explicit channel list are given. "
                                 "Set channels to 'auto' to use the profile, or disconnect the profile.")
            profile.check_model(fam.name, hidden, len(fam.blocks(dm)))
            most = max(len(profile.channels_for(r.flat) or ()) for r in refs)
            if most > MAX_CHANNELS:
                raise ValueError(f"STAS Model Patch: the profile lists {most} channels for one block, more than the "
                                 f"{MAX_CHANNELS} STAS steers per block. Record it again with a smaller top_k.")
        if apply_to not in APPLY_TO:
            raise ValueError(f"STAS Model Patch: apply_to must be one of {list(APPLY_TO)}, got {apply_to!r}.")
        if not 0.0 <= blend <= 1.0 or alpha < 0.0:
            raise ValueError("STAS Model Patch: alpha must be >= 0 and blend within 0..1.")
        ms = model.get_model_object("model_sampling")
        window = SigmaWindow.from_percents(start_percent, end_percent, ms.percent_to_sigma)
        plan = StasPlan(
            family=fam, blocks=tuple(refs), spec=mask if mask is not None else BoundarySpec(),
            channels=sel, alpha=float(alpha), lam=float(blend), window=window,
            apply_to=APPLY_TO[apply_to], hidden_size=hidden, profile=profile,
        )
        return io.NodeOutput(install(model, plan, validate_latent))
