"""Random-shift augmentation of frame stacks (DrQ, Kostrikov et al. 2020; DrQ-v2).

Pad every stack by `pad` pixels, repeating the edge pixels, and crop it back to its size at a
random offset. Why: a CNN trained on a few thousand frames over-fits their exact pixel positions;
small shifts regularize its features (the best of the image augmentations DrQ compared).
Integer shifts, so the crop is exact (DrQ-v2's bilinear grid_sample at integer offsets gives the
same pixels) and works on the uint8 frames, before they are normalized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["random_shift"]


def random_shift(frames: torch.Tensor, pad: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, C, H, W) -> a new tensor of the same shape, dtype and device.

    Sample b is moved by one integer (dy, dx) drawn uniformly from [-pad, pad]^2, all C frames of
    its stack together; pixels moved in from outside repeat the nearest edge pixel. pad=0 returns
    `frames` itself. Random draws come from `generator` (so a checkpointed generator resumes them).
    """
    if frames.dim() != 4:
        raise ValueError(f"frames must be (B, C, H, W), got {tuple(frames.shape)}")
    if not (isinstance(pad, int) and pad >= 0):
        raise ValueError(f"pad must be an integer >= 0, got {pad!r}")
    if pad == 0:
        return frames
    b, c, h, w = frames.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=frames.device)
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    s_b, s_c, s_h, s_w = padded.stride()
    # Every crop of every sample as one view: crops[b, y, x] = padded[b, :, y:y + h, x:x + w].
    crops = padded.as_strided((b, 2 * pad + 1, 2 * pad + 1, c, h, w), (s_b, s_h, s_w, s_c, s_h, s_w))
    return crops[torch.arange(b, device=frames.device), offsets[0], offsets[1]]
