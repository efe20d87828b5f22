"""The weight fingerprint of a ComfyUI MODEL, for MA profiles (``stas_core.profile.ModelFingerprint``).

Reads the checkpoint's own weights: when ComfyUI has patched a weight in place (a LoRA or a
merge applied while the model is loaded), the original kept in the ModelPatcher's backup is
read instead, so a profile is tied to the checkpoint and keeps working under a LoRA.
"""
from __future__ import annotations

from typing import Any

from ..stas_core.profile import ModelFingerprint


def model_fingerprint(model: Any) -> ModelFingerprint:
    """Fingerprint of the diffusion model of ``model`` (a ModelPatcher); cheap: shapes plus a few 1-D tensors."""
    dm = model.get_model_object("diffusion_model")
    backup = getattr(model, "backup", None) or {}

    def original(name, p):
        bk = backup.get("diffusion_model." + name)
        return p if bk is None else bk.weight

    # GGUF tensors carry their logical shape in tensor_shape.
    return ModelFingerprint.of((n, tuple(getattr(p, "tensor_shape", None) or p.shape), original(n, p))
                               for n, p in dm.named_parameters())
