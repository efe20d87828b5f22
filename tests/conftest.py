import sys
from pathlib import Path

# Unit tests import the pure-torch core as a top-level package; integration tests reach
# the pack's own modules through the module ComfyUI registered (see comfy_env.pack_module).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
