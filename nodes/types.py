"""Custom socket types of the pack (V3 ``io.Custom``), declared once and imported by nodes."""
from comfy_api.latest import io

StasMask = io.Custom("STAS_MASK")        # a stas_core.layout.BoundarySpec
StasProfile = io.Custom("STAS_PROFILE")  # a stas_core.profile.MAProfile
StasRecording = io.Custom("STAS_RECORDING")  # a stas_core.record.Recording (MA Recorder -> MA Visualizer)
