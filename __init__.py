"""comfyui-stas: Structured Activation Steering for video diffusion transformers in ComfyUI.

ComfyUI loads this folder as a custom node package; the nodes live in ``./nodes`` (imported
relatively, because ComfyUI owns the top-level name ``nodes``) and the frontend extension
in ``./web``.
"""
from .nodes import comfy_entrypoint  # noqa: F401

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
