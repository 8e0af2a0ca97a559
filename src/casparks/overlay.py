"""The overlay movie: the recording in grey with every event voxel tinted by its class colour.

A detection is easiest to judge by watching it. :func:`overlay_chunk` turns frames of a movie
and their class labels into RGB (uint8 T×Y×X×3): the recording contrast-stretched between robust
percentiles (:func:`contrast_limits`, from a sample of frames so a memory-mapped movie is not
read twice) and event voxels blended with :data:`casparks.classes.CLASS_COLORS`. Writers stream
chunks of frames (``chunk_frames``), so a long movie never needs its whole RGB copy in memory:

- :func:`write_overlay_tiff`: an ImageJ RGB hyperstack with the pixel size (µm) and frame
  interval, readable by Fiji/ImageJ, napari and tifffile;
- :func:`write_overlay_mp4`: H.264 through the ffmpeg inside the ``imageio-ffmpeg`` wheel (the
  optional ``video`` extra; :func:`mp4_available` says whether it is there). Sizes are padded to
  even numbers (yuv420p needs them), small frames are enlarged by an integer factor (nearest
  neighbour, pixels stay sharp) so the longer side is at least ``min_size_px``, and playback runs
  at real time capped at ``max_fps`` frames per second (a 6.8 ms movie, 147 frames/s, plays 4.9×
  slower than real time at 30 fps: sparks last a few frames and would flash by otherwise).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Iterator

import numpy as np

from .classes import CLASS_COLORS, EVENT_CLASSES

log = logging.getLogger(__name__)

__all__ = ["contrast_limits", "mp4_available", "mp4_settings", "overlay_chunk", "overlay_frames",
           "write_overlay_mp4", "write_overlay_tiff"]

#: frames converted to RGB at once by the writers (64 × 64 × 512 × 3 bytes = 6 MB)
CHUNK_FRAMES = 64


def contrast_limits(data: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.8),
                    max_frames: int = 64) -> tuple[float, float]:
    """Robust display range of a movie: percentiles of up to ``max_frames`` evenly spaced frames.

    Percentiles rather than min/max, so a few hot pixels do not turn the recording black.
    """
    data = np.asarray(data) if not isinstance(data, np.ndarray) else data
    step = max(1, math.ceil(data.shape[0] / max_frames))
    sample = np.asarray(data[::step], dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi


def overlay_chunk(frames: np.ndarray, class_label: np.ndarray, limits: tuple[float, float],
                  alpha: float = 0.55) -> np.ndarray:
    """RGB (uint8 t×Y×X×3) of ``frames`` in grey with event voxels blended with their class colour.

    ``class_label`` has the frames' shape; codes other than spark, wave and puff stay grey.
    """
    lo, hi = limits
    grey = (np.asarray(frames, dtype=np.float32) - lo) * np.float32(255.0 / (hi - lo))
    np.clip(grey, 0, 255, out=grey)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    labels = np.asarray(class_label)
    for code in EVENT_CLASSES:
        mask = labels == code
        if mask.any():
            color = np.asarray(CLASS_COLORS[code], dtype=np.float32)
            rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
    return (rgb + 0.5).astype(np.uint8)


def overlay_frames(data: np.ndarray, class_label: np.ndarray, limits: tuple[float, float] | None = None,
                   chunk_frames: int = CHUNK_FRAMES, alpha: float = 0.55) -> Iterator[np.ndarray]:
    """Yield the overlay chunk by chunk (each ``chunk_frames``×Y×X×3 uint8, the last shorter)."""
    if tuple(np.shape(class_label)) != tuple(np.shape(data)):
        raise ValueError(f"class labels {np.shape(class_label)} and movie {np.shape(data)} differ in shape")
    limits = contrast_limits(data) if limits is None else limits
    for start in range(0, data.shape[0], chunk_frames):
        stop = min(data.shape[0], start + chunk_frames)
        yield overlay_chunk(data[start:stop], class_label[start:stop], limits, alpha)


def write_overlay_tiff(path: str | Path, data: np.ndarray, class_label: np.ndarray, pixel_size_um: float,
                       frame_interval_ms: float, overwrite: bool = False, limits: tuple[float, float] | None = None,
                       chunk_frames: int = CHUNK_FRAMES) -> Path:
    """Write the overlay as an ImageJ RGB hyperstack (T×Y×X×3 uint8, µm and s), atomically, streamed."""
    import tifffile

    from .io import atomic_output

    T, H, W = data.shape

    def pages() -> Iterator[np.ndarray]:
        for chunk in overlay_frames(data, class_label, limits, chunk_frames):
            yield from chunk

    path = Path(path)
    with atomic_output(path, overwrite) as tmp, tifffile.TiffWriter(tmp, imagej=True) as tif:
        tif.write(pages(), shape=(T, H, W, 3), dtype=np.uint8, photometric="rgb",
                  resolution=(1.0 / pixel_size_um, 1.0 / pixel_size_um),
                  metadata={"axes": "TYXS", "unit": "um", "finterval": frame_interval_ms / 1000.0})
    return path


def mp4_available() -> bool:
    """Whether the ffmpeg shipped by the ``imageio-ffmpeg`` wheel can be used."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:  # noqa: BLE001 - not installed, or no binary for this platform
        return False
    return True


