"""The weight fingerprint of a ComfyUI MODEL, for MA profiles (``stas_core.profile.ModelFingerprint``).

Reads the checkpoint's own weights: when ComfyUI has patched a weight in place (a LoRA or a
merge applied while the model is loaded), the original kept in the ModelPatcher's backup is
read instead, so a profile is tied to the checkpoint and keeps working under a LoRA. Also the file a
MODEL in a graph was loaded from (model_file), which a refused profile's message names.
"""
from __future__ import annotations

from typing import Any, Optional

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


MODEL_FILE_EXTS = (".safetensors", ".gguf", ".ckpt", ".pt", ".pth", ".sft", ".bin")
_FOLLOW = ("model", "recording")  # inputs a model travels through: patch nodes, MA Recorder -> Save MA Profile


def model_file(prompt: Any, node_id: Any) -> Optional[str]:
    """The file the MODEL reaching node ``node_id`` of an API ``prompt`` was loaded from (followed upstream through
    its ``model`` / ``recording`` inputs to the first node without one: the loader), else None."""
    seen, nid = set(), None if node_id is None else str(node_id)
    while isinstance(prompt, dict) and nid in prompt and nid not in seen:
        seen.add(nid)
        inputs = (prompt[nid] or {}).get("inputs") or {}
        link = next((inputs[k] for k in _FOLLOW if isinstance(inputs.get(k), list) and len(inputs[k]) == 2), None)
        if link is None:
            return next((v for v in inputs.values() if isinstance(v, str) and v.lower().endswith(MODEL_FILE_EXTS)),
                        None)
        nid = str(link[0])
    return None


def node_model_file(node_cls: Any) -> Optional[str]:
    """model_file() for a V3 node class while ComfyUI executes it (hidden prompt and unique_id), else None."""
    hidden = getattr(node_cls, "hidden", None)
    return model_file(getattr(hidden, "prompt", None), getattr(hidden, "unique_id", None))
