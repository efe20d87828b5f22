"""Two small holders every layer uses: ``Shared`` (one object however often ComfyUI copies the options that
hold it) and ``PerDevice`` (a value built once per key and device)."""
from __future__ import annotations

import threading
from typing import Any


class Shared:
    """Shared by reference across ModelPatcher.clone(), also where it deep-copies model_options: run state,
    plans, patches and per-call contexts are one object, never a copy."""

    def __deepcopy__(self, memo):
        return self

    def __copy__(self):
        return self


class PerDevice(Shared):
    """``make(device)`` built once per (key, device) and kept (a double-checked lock: thread-safe when
    MultiGPU runs passes on several devices at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.built: dict = {}

    def get(self, key: Any, device, make) -> Any:
        k = (key, device)
        got = self.built.get(k)
        if got is None:
            with self._lock:
                got = self.built.get(k)
                if got is None:
                    got = self.built[k] = make(device)
        return got

    def peek(self, key: Any, device) -> Any:
        """What ``get`` built for (key, device), or None (never builds)."""
        return self.built.get((key, device))
