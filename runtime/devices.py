"""The one rule for where a model runs and in what precision, shared by serving and training.

cuda when available, else cpu. On cuda bf16 where the GPU has it, otherwise fp32: never fp16, because
Flan-T5 overflows in fp16 (FACTS: NaN losses). On cpu fp32: bf16 matmuls are slow there.
"""

from __future__ import annotations

import torch


def pick_device(name: str | torch.device | None = None) -> torch.device:
    """`name` ("auto"/None -> cuda when available, else cpu); asking for cuda without CUDA is an error."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(name)!r} was asked for but CUDA is not available")
    return device


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU that has it, else fp32."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
