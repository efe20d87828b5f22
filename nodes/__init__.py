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
from .sweep import StasSweep, StasSweepCustom

NODES: list[type[io.ComfyNode]] = [StasModelPatch, BoundaryMaskBuilder, MARecorder, MAVisualizer, SaveMAProfile,
                                   LoadMAProfile, TemporalSeamMeter, StasSweep, StasSweepCustom]

# Words the frontend's node search also matches (ComfyUI >= 0.33 with frontend >= 1.49; older
# schemas have no search_aliases): "massive" or "activation" finds every node that works with
# massive activations (MAs).
SEARCH_ALIASES: dict[type[io.ComfyNode], list[str]] = {
    StasModelPatch: ["structured activation steering", "massive activation steering", "video boundary fix"],
    StasModelPatchRay: ["massive activation steering", "raylight multi-gpu"],
    MARecorder: ["massive activation recorder", "record activations"],
    MAVisualizer: ["massive activation visualizer", "activation plot"],
    SaveMAProfile: ["save massive activation profile", "activation channels"],
    LoadMAProfile: ["load massive activation profile", "activation channels"],
    BoundaryMaskBuilder: ["steering mask", "first frame boundary tokens"],
    TemporalSeamMeter: ["video seam flicker metric", "vae chunk seams"],
    StasSweep: ["tune massive activation steering", "find stas settings", "a/b sweep"],
    StasSweepCustom: ["tune massive activation steering", "stas sweep guider sigmas"],
}


def _with_search_aliases(node: type[io.ComfyNode], aliases: list[str]) -> None:
    define = node.define_schema.__func__

    def define_schema(cls) -> io.Schema:
        schema = define(cls)
        if hasattr(schema, "search_aliases"):
            schema.search_aliases = list(aliases)
        return schema

    node.define_schema = classmethod(define_schema)


for _node, _aliases in SEARCH_ALIASES.items():
    _with_search_aliases(_node, _aliases)

NODES.append(StasModelPatchRay)  # STAS Model Patch (Ray): raylight multi-GPU workers (docs/multigpu.md)


class StasExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> StasExtension:
    return StasExtension()
