"""Save MA Profile: a recording's massive-activation channels -> a profile file (and STAS_PROFILE)."""
from __future__ import annotations

import dataclasses
import os
import re

from comfy_api.latest import io

from ..stas_core.stats import profile_from_run
from .fingerprint import node_model_file
from .load_ma_profile import profile_folders
from .types import StasProfile, StasRecording


def profile_path(filename: str, node: str, what: str = "filename") -> str:
    """Where a profile named ``filename`` (the input ``what``) is saved (the first profile folder), or a ValueError
    naming ``node``."""
    name = (filename or "").strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not name or not re.fullmatch(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*", name) or ".." in name:
        raise ValueError(f"{node}: {what} {filename!r} is not a plain name; use letters, digits, "
                         "'-', '_', '.' (and '/' for a subfolder), e.g. wan21_1.3b.")
    return os.path.join(profile_folders()[0], name + ".safetensors")


class SaveMAProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASSaveMAProfile",
            display_name="Save MA Profile (STAS)",
            category="model_patches/stas",
            description="Turns a recording into an MA profile: each recorded block's massive channels and a fingerprint of "
                        "the model's weights. Saved to ComfyUI/models/stas_profiles for Load MA Profile.",
            is_output_node=True,
            inputs=[
                StasRecording.Input("recording", tooltip="The recording output of MA Recorder."),
                io.Latent.Input("latent", tooltip="The sampler's LATENT, which picks the run to save."),
                io.String.Input("filename", default="wan_ma_profile",
                                tooltip="Profile name in models/stas_profiles, without .safetensors."),
                io.Float.Input("threshold", default=50.0, min=1.0, max=100000.0, step=1.0,
                               tooltip="Peak / mean |h| at which a channel counts as massive."),
                io.Int.Input("top_k", default=4, min=1, max=64, tooltip="At most this many channels per block (the strongest)."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace an existing profile of the same name."),
            ],
            outputs=[
                StasProfile.Output(display_name="profile", tooltip="The saved profile, for STAS Model Patch's profile input."),
                io.String.Output(display_name="info", tooltip="Where it was saved, and its blocks and channels."),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, recording, latent, filename, threshold, top_k, overwrite) -> io.NodeOutput:
        path = profile_path(filename, "Save MA Profile")
        run = recording.run_for(latent["samples"], who="Save MA Profile")
        try:
            prof = profile_from_run(run, threshold, top_k)
        except ValueError as e:
            raise ValueError(f"Save MA Profile: {e}") from None
        lay = run.layout
        info = {"model": lay.model, "threshold": f"{threshold:g}", "steps": str(list(run.recorded_steps())),
                "latent": "x".join(map(str, lay.latent_shape))}
        ckpt = node_model_file(cls)
        if ckpt:
            info["checkpoint"] = ckpt  # named when a model refuses the profile
        prof = dataclasses.replace(prof, info=info, fingerprint=recording.model_fingerprint)
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"Save MA Profile: {path} exists; choose another filename or turn on overwrite.")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        prof.save(path)
        text = f"Saved {path}\n{prof.describe()}"
        return io.NodeOutput(prof, text)
