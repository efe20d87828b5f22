"""MA Recorder: MODEL in, a recording clone and its STAS_RECORDING out."""
from __future__ import annotations

from comfy_api.latest import io

from ..stas_core.channels import parse_channels
from ..stas_core.record import Recording, parse_steps
from .families import family_of, select_blocks
from .fingerprint import model_fingerprint
from .recorder_patch import RecorderPlan, chunk_ids, install_recorder
from .types import StasRecording

RECORD = ("cond", "uncond", "both")


class MARecorder(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="STASMARecorder",
            display_name="MA Recorder (STAS)",
            category="model_patches/stas",
            description="Record the massive activations of chosen blocks and denoising steps while any sampler runs "
                        "this MODEL. Place it after STAS Model Patch to also record values before and after steering. "
                        "Connect the recording and the sampler's LATENT output to MA Visualizer or Save MA Profile.",
            inputs=[
                io.Model.Input("model", tooltip="A Wan, HunyuanVideo or CogVideoX model, patched by STAS or not. It is cloned, never changed."),
                io.String.Input("blocks", default="middle",
                                tooltip="Blocks to record: 'middle', an index '15', a range '10-20', a list '0,5,9', or 'all'. HunyuanVideo counts double-stream blocks first, then single-stream."),
                io.String.Input("steps", default="all",
                                tooltip="Denoising steps to record, counted in this sampler's schedule: 'all', '0', '0-9', '0,5,10'; -1 is the last step. Steps past the end are skipped; selecting none is an error."),
                io.Combo.Input("record", options=list(RECORD), default="cond",
                               tooltip="Which prompt's pass to record, under any guider (as STAS Model Patch's apply_to): cond = the positive prompt (DualCFGGuider's cond1), uncond = the negative prompt, or both (twice the memory)."),
                io.String.Input("channels", default="auto",
                                tooltip="Channels whose per-token values are recorded: 'auto' = the top_k by peak-to-mean ratio at the first recorded step of each block, or a list like '12,407'. Per-channel statistics are always recorded for every channel."),
                io.Int.Input("top_k", default=4, min=1, max=64,
                             tooltip="auto channels: how many channels to record per token."),
                io.Int.Input("token_stride", default=0, min=0, max=64,
                             tooltip="Token subsampling: keep every n-th token row and column of each latent frame (first and last rows always kept). 0 = auto: every token up to 32768 per block call, else the smallest stride that fits."),
                io.Int.Input("max_memory_mb", default=256, min=1, max=65536,
                             tooltip="Upper bound of the recording in CPU memory (all kept runs together). A run that would need more is refused before its first step, with the sizes to change."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The recording clone: connect it to the sampler."),
                StasRecording.Output(display_name="recording",
                                     tooltip="What the sampler's runs recorded: connect to MA Visualizer or Save MA Profile, together with the sampler's LATENT output."),
            ],
        )

    @classmethod
    def execute(cls, model, blocks, steps, record, channels, top_k, token_stride, max_memory_mb) -> io.NodeOutput:
        dm = model.get_model_object("diffusion_model")
        fam = family_of(dm)
        try:
            refs = select_blocks(fam, dm, blocks)
        except ValueError as e:
            msg = str(e)
            if "no block selected" in msg:
                msg = (f"blocks {blocks!r} selects no block, so nothing would be recorded. Use 'middle', an index or "
                       f"a range ({fam.name}: {fam.describe_blocks(dm)}).")
            raise ValueError(f"MA Recorder: {msg}") from None
        try:
            parse_steps(steps, 1 << 20)  # syntax only; the run's own length is known when it starts
        except ValueError as e:
            raise ValueError(f"MA Recorder: {e}") from None
        if record not in RECORD:
            raise ValueError(f"MA Recorder: record must be one of {list(RECORD)}, got {record!r}.")
        sel = parse_channels(channels, 0.0, top_k)
        hidden = fam.hidden_size(dm)
        sel.validate(hidden)
        if token_stride < 0 or max_memory_mb < 1:
            raise ValueError("MA Recorder: token_stride must be >= 0 and max_memory_mb >= 1.")
        desc = f"{fam.name} blocks {[r.flat for r in refs]}, steps {steps!r}, {record}"
        recording = Recording(desc, budget_bytes=int(max_memory_mb) << 20, model_fingerprint=model_fingerprint(model))
        plan = RecorderPlan(
            family=fam, blocks=tuple(refs), steps_text=steps, chunks=chunk_ids(record), channels=sel.explicit,
            top_k=int(top_k), token_stride=int(token_stride), budget_bytes=int(max_memory_mb) << 20,
            hidden_size=hidden, n_blocks=len(fam.blocks(dm)), recording=recording)
        return io.NodeOutput(install_recorder(model, plan), recording)
