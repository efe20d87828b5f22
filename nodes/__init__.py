"""ComfyUI nodes of comfyui-stas (V3 schema). Imported relatively by the pack's __init__:
ComfyUI has its own top-level ``nodes`` module, so never ``import nodes`` from here."""
from comfy_api.latest import ComfyExtension, io

from .boundary_mask import BoundaryMaskBuilder
from .load_ma_profile import LoadMAProfile
from .ma_recorder import MARecorder
from .ma_visualizer import MAVisualizer
from .save_ma_profile import SaveMAProfile
from .seam_meter import TemporalSeamMeter
from .ray_patch import StasModelPatchRay
from .stas_model_patch import StasModelPatch

NODES: list[type[io.ComfyNode]] = [StasModelPatch, BoundaryMaskBuilder, MARecorder, MAVisualizer, SaveMAProfile,
                                   LoadMAProfile, TemporalSeamMeter]
NODES.append(StasModelPatchRay)  # STAS Model Patch (Ray): raylight multi-GPU workers (docs/multigpu.md)


class StasExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> StasExtension:
    return StasExtension()
