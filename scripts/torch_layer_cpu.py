"""Imported at start-up by the testbeds' .pth when their shared torch is the CPU layer (build_testbeds.sh).

That layer has PyPI's torchvision without its compiled ops (they link CUDA and cannot load beside a CPU
torch). torchvision then still registers fake kernels for two ops, which fails unless they exist, so the
two schemas are defined just before torchvision is imported. Calling them raises, as any torchvision op
does without its extension; torch is not imported until torchvision is.
"""
import importlib.abc
import sys

_LIBRARIES = []  # keeps the definitions alive


class _DefineTorchvisionOps(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            sys.meta_path.remove(self)
            import torch

            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _LIBRARIES.append(lib)
        return None


sys.meta_path.insert(0, _DefineTorchvisionOps())
