"""Custom socket types of the pack (V3 ``io.Custom``), declared once and imported by nodes."""
from contextlib import contextmanager

from comfy_api.latest import io

StasMask = io.Custom("STAS_MASK")        # a stas_core.layout.BoundarySpec
StasProfile = io.Custom("STAS_PROFILE")  # a stas_core.profile.MAProfile
StasRecording = io.Custom("STAS_RECORDING")  # a stas_core.record.Recording (MA Recorder -> MA Visualizer)


@contextmanager
def named_errors(node: str):
    """Inside: a ValueError's message starts with ``node`` (the name the user sees in the graph)."""
    try:
        yield
    except ValueError as e:
        if str(e).startswith(f"{node}:"):
            raise
        raise ValueError(f"{node}: {e}") from None
