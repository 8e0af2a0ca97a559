"""Write Zeiss LSM files for the tests, as an LSM 510/710/880 stores an x-y-t time series.

tifffile reads LSM but does not write it, and no LSM file may be downloaded. The layout here is
the one tifffile's LSM reader expects of Zeiss's files: the first page carries the CZ_LSMINFO
structure (tag 34412: dimensions, voxel size in metres, time interval in seconds, scan type 3 =
a time series of x-y planes, optionally an offset to a block of time stamps in seconds); every
frame page (all channels as separate planes) is followed by a reduced-resolution thumbnail page.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import tifffile
from tifffile import TIFF

LSM_MAGIC = 67127628  # LSM 3.0 and later
SCAN_TYPE_XYT = 3  # 'Time Series Plane': axes TCYX


def write_lsm(path: Path, frames: np.ndarray, voxel_size_m: tuple[float, float] = (0.2e-6, 0.2e-6),
              time_interval_s: float = 0.0068, time_stamps_s: np.ndarray | None = None, thumbnail: int = 8,
              scan_type: int = SCAN_TYPE_XYT) -> Path:
    """Write ``frames`` (T×Y×X, or T×C×Y×X) as a Zeiss LSM file; ``time_interval_s`` 0 leaves
    the interval to the time stamps, as Zeiss's software does for "as fast as possible" scans.
    ``scan_type`` 2 with one row writes a line scan (x-t: its "frames" are lines)."""
    data = frames[:, None] if frames.ndim == 3 else frames
    t, c, y, x = data.shape
    layout = np.dtype(TIFF.CZ_LSMINFO)
    info = np.zeros((), layout)
    info["MagicNumber"], info["StructureSize"] = LSM_MAGIC, layout.itemsize
    info["DimensionX"], info["DimensionY"], info["DimensionZ"] = x, y, 1
    info["DimensionChannels"], info["DimensionTime"] = c, t
    info["ThumbnailX"] = info["ThumbnailY"] = thumbnail
    info["VoxelSizeX"], info["VoxelSizeY"], info["VoxelSizeZ"] = (*voxel_size_m, 1e-6)
    info["ScanType"], info["TimeIntervall"] = scan_type, time_interval_s
    block = info.tobytes()
    if time_stamps_s is not None:
        stamps = np.asarray(time_stamps_s, "<f8")
        block += struct.pack("<ii", 8 + 8 * stamps.size, stamps.size) + stamps.tobytes()
    thumb = np.zeros((thumbnail, thumbnail), np.uint8)
    with tifffile.TiffWriter(path) as tif:
        for k in range(t):
            extratags = [(34412, 1, len(block), block, True)] if k == 0 else []
            tif.write(data[k] if c > 1 else data[k, 0], photometric="minisblack", contiguous=False, metadata=None,
                      planarconfig="separate" if c > 1 else None, extratags=extratags)
            tif.write(thumb, subfiletype=1, photometric="minisblack", contiguous=False, metadata=None)
    if time_stamps_s is not None:  # point the structure's OffsetTimeStamps at the block behind it
        with tifffile.TiffFile(path) as tif:
            start = tif.pages[0].tags[34412].valueoffset
        with open(path, "r+b") as f:
            f.seek(start + layout.fields["OffsetTimeStamps"][1])
            f.write(struct.pack("<I", start + layout.itemsize))
    return path