def mp4_settings(shape_tyx: tuple[int, int, int], frame_interval_ms: float, min_size_px: int = 960,
                 max_fps: float = 30.0) -> dict[str, float | int]:
    """Scale factor, padded size and playback rate of the MP4 of a movie of this shape and timing.

    Returns ``scale`` (integer), ``width`` and ``height`` (even, after scaling), ``fps`` and
    ``slowdown`` (real time / playback time, ≥ 1).
    """
    _, H, W = shape_tyx
    scale = max(1, min(8, math.ceil(min_size_px / max(H, W, 1))))
    real_fps = 1000.0 / frame_interval_ms
    fps = min(real_fps, max_fps)
    return {"scale": scale, "width": W * scale + (W * scale) % 2, "height": H * scale + (H * scale) % 2,
            "fps": fps, "slowdown": real_fps / fps}


def write_overlay_mp4(path: str | Path, data: np.ndarray, class_label: np.ndarray, frame_interval_ms: float,
                      overwrite: bool = False, limits: tuple[float, float] | None = None, min_size_px: int = 960,
                      max_fps: float = 30.0, chunk_frames: int = CHUNK_FRAMES) -> Path:
    """Write the overlay as an H.264 MP4 (see the module docstring for size and rate), atomically."""
    import imageio_ffmpeg

    from .io import atomic_output

    _, H, W = data.shape
    video = mp4_settings(data.shape, frame_interval_ms, min_size_px, max_fps)
    scale, width, height = int(video["scale"]), int(video["width"]), int(video["height"])
    path = Path(path)
    with atomic_output(path, overwrite) as tmp:
        # ffmpeg picks the container from the suffix: the temporary name ends in .part
        target = tmp.with_name(tmp.name + ".mp4")
        writer = None
        try:
            # veryfast: half the encoding time of x264's default for the same size on noisy movies;
            # faststart: the index first, so a browser starts playing before the whole file is read
            writer = imageio_ffmpeg.write_frames(str(target), (width, height), fps=video["fps"], codec="libx264",
                                                 macro_block_size=1, quality=5, ffmpeg_log_level="error",
                                                 output_params=["-preset", "veryfast", "-movflags", "+faststart"])
            writer.send(None)
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            for chunk in overlay_frames(data, class_label, limits, chunk_frames):
                big = chunk.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else chunk
                for image in big:
                    frame[: H * scale, : W * scale] = image
                    writer.send(frame)
            writer.close()
            target.replace(tmp)
        finally:
            if writer is not None:  # stop ffmpeg first: removed under it, its file came back
                writer.close()      # (an interrupted report left a hidden .part.mp4)
            if target.exists():
                target.unlink()
    return path
