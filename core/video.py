"""mp4 videos of evaluation episodes."""

from __future__ import annotations

import os
import warnings

import numpy as np


def write_mp4(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """Writes uint8 RGB frames (H, W, 3) to `path` (written to a temporary name, then renamed). In a run over
    several processes only process 0 writes (the others render the same episodes)."""
    from core.logging import is_main_process

    if not frames or not is_main_process():
        return
    import imageio.v2 as imageio

    os.makedirs(os.path.dirname(path), exist_ok=True)
    # Video codecs want sides divisible by 16; pad with edge pixels rather than rescale.
    h, w = frames[0].shape[:2]
    ph, pw = (-h) % 16, (-w) % 16
    tmp = path + ".tmp.mp4"
    with warnings.catch_warnings(), imageio.get_writer(tmp, fps=fps, macro_block_size=1) as writer:
        # ffmpeg runs as a child process (fork+exec, no Python in the child): JAX's fork warning does not apply.
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        for frame in frames:
            if ph or pw:
                frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
            writer.append_data(np.asarray(frame, np.uint8))
    os.replace(tmp, path)
