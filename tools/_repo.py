"""``from _repo import ROOT`` first thing in a script of this folder run as ``python3 <folder>/<script>.py``:
puts the repository root on sys.path, so stas_harness, stas_core and tools.<name> import as under
pytest (pyproject's pythonpath). The same file is in bench/, tools/ and scripts/; see stas_harness/__init__.py."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
