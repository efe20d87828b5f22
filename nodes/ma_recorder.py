"""MA Recorder: MODEL in, a recording clone and its STAS_RECORDING out."""
from __future__ import annotations

from comfy_api.latest import io

from ..stas_core.channels import parse_channels
from ..stas_core.record import Recording, parse_steps
from .families import family_of, select_blocks
from .fingerprint import model_fingerprint
from .guiders import PROMPTS
from .recorder_patch import RecorderPlan, prompt_ids
from .types import StasRecording, named_errors


class MARecorder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASMARecorder",
            display_name="MA Recorder (STAS)",
            category="model_patches/stas",
            description="Records the massive activations of chosen blocks and steps while a sampler runs this MODEL "
                        "(after STAS Model Patch: before and after steering too). Feed the recording and the sampler's "
                        "LATENT to MA Visualizer or Save MA Profile.",
            inputs=[
                io.Model.Input("model", tooltip="Video model to record, patched by STAS or not (cloned, never changed)."),
                io.String.Input("blocks", default="middle",
                                tooltip="Blocks to record: 'middle', '15', '10-20', '0,5,9', 'all' or -1 (the last)."),
                io.String.Input("steps", default="all",
                                tooltip="Steps to record: 'all', '0', '0-9', '0,5,10' or -1 (the last)."),
                io.Combo.Input("record", options=list(PROMPTS), default="cond",
                               tooltip="Guider pass to record: cond, uncond or both (twice the memory)."),
                io.String.Input("channels", default="auto",
                                tooltip="Channels kept per token: 'auto' (the strongest) or a list like '12,407'."),
                io.Int.Input("top_k", default=4, min=1, max=64,
                             tooltip="auto channels: how many channels to record per token."),
                io.Int.Input("token_stride", default=0, min=0, max=64,
                             tooltip="Keep every n-th token row and column of each frame (0 = auto)."),
                io.Int.Input("max_memory_mb", default=256, min=1, max=65536,
                             tooltip="CPU memory cap for all kept runs together."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The recording clone: connect it to the sampler."),
                StasRecording.Output(display_name="recording",
                                     tooltip="What the sampler's runs recorded, for MA Visualizer or Save MA Profile."),
            ],
        )

    @classmethod
    def execute(cls, model, blocks, steps, record, channels, top_k, token_stride, max_memory_mb) -> io.NodeOutput:
        with named_errors("MA Recorder"):
            dm = model.get_model_object("diffusion_model")
            fam = family_of(dm)
            try:
                refs = select_blocks(fam, dm, blocks)
            except ValueError as e:
                if "no block selected" not in str(e):
                    raise
                raise ValueError(f"blocks {blocks!r} selects no block, so nothing would be recorded. Use 'middle', an "
                                 f"index or a range ({fam.name}: {fam.describe_blocks(dm)}).") from None
            parse_steps(steps, 1 << 20)  # syntax only; the run's own length is known when it starts
            if record not in PROMPTS:
                raise ValueError(f"record must be one of {list(PROMPTS)}, got {record!r}.")
            sel = parse_channels(channels, 0.0, top_k)
            hidden = fam.hidden_size(dm)
            sel.validate(hidden)
            if token_stride < 0 or max_memory_mb < 1:
                raise ValueError("token_stride must be >= 0 and max_memory_mb >= 1.")
            desc = f"{fam.name} blocks {[r.flat for r in refs]}, steps {steps!r}, {record}"
            recording = Recording(desc, budget_bytes=int(max_memory_mb) << 20,
                                  model_fingerprint=model_fingerprint(model))
            plan = RecorderPlan(
                family=fam, blocks=tuple(refs), steps_text=steps, prompts=prompt_ids(record), channels=sel.explicit,
                top_k=int(top_k), token_stride=int(token_stride), budget_bytes=int(max_memory_mb) << 20,
                hidden_size=hidden, n_blocks=len(fam.blocks(dm)), recording=recording)
        return io.NodeOutput(plan.install(model), recording)
