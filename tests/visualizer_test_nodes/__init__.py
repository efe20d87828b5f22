"""Test-only ComfyUI node for the MA Visualizer browser test: plants known massive activations
into one block output of a (tiny, random-weight) Wan model, so the in-node chart and the
screenshots show the hierarchy the paper describes (first latent frame > head/tail token rows
of later frames > interior). Linked into the test server's custom_nodes by
tests/test_web_visualizer.py; never shipped with the pack.

Independent of the pack on purpose: it computes the token layout itself.
"""
import torch


class _PlantMA:
    def __init__(self, hw, block_channels, levels):
        self.hw, self.channels, self.levels = hw, block_channels, levels

    def __deepcopy__(self, memo):  # older ComfyUI deep-copies model_options on clone()
        return self

    def __call__(self, args, extra):
        out = extra["original_block"](args)
        img = out["img"]
        h, w = self.hw
        frame = h * w
        t = img.shape[1] // frame
        first, edge, inner = self.levels
        lv = torch.full((t, h, w), inner, dtype=img.dtype, device=img.device)
        lv[1:, 0, :] = edge
        lv[1:, -1, :] = edge
        lv[0] = first
        lv = lv.reshape(-1)
        for i, c in enumerate(self.channels):
            img[:, : t * frame, c] = lv * (1 if i % 2 == 0 else -1)
        return out


class STASTestPlantMA:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "latent": ("LATENT",),
            "block": ("INT", {"default": 2, "min": 0, "max": 64}),
        }}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "plant"
    CATEGORY = "_stas_test"

    def plant(self, model, latent, block):
        _, _, _, h, w = latent["samples"].shape
        m = model.clone()
        m.set_model_patch_replace(_PlantMA((h // 2, w // 2), (17, 99), (1000.0, 400.0, 100.0)),
                                  "dit", "double_block", block)
        return (m,)


NODE_CLASS_MAPPINGS = {"STASTestPlantMA": STASTestPlantMA}
