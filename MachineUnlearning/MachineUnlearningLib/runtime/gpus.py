"""The CUDA GPUs this torch build sees, with their free memory (``machine-unlearning devices``).

Runs in the worker process: the Slicer module asks through ``app/queries.py`` so that Slicer's
own process never imports torch or creates a CUDA context just to fill its device list.
"""

from __future__ import annotations

import torch


def list_gpus() -> list[dict]:
    """One dict per GPU: ``index``, ``name``, ``free_bytes``, ``total_bytes`` (bytes)."""
    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(index)
            gpus.append(
                {
                    "index": index,
                    "name": torch.cuda.get_device_name(index),
                    "free_bytes": int(free),
                    "total_bytes": int(total),
                }
            )
    return gpus
