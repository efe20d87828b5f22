"""Load MA Profile: a saved massive-activation profile -> STAS_PROFILE for STAS Model Patch."""
from __future__ import annotations

import dataclasses
import os

from comfy_api.latest import io

from ..stas_core.profile import MAProfile
from .types import StasProfile

PROFILE_FOLDER = "stas_profiles"
"""folder_paths name of the profiles folder: ComfyUI's models/stas_profiles by default; more
folders can be added under this key in extra_model_paths.yaml."""


def profile_folders() -> list[str]:
    """Register (once, idempotent) and return the profile folders; the first is where profiles are saved."""
    import folder_paths

    default = os.path.join(folder_paths.models_dir, PROFILE_FOLDER)
    if PROFILE_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[PROFILE_FOLDER] = ([default], {".safetensors"})
    else:
        paths, exts = folder_paths.folder_names_and_paths[PROFILE_FOLDER]
        if default not in paths:
            paths.insert(0, default)
        if isinstance(exts, set):
            exts.add(".safetensors")
    return folder_paths.get_folder_paths(PROFILE_FOLDER)


def profile_names() -> list[str]:
    import folder_paths

    profile_folders()
    return folder_paths.get_filename_list(PROFILE_FOLDER)


class LoadMAProfile(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASLoadMAProfile",
            display_name="Load MA Profile (STAS)",
            category="model_patches/stas",
            description="Loads an MA profile saved by Save MA Profile from ComfyUI/models/stas_profiles. Connect it to STAS "
                        "Model Patch's profile input to steer its calibrated channels.",
            inputs=[
                io.Combo.Input("profile_name", options=profile_names(),
                               tooltip="A profile saved by Save MA Profile in models/stas_profiles."),
            ],
            outputs=[
                StasProfile.Output(display_name="profile", tooltip="For STAS Model Patch's profile input, on the recorded model only."),
                io.String.Output(display_name="info", tooltip="The profile's model, blocks and channels."),
            ],
        )

    @classmethod
    def execute(cls, profile_name) -> io.NodeOutput:
        import folder_paths

        profile_folders()
        path = folder_paths.get_full_path(PROFILE_FOLDER, profile_name)
        if path is None:
            raise ValueError(f"Load MA Profile: {profile_name!r} is not in {profile_folders()}. Save one with Save MA "
                             "Profile, or copy a profile .safetensors there and refresh.")
        try:
            prof = MAProfile.load(path)
        except ValueError as e:
            raise ValueError(f"Load MA Profile: {e}") from None
        except Exception as e:  # not a safetensors file at all
            raise ValueError(f"Load MA Profile: cannot read {path}: {type(e).__name__}: {e}. Save the profile again "
                             "with Save MA Profile, or pick another.") from None
        prof = dataclasses.replace(prof, info={**prof.info, "file": profile_name})  # named when a model refuses it
        return io.NodeOutput(prof, prof.describe())
