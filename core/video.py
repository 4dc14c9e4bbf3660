"""mp4 videos of evaluation episodes."""

from __future__ import annotations

import os
import warnings

import numpy as np


def check_writer() -> None:
    """Stops a run that saves videos before any work when the mp4 writer (imageio-ffmpeg, a dependency of
    pixax) is missing: imageio would otherwise pick another writer and fail at the first evaluation."""
    import importlib.util

    if importlib.util.find_spec("imageio_ffmpeg") is None:
        raise RuntimeError("save_video needs the imageio-ffmpeg package to write mp4 files: install it "
                           "(pip install imageio-ffmpeg==0.8.1) or pass --config.save_video=False")


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
