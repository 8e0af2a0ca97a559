"""Movies with physical units, label stacks, and atomic writers for every output.

Every movie carries its pixel size (µm) and frame interval (ms). They come from the TIFF's
ImageJ or OME metadata, a Zeiss LSM file's scan information, the JSON description tifffile
writes, or (pixel size only) a plain TIFF's resolution tags in pixels per cm or inch; explicit
arguments always win (a warning names a movie whose own units they change).
Large uncompressed files are memory-mapped, not copied. Every writer goes through
:func:`atomic_output`, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import tifffile

from .errors import CasparksError
from .paths import home_path

log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
#: what detection reads as a movie: TIFF, and Zeiss LSM (a TIFF with thumbnails between the frames
#: and the scan's units in its own tag, which tifffile reads)
MOVIE_SUFFIXES = (*TIFF_SUFFIXES, ".lsm")

#: µm per length unit, as :func:`_unit_key` gives it (ImageJ's escapes decoded: \u03BCm is μm); µ
#: alone is the micron's own symbol (until 1967), "å" an ångström (Å lowercased), "pm" a picometre
#: (OME's "Pm", a petametre, lowercases to it too: no microscope pixel is one)
_LENGTH_UNITS_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "µ": 1.0, "μ": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometers": 1.0, "micrometre": 1.0, "micrometres": 1.0, "nm": 1e-3, "nanometer": 1e-3,
    "nanometers": 1e-3, "nanometre": 1e-3, "nanometres": 1e-3, "å": 1e-4, "angstrom": 1e-4, "angstroms": 1e-4,
    "ångström": 1e-4, "ångströms": 1e-4, "pm": 1e-6, "picometer": 1e-6, "picometre": 1e-6, "mm": 1e3,
    "millimeter": 1e3, "millimeters": 1e3, "millimetre": 1e3, "millimetres": 1e3, "cm": 1e4, "centimeter": 1e4,
    "centimeters": 1e4, "centimetre": 1e4, "centimetres": 1e4, "m": 1e6, "meter": 1e6, "meters": 1e6,
    "metre": 1e6, "metres": 1e6, "in": 25400.0, "inch": 25400.0, "inches": 25400.0,
}
#: the length unit of an image without a calibration: the pixel size is missing, not in an unknown unit
_UNCALIBRATED = {"", "pixel", "pixels", "px", "reference frame", "referenceframe"}
_TIME_UNITS_MS = {
    "s": 1000.0, "sec": 1000.0, "secs": 1000.0, "second": 1000.0, "seconds": 1000.0, "ms": 1.0,
    "msec": 1.0, "msecs": 1.0, "millisec": 1.0, "millisecs": 1.0, "millisecond": 1.0,
    "milliseconds": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "usec": 1e-3,
    "microsecond": 1e-3, "microseconds": 1e-3, "ns": 1e-6, "nanosecond": 1e-6, "nanoseconds": 1e-6,
    "min": 60000.0, "minute": 60000.0, "minutes": 60000.0, "h": 3.6e6, "hour": 3.6e6, "hours": 3.6e6,
}

#: x and y pixel sizes further apart than this (relative) are not square: casparks refuses them
_SQUARE_TOLERANCE = 0.01


def _unit_key(text: object) -> str:
    """A unit as written in metadata, normalised for lookup ('Millisec.' → 'millisec', ImageJ's
    escape of a non-ASCII character '\\u00B5m' → 'µm')."""
    text = re.sub(r"\\u([0-9a-fA-F]{4})", lambda match: chr(int(match.group(1), 16)), str(text))
    return text.strip().lower().rstrip(".")


def _length_scale(unit: object, path: Path | None, where: str) -> float | None:
    """µm per ``unit``; None for an image without a calibration ('pixel'); an unknown unit is an
    error (read as missing, an Å or a \\u03BCm was reported as not in the file's metadata)."""
    key = _unit_key(unit)
    if key in _UNCALIBRATED:
        return None
    scale = _LENGTH_UNITS_UM.get(key)
    if scale is None:
        raise CasparksError(f"the {where} length unit {str(unit)!r} is not one casparks knows", path=path,
                            fix="pass --pixel-size UM (Python: pixel_size_um=)")
    return scale


def _time_scale(unit: object, path: Path | None, where: str) -> float:
    """ms per ``unit``; an unknown unit is an error (taking it for seconds once made 6.8 ms 6.8 s)."""
    scale = _TIME_UNITS_MS.get(_unit_key(unit))
    if scale is None:
        raise CasparksError(f"the {where} time unit {str(unit)!r} is not one casparks knows", path=path,
                            fix="pass --frame-interval MS (Python: frame_interval_ms=)")
    return scale


def _square(pixel_x: float | None, pixel_y: float | None, path: Path | None) -> float | None:
    """The pixel size, refusing pixels that are not square (every measurement assumes they are)."""
    if pixel_x is None or pixel_y is None or not (pixel_x > 0 and pixel_y > 0):
        return pixel_x
    if abs(pixel_y - pixel_x) > _SQUARE_TOLERANCE * pixel_x:
        raise CasparksError(
            f"its pixels are {pixel_x:.4g} µm wide and {pixel_y:.4g} µm high; casparks needs square pixels",
            path=path, fix="rescale the movie to square pixels (ImageJ: Image > Scale) and save it again",
        )
    return pixel_x


@dataclass(frozen=True)
class Movie:
    """A confocal x-y-t recording: ``data`` is T×Y×X; units travel with it."""

    data: np.ndarray
    pixel_size_um: float
    frame_interval_ms: float
    name: str = "movie"
    source: Path | None = field(default=None, compare=False)
    #: the channel of a multi-channel file this movie was read from (None: a one-channel file)
    channel: int | None = field(default=None, compare=False)
    #: the pixel size was given (a flag, an argument), not read from the file's metadata
    pixel_size_given: bool = field(default=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not hasattr(self.data, "ndim"):  # nested lists, as NumPy reads them (they were an AttributeError)
            object.__setattr__(self, "data", np.asarray(self.data))
        if self.data.ndim != 3:
            raise ValueError(f"a Movie is T×Y×X, got an array of shape {self.data.shape}")
        if np.dtype(self.data.dtype).kind not in "uif":  # a bool mask was detected (11 sparks), as read_movie refuses
            raise ValueError(f"a Movie holds an integer or float image, got pixel type {self.data.dtype}")
        _check_unit(self.pixel_size_um, "pixel size", "µm", self.source)
        _check_unit(self.frame_interval_ms, "frame interval", "ms", self.source)

    def __repr__(self) -> str:
        """One line, not the pixels (a notebook cell printed 49 lines of them)."""
        extra = "".join(f", {key}={value!r}" for key, value in (("channel", self.channel),
                        ("source", str(self.source) if self.source is not None else None)) if value is not None)
        return (f"Movie({self.name!r}, {sampling_text(self.shape, self.pixel_size_um, self.frame_interval_ms)}, "
                f"{np.dtype(self.data.dtype)}{extra})")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def duration_ms(self) -> float:
        return self.data.shape[0] * self.frame_interval_ms

    @property
    def size_um(self) -> tuple[float, float]:
        """Field of view (height, width) in µm."""
        return self.data.shape[1] * self.pixel_size_um, self.data.shape[2] * self.pixel_size_um


def sampling_text(shape: Iterable[int], pixel_size_um: float, frame_interval_ms: float) -> str:
    """'500×64×512 at 0.2 µm, 6.8 ms': a movie's T×Y×X size and units, for one-line reprs."""
    return f"{'×'.join(map(str, shape))} at {pixel_size_um:g} µm, {frame_interval_ms:g} ms"


def _check_unit(value: float, what: str, unit: str, path: Path | None) -> None:
    if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
        raise CasparksError(
            f"the {what} must be a positive number of {unit}, got {value!r}",
            path=path,
            fix=f"pass the {what} in {unit}",
        )


# ----------------------------------------------------------------------------------------------
# reading


def read_units(path: str | Path) -> tuple[float | None, float | None]:
    """Return (pixel size in µm, frame interval in ms) from a TIFF's metadata; None where absent.

    Metadata casparks cannot use (an unknown time unit, pixels that are not square) raises a
    :class:`CasparksError`.
    """
    units = _metadata_units(home_path(path))
    for value in units:
        if isinstance(value, CasparksError):
            raise value
    return units  # type: ignore[return-value]


def _metadata_units(path: Path) -> tuple[float | CasparksError | None, float | CasparksError | None]:
    """(pixel size, frame interval) as :func:`read_units`, with a problem in either returned in
    its place rather than raised, so that a unit the user passes explicitly overrides it."""
    pixel: Any = None
    frame: Any = None
    with _open_tiff(path) as tif:  # each unit from the first reader that has it: an ImageJ file
        for reader in (_units_from_imagej, _units_from_ome, _units_from_lsm, _units_from_shaped,  # with a
                       _units_from_resolution):  # finterval and no unit has its pixel size in the TIFF tags
            found_pixel, found_frame = reader(tif, path)
            pixel = found_pixel if pixel is None else pixel
            frame = found_frame if frame is None else frame
            if pixel is not None and frame is not None:
                break
    return pixel, frame


def _attempt(function: Any, *args: Any) -> Any:
    """``function(*args)``, or the :class:`CasparksError` it raises (to raise later, if needed)."""
    try:
        return function(*args)
    except CasparksError as exc:
        return exc


def _metadata_number(value: Any, path: Path | None, what: str) -> float | None:
    """``value`` as a finite number, or None with a warning naming the file and the value: a
    malformed entry ('0,005' from a decimal comma, 'None') is missing metadata, so that a unit
    given instead applies and, without one, the usual one-line 'not in the metadata' error says
    how to pass it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isfinite(number):
        return number
    _warn_once((str(path), what, repr(value)), "%s: the %s %r in its metadata is not a number; read as missing",
               path, what, value)
    return None


#: (file, what, value) of the metadata problems already named in a warning
_WARNED_METADATA: set[tuple[str, str, str]] = set()


def _warn_once(key: tuple[str, str, str], message: str, *args: Any) -> None:
    """Log a warning about a file's metadata once per (file, what, value): a movie's metadata is
    read more than once per command."""
    if key not in _WARNED_METADATA:
        _WARNED_METADATA.add(key)
        log.warning(message, *args)


def _interval_ms(value: Any, unit: Any, path: Path | None, where: str) -> float:
    return float(value) * _time_scale(unit, path, where)


def _units_page(tif: tifffile.TiffFile, path: Path | None) -> Any:
    """The page whose resolution tags are the movie's: the first of the movie's own series, not
    the file's first page, which may be a preview left out of the movie (72 dpi, read as no pixel
    size). Frames written one call each are read without tif.series (slow on such files)."""
    if len(tif.pages) < 2 or _frames_written_one_by_one(tif):
        return tif.pages.first
    index = _attempt(_movie_series, tif, path)
    return tif.series[index].keyframe if isinstance(index, int) else tif.pages.first


def _resolution_um(page: Any, tag: str, scale: float) -> float | None:
    resolution = page.tags.get(tag)
    if resolution is None:
        return None
    num, den = resolution.value
    return den / num * scale if num > 0 and den > 0 else None


# each reader returns (pixel size µm, frame interval ms): None where absent, a CasparksError where
# the file's metadata cannot be used (raised by read_movie only when no unit is given instead)
def _units_from_imagej(tif: tifffile.TiffFile, path: Path | None = None) -> tuple[Any, Any]:
    meta = tif.imagej_metadata
    if not meta:
        return None, None
    scale = _attempt(_length_scale, meta.get("unit", ""), path, "ImageJ")
    pixel: Any = scale if isinstance(scale, CasparksError) else None
    if isinstance(scale, float):
        page = _units_page(tif, path)
        pixel = _attempt(_square, _resolution_um(page, "XResolution", scale),
                         _resolution_um(page, "YResolution", scale), path)
    frame: Any = None
    # not "fps": ImageJ saves its animation speed there (7 by default), not the recording's rate
    interval = _metadata_number(meta["finterval"], path, "ImageJ finterval") if meta.get("finterval") else None
    if interval is not None:
        frame = _attempt(_interval_ms, interval, meta.get("tunit", "sec"), path, "ImageJ")
    return pixel, frame


def _units_from_ome(tif: tifffile.TiffFile, path: Path | None = None) -> tuple[Any, Any]:
    if not tif.is_ome or not tif.ome_metadata:
        return None, None
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return None, None
    all_pixels = [el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"]
    if not all_pixels:
        return None, None
    # the movie's image when the file holds several series (thumbnails, overviews)
    index = _attempt(_movie_series, tif, path) if len(tif.series) > 1 else 0
    pixels = all_pixels[index] if isinstance(index, int) and index < len(all_pixels) else all_pixels[0]

    def length(axis: str) -> float | None:
        if not pixels.get(f"PhysicalSize{axis}"):
            return None
        scale = _length_scale(pixels.get(f"PhysicalSize{axis}Unit", "µm"), path, "OME")
        size = _metadata_number(pixels.get(f"PhysicalSize{axis}"), path, f"OME PhysicalSize{axis}")
        return float(f"{size * scale:.12g}") if scale is not None and size is not None else None  # 200000 pm: 0.2

    pixel = _attempt(lambda: _square(length("X"), length("Y"), path))
    increment = (_metadata_number(pixels.get("TimeIncrement"), path, "OME TimeIncrement")
                 if pixels.get("TimeIncrement") else None)
    if increment is not None and increment > 0:  # 0: not recorded (some writers), the planes' DeltaT may say
        frame = _attempt(_interval_ms, increment, pixels.get("TimeIncrementUnit", "s"), path, "OME")
    else:
        frame = _attempt(_ome_plane_interval, pixels, path)
    return pixel, frame


def _units_from_lsm(tif: tifffile.TiffFile, path: Path | None = None) -> tuple[Any, Any]:
    """A Zeiss LSM file's units: its CZ_LSMINFO voxel size (m), and the median step of its
    frames' time stamps (s: when they were acquired), else its time interval (s: what was set;
    0 means not set). Where both exist and differ by more than 1 %, a warning names both."""
    if not tif.is_lsm or not tif.lsm_metadata:
        return None, None
    meta = tif.lsm_metadata

    def positive(key: str, scale: float) -> float | None:
        value = _metadata_number(meta.get(key), path, f"LSM {key}") if meta.get(key) is not None else None
        return float(f"{value * scale:.12g}") if value is not None and value > 0 else None  # 2e-07 m: 0.2, not 0.19999999999999998

    pixel_x, pixel_y = positive("VoxelSizeX", 1e6), positive("VoxelSizeY", 1e6)
    pixel = _attempt(_square, pixel_x, pixel_y, path) if pixel_x is not None else None
    interval = positive("TimeIntervall", 1e3)  # sic: the LSM specification's spelling
    stamps = np.asarray(meta.get("TimeStamps", ()), dtype=float).ravel()
    step = float(np.median(np.diff(stamps))) * 1e3 if stamps.size >= 2 else math.nan
    frame = float(f"{step:.12g}") if math.isfinite(step) and step > 0 else interval
    if interval is not None and not math.isclose(frame, interval, rel_tol=UNIT_MISMATCH_TOLERANCE):
        _warn_once((str(path), "LSM time stamps", repr((frame, interval))),
                   "%s: its frames' time stamps are %g ms apart, its set time interval is %g ms; the time stamps' "
                   "step is used (--frame-interval overrides it)", path, frame, interval)
    return pixel, frame


def _ome_plane_interval(pixels: ET.Element, path: Path | None) -> float | None:
    """The median step (ms) between the DeltaT of successive planes, where there is no TimeIncrement."""
    planes = [el for el in pixels if el.tag.endswith("}Plane") or el.tag == "Plane"]
    stamps = {}
    for plane in planes:
        if plane.get("DeltaT") is not None and plane.get("TheZ", "0") == "0" and plane.get("TheC", "0") == "0":
            try:
                t, delta = int(plane.get("TheT", "0")), float(plane.get("DeltaT"))
            except ValueError:  # a malformed plane: the stamps are missing, as for _metadata_number
                log.warning("%s: the OME plane DeltaT %r (TheT %r) is not a number; read as missing", path,
                            plane.get("DeltaT"), plane.get("TheT"))
                return None
            stamps[t] = delta * _time_scale(plane.get("DeltaTUnit", "s"), path, "OME plane")
    if len(stamps) < 2:
        return None
    times = np.array([stamps[t] for t in sorted(stamps)])
    steps = np.diff(times) / np.maximum(np.diff(sorted(stamps)), 1)
    step = float(f"{float(np.median(steps)):.12g}")  # 6.8, not 6.799999999999997 (which --skip-existing compared)
    return step if step > 0 else None


def _units_from_shaped(tif: tifffile.TiffFile, path: Path | None = None) -> tuple[float | None, float | None]:
    """casparks's units in the JSON header tifffile writes, of the movie's own series: a thumbnail
    written before it gave the movie its 0.8 µm (and a thumbnail without units, none). A file of
    frames written one call each is opened without its shaped series: its first page's header."""
    header = _shaped_header(_units_page(tif, path))
    return header.get("pixel_size_um"), header.get("frame_interval_ms")


#: the largest pixel (µm) that plain TIFF resolution tags may give: beyond it (2540 dpi or less)
#: they hold a program's display or print resolution (72, 96, 300 dpi: 85-353 µm), not a microscope's
PLAIN_RESOLUTION_MAX_UM = 10.0
_RESOLUTION_UNITS_UM = {2: 25400.0, 3: 10000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre (1: none)


def _units_from_resolution(tif: tifffile.TiffFile, path: Path | None = None) -> tuple[Any, None]:
    """The pixel size from a plain TIFF's XResolution / YResolution in pixels per cm or inch (no
    frame interval: plain TIFF has none). Read last, where ImageJ, OME and casparks's own JSON are
    silent; a resolution meaning pixels over 10 µm is a display default and is ignored."""
    page = _units_page(tif, path)
    unit = page.tags.get("ResolutionUnit")
    scale = _RESOLUTION_UNITS_UM.get(int(unit.value)) if unit is not None else None
    if scale is None:
        return None, None
    pixel_x, pixel_y = _resolution_um(page, "XResolution", scale), _resolution_um(page, "YResolution", scale)
    if pixel_x is None or pixel_x > PLAIN_RESOLUTION_MAX_UM:
        return None, None
    return _attempt(_square, pixel_x, pixel_y, path), None


@contextlib.contextmanager
def _open_tiff(path: Path) -> Iterator[tifffile.TiffFile]:
    from .projects import is_project_file, project_error  # here: projects imports this module

    if not path.exists():
        raise CasparksError("file not found", path=path, fix="check the path")
    if path.is_dir():
        raise CasparksError("is a folder, not a TIFF file", path=path, fix="give a .tif movie")
    if is_project_file(path):  # a Leica LIF holds many recordings: `casparks convert` writes them as TIFFs
        raise project_error(path)
    try:
        with _quiet_tifffile():
            tif = tifffile.TiffFile(path)
            if _frames_written_one_by_one(tif):
                tif.close()
                tif = tifffile.TiffFile(path, is_shaped=False)
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise CasparksError(
            f"cannot be read as a TIFF ({type(exc).__name__}: {exc})",
            path=path,
            fix="re-export it as a TIFF stack (e.g. ImageJ: File > Save As > Tiff)",
        ) from None
    try:
        with _quiet_tifffile():  # its series are parsed on use: a damaged file's complaints too
            yield tif
    finally:
        tif.close()


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs what it finds wrong with a file (a second line beside casparks' own error)."""
    import logging

    logger = logging.getLogger("tifffile")
    level = logger.level
    logger.setLevel(logging.ERROR + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def read_stack(path: str | Path, channel: int | None = None) -> np.ndarray:
    """Read a T×Y×X TIFF stack, memory-mapped when the file allows it (no copy).

    A stack with a channel axis (ImageJ/OME axes ``C``, or ``S`` for samples) needs ``channel``:
    the index of the calcium channel, taken out as a view.
    """
    path = home_path(path)
    with _open_tiff(path) as tif:
        _refuse_lsm_line_scan(tif, path)
        index = _movie_series(tif, path)
        series = tif.series[index]
        shape, axes = series.shape, series.axes
        _refuse_missing_images(tif, series, path)
        _refuse_rgb(series, path)
        mappable = series.dataoffset is not None
        try:
            data = None if mappable else series.asarray()
        except Exception as exc:
            raise _damaged(path, exc) from None
    squeezed, kept_axes, channel_axis = _channel_layout(shape, axes)
    if len(squeezed) == 4 and channel_axis is not None:
        n_channels = squeezed[channel_axis]
        if channel is None:
            raise ChannelChoiceError(
                f"has {n_channels} channels (axes {axes}, shape {shape})",
                path=path, fix=f"say which one holds the calcium signal with --channel 0..{n_channels - 1} (Python: channel=)",
            )
        if not 0 <= channel < n_channels:
            raise CasparksError(f"has {n_channels} channels; channel {channel} does not exist",
                                path=path, fix=f"use --channel 0..{n_channels - 1}")
    elif channel is not None and channel != 0:
        raise CasparksError(f"has one channel; channel {channel} does not exist", path=path, fix="leave out --channel")
    if len(squeezed) == 2:
        long, short = max(squeezed), max(min(squeezed), 1)
        if long > LINE_SCAN_RATIO * short:  # thousands of lines of one x: an x-t line scan, not a frame
            raise CasparksError(
                f"is a single 2-D image ({shape[-2]}×{shape[-1]} px, one side {long / short:.0f} times the other): "
                "it looks like a line scan (x-t), not an x-y-t movie", path=path,
                fix=f"{LINE_SCAN_FIX}; if it is one frame of an x-y movie, save all frames as one T×Y×X stack",
            )
        raise CasparksError(
            f"is a single 2-D image ({shape[-2]}×{shape[-1]} px), not a movie",
            path=path,
            fix="save all frames as one T×Y×X stack",
        )
    has_channels = len(squeezed) == 4 and channel_axis is not None
    if len(squeezed) == 3 and channel_axis is not None:  # 12 channels of one time point were read as 12 frames
        raise CasparksError(
            f"has no time axis (axes {axes}, shape {shape}): it is one multi-channel image, not a movie",
            path=path,
            fix="save the frames as a T×Y×X stack (ImageJ: Image > Hyperstacks > Re-order Hyperstack, channels to "
                "frames; Python: tifffile.imwrite(path, movie, imagej=True, metadata={'axes': 'TYX'}))",
        )
    if len(squeezed) != 3 and not has_channels:
        if "Z" in kept_axes:  # not a channel the user can pick
            raise CasparksError(f"holds z-stacks over time (axes {axes}, shape {shape}); casparks needs one "
                                "z-plane, T×Y×X", path=path,
                                fix="save one z-plane as a T×Y×X stack (Fiji: Image > Hyperstacks > Reduce Dimensionality)")
        raise CasparksError(
            f"has {len(shape)} dimensions (axes {axes}, shape {shape}); casparks needs one channel T×Y×X",
            path=path,
            fix="save the calcium channel alone as a T×Y×X stack",
        )
    if mappable:
        try:
            with _quiet_tifffile():
                data = tifffile.memmap(path, series=index, mode="r")
        except Exception:
            with _open_tiff(path) as tif:
                try:
                    data = tif.series[index].asarray()
                except Exception as exc:  # cut short: the map's length exceeds the file, and so do the pages
                    raise _damaged(path, exc) from None
    data = data.reshape(squeezed)
    movie_axes = kept_axes
    if has_channels:
        data = data[(slice(None),) * channel_axis + (channel,)]  # a view: a memory map stays one
        movie_axes = kept_axes[:channel_axis] + kept_axes[channel_axis + 1:]
    order = _tyx_order(movie_axes)
    if order != [0, 1, 2]:
        data = np.transpose(data, order)  # a view as well
    if data.dtype.kind not in "uif":
        raise CasparksError(
            f"has pixel type {data.dtype}, not an integer or float image",
            path=path,
            fix="save it as 8/16-bit integer or 32-bit float",
        )
    return data


def _imagej_signed16(tif: tifffile.TiffFile) -> bool:
    """Whether an ImageJ file holds a signed 16-bit image: ImageJ stores one as unsigned values
    + 32768 with the calibration function cf=0, c0=-32768, c1=1, and shows the signed values.
    casparks reads the values as stored (memory-mapped, and as earlier detections of the file
    read them: ΔF/F0 does not change), so a dark level given as ImageJ shows it (178 for 32946
    stored) measured ΔF/F0 0.009 for 0.855: :func:`read_movie` warns."""
    meta = (tif.imagej_metadata or {}) if tif.is_imagej else {}
    try:
        return (int(meta.get("cf", -1)) == 0 and float(meta.get("c0", 0)) == -32768.0
                and float(meta.get("c1", 0)) == 1.0)
    except (TypeError, ValueError):
        return False


def _damaged(path: Path, exc: Exception) -> CasparksError:
    return CasparksError(f"the TIFF is damaged or truncated ({type(exc).__name__}: {exc})".replace("\n", " "),
                         path=path, fix="re-export the file")


def _refuse_missing_images(tif: tifffile.TiffFile, series: Any, path: Path) -> None:
    """An ImageJ file cut short: its header promises more images than the file holds, and tifffile
    falls back to the pages it finds (one frame: "a single 2-D image", which misled)."""
    expected = (tif.imagej_metadata or {}).get("images") if tif.is_imagej else None
    planes = math.prod(n for a, n in zip(series.axes, series.shape) if a not in "YXS")
    if isinstance(expected, int) and planes < expected:
        raise CasparksError(f"the TIFF is damaged or truncated: its ImageJ header lists {expected} images, "
                            f"the file holds {planes}", path=path, fix="re-export the file")
    shaped = (tif.shaped_metadata or ({},))[0].get("shape") if tif.is_shaped else None  # tifffile's own header
    if isinstance(shaped, list) and math.prod(shaped) > math.prod(series.shape):
        raise CasparksError(f"the TIFF is damaged or truncated: its header lists shape {tuple(shaped)}, "
                            f"the file holds {tuple(series.shape)}", path=path, fix="re-export the file")


def _movie_series(tif: tifffile.TiffFile, path: Path) -> int:
    """The image series that holds the movie: the only one, or the only one of several with at
    least three axes longer than 1 (a multi-series OME file also holds thumbnails or overviews,
    and series 0 was read, a 10 × 10 px thumbnail). Series of reduced-resolution pages are
    thumbnails, never the movie (a Zeiss LSM file stores one after every frame), and a series
    without time that is only channels or samples × Y × X (an RGB preview, a CYX snapshot) is an
    image. Several movies in one file are an error, and so are the pages of a plain multi-page
    TIFF that differ (:func:`_check_plain_pages`)."""
    try:
        found = tif.series
    except RuntimeError as exc:  # 'incompatible keyframe': tifffile judged a plain TIFF's pages by the first and last
        tif.pages.useframes = False  # each page as it is, not sized as the first
        counts: dict[str, int] = {}
        for page in tif.pages:
            if not page.is_reduced:
                counts[_page_kind(page)] = counts.get(_page_kind(page), 0) + 1
        if len(counts) > 1:
            _refuse_pages_that_differ(path, counts)
        raise _damaged(path, exc) from None
    if not found:
        raise CasparksError("the TIFF holds no image (damaged or truncated)", path=path, fix="re-export the file")
    if len(found) == 1:
        return 0
    movies = [i for i, series in enumerate(tif.series)
              if sum(n > 1 for n in series.shape) >= 3 and not _is_thumbnails(series) and not _is_image(series)]
    if all(getattr(series, "kind", "").lower() == "generic" for series in tif.series):
        _check_plain_pages(tif, path, movies)
    movies = _without_z_stacks(tif, path, movies)
    if len(movies) > 1:
        shapes = ", ".join(str(tuple(tif.series[i].shape)) for i in movies[:4])
        raise CasparksError(f"holds {len(movies)} movies (image series {shapes})", path=path,
                            fix="save each as its own TIFF (Fiji: Bio-Formats Importer, then Save As > Tiff)")
    return movies[0] if movies else 0


def _without_z_stacks(tif: tifffile.TiffFile, path: Path, movies: list[int]) -> list[int]:
    """The one series over time among series that are z-stacks (z, no time), with a warning naming
    what is left out: a recording saved with a reference z-stack of the cell was "2 movies". Series
    as they are where that is not the case."""
    def long_axes(i: int) -> str:
        return "".join(a for a, n in zip(tif.series[i].axes, tif.series[i].shape) if n > 1)

    timed = [i for i in movies if "T" in long_axes(i)]
    z_stacks = [i for i in movies if "Z" in long_axes(i) and "T" not in long_axes(i)]
    if len(timed) != 1 or not z_stacks or len(timed) + len(z_stacks) != len(movies):
        return movies
    shapes = ", ".join(f"{tuple(tif.series[i].shape)} ({tif.series[i].axes})" for i in z_stacks)
    _warn_once((str(path), "z-stack series", ""), "%s: the movie is image series %d %s; the z-stack series %s "
               "beside it %s left out", path, timed[0], tuple(tif.series[timed[0]].shape), shapes,
               "is" if len(z_stacks) == 1 else "are")
    return timed


def _is_image(series: tifffile.TiffPageSeries) -> bool:
    """Whether a series is one image, not a movie: no time axis, and nothing longer than 1 but
    channels or samples, y and x (an RGB preview is Y×X×3, a reference snapshot C×Y×X)."""
    return "T" not in series.axes and all(a in "CSYX" for a, n in zip(series.axes, series.shape) if n > 1)


def _check_plain_pages(tif: tifffile.TiffFile, path: Path, movies: list[int]) -> None:
    """A plain multi-page TIFF is one frame per page; tifffile splits pages of another size or
    type into series of their own. A page left out of the movie silently shifts every later
    frame's time (a first page of 48 × 150 among frames of 48 × 160 made each frame 6.8 ms early),
    so pages that differ are refused, naming how many pages have which size: a physiologist
    expects every page of a stack to be a frame, and a stack whose frames changed size (cropped,
    or two recordings appended) has to be fixed, not guessed at. The exception is one leading page
    that is plainly not a frame, a preview some programs write first (in colour while the frames
    are grey, or at most half their height and width): it is left out with a warning, and the
    movie's time starts at the page after it. Reduced-resolution pages are thumbnails by their
    own flag and are left out silently, as in any TIFF."""
    others = [series for i, series in enumerate(tif.series) if i not in movies[:1] and not _is_thumbnails(series)]
    if not others:
        return
    if len(movies) == 1 and len(others) == 1 and len(others[0].pages) == 1 and others[0].pages[0].index == 0:
        preview, frame = others[0].keyframe, tif.series[movies[0]].keyframe
        grey = frame.samplesperpixel == 1
        if (grey and preview.samplesperpixel > 1) or (2 * preview.imagelength <= frame.imagelength
                                                      and 2 * preview.imagewidth <= frame.imagewidth):
            _warn_once((str(path), "preview page", ""), "%s: its first page (%s) is not a frame of the movie "
                       "(%d pages of %s): it is left out as a preview, and the movie starts at page 2", path,
                       _page_kind(preview), len(tif.series[movies[0]].pages), _page_kind(frame))
            return
    counts: dict[str, int] = {}
    for series in tif.series:
        if not _is_thumbnails(series):
            counts[_page_kind(series.keyframe)] = counts.get(_page_kind(series.keyframe), 0) + len(series.pages)
    _refuse_pages_that_differ(path, counts)


def _refuse_pages_that_differ(path: Path, counts: dict[str, int]) -> None:
    """The error for a plain TIFF whose pages differ: how many pages are of which size and type."""
    listed = ", ".join(f"{n} of {kind}" for kind, n in counts.items())
    raise CasparksError(f"its {sum(counts.values())} pages are not one size ({listed}); each page of a plain "
                        "TIFF stack is a frame",
                        path=path, fix="save all frames at one size as one T×Y×X stack (a page left out would "
                                       "shift every later frame in time)")


def _page_kind(page: Any) -> str:
    """A page's size and pixel type, e.g. '48×160 uint16' or '24×80 RGB uint8'."""
    samples = page.samplesperpixel
    colour = " RGB" if samples == 3 else f" {samples}-sample" if samples > 1 else ""
    return f"{page.imagelength}×{page.imagewidth}{colour} {np.dtype(page.dtype)}"


#: Zeiss LSM scan types that record no x-y frame: a line (x-t), a mean of ROIs, a point (CZ_LSMINFO ScanType)
LSM_SCANS_WITHOUT_FRAMES = {2: "a line scan (x-t)", 5: "a time series of ROI means", 10: "a point scan"}
LINE_SCAN_FIX = "analyse line scans with a line-scan tool such as SparkMaster 2"
#: a 2-D image with one side more than this many times the other is named as a likely line scan (an
#: x-y frame of a cardiomyocyte is up to 64 × 512 px; a line scan is thousands of lines of 512 px)
LINE_SCAN_RATIO = 8


def _refuse_lsm_line_scan(tif: tifffile.TiffFile, path: Path) -> None:
    """A Zeiss line scan is the classic spark recording, but a 2-D x-t image: said so, rather
    than the 'single 2-D image' every other 2-D file gets."""
    scan = (tif.lsm_metadata or {}).get("ScanType") if tif.is_lsm else None
    if scan in LSM_SCANS_WITHOUT_FRAMES:
        raise CasparksError(f"is {LSM_SCANS_WITHOUT_FRAMES[scan]}, not an x-y-t movie", path=path,
                            fix="casparks detects events in x-y-t movies (Zeiss: a 'time series' of x-y frames); "
                                f"{LINE_SCAN_FIX}")


def _is_thumbnails(series: tifffile.TiffPageSeries) -> bool:
    """Whether a series is made of reduced-resolution pages (TIFF NewSubfileType bit 0)."""
    page = series.keyframe if hasattr(series, "keyframe") else None
    return bool(getattr(page, "is_reduced", False))


class ChannelChoiceError(CasparksError):
    """A movie of several channels read without saying which holds the calcium signal."""


#: what to do with a movie of several channels in a data set: check, prepare-labels, calibrate and
#: train read one-channel movies (no --channel there)
DATA_SET_CHANNEL_FIX = ("save the calcium channel alone as the data set's movie (Fiji: Image > Color > Split Channels, "
                        "then save that channel as NN_video.tif): data sets hold one-channel movies")


def for_data_set(error: CasparksError) -> CasparksError:
    """``error`` as a data-set command says it: a movie of several channels is split beforehand,
    as these commands take no ``--channel`` (the reader's advice is detection's)."""
    if isinstance(error, ChannelChoiceError):
        return CasparksError(error.what, path=error.path, fix=DATA_SET_CHANNEL_FIX)
    return error


def _refuse_rgb(series: Any, path: Path) -> None:
    """Refuse an 8-bit RGB colour image: a rendering of a recording (its values passed through a
    display range and a look-up table), not photon counts. Its green channel was measured as a
    movie (ΔF/F0 +41 % with a stretched display range), as casparks' own overlay would be. Deeper
    samples are channels (tifffile writes a plain (T, Y, X, 3) uint16 array as RGB)."""
    if "S" in series.axes and series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB \
            and np.dtype(series.dtype) == np.uint8:
        raise CasparksError("is an RGB colour image (a rendering through a display range and colours), not a "
                            "fluorescence channel", path=path,
                            fix="give the recording itself: the microscope's file, or an export of its calcium "
                                "channel as a grey T×Y×X stack (not Fiji's RGB Color)")


def read_label_stack(path: str | Path) -> np.ndarray:
    """Read a T×Y×X label stack (class codes or event ids), memory-mapped when it can be.

    A stack with channels is an image export (RGB), not labels: said so, without the movie's
    advice to pick a calcium channel.
    """
    try:
        return read_stack(path)
    except CasparksError as exc:
        if "channel" not in exc.what:
            raise
        raise CasparksError(f"{exc.what}: labels are one value per voxel, not colours or channels",
                            path=path, fix="save the labels as a single-channel 8/16-bit stack "
                            "(an RGB export of a label image loses its codes)") from None


def _channel_layout(shape: tuple[int, ...], axes: str) -> tuple[tuple[int, ...], str, int | None]:
    """(shape without singleton axes, their axes, the index of the channel axis or None)."""
    squeezed = tuple(n for n in shape if n != 1) if len(shape) > 3 else shape
    kept_axes = "".join(a for a, n in zip(axes, shape) if n != 1) if len(shape) > 3 else axes
    channel_axis = next((i for i, a in enumerate(kept_axes) if a in "CS"), None)
    return squeezed, kept_axes, channel_axis


def stack_channels(path: str | Path) -> int:
    """How many channels a TIFF stack holds (1 without a channel axis), from its header."""
    path = home_path(path)
    with _open_tiff(path) as tif:
        series = tif.series[_movie_series(tif, path)]
        squeezed, _, channel_axis = _channel_layout(series.shape, series.axes)
    return squeezed[channel_axis] if len(squeezed) == 4 and channel_axis is not None else 1


def _tyx_order(movie_axes: str) -> list[int]:
    """The transpose that puts a movie's three declared axes in T, Y, X order, whatever order the
    file has: YXT's time was read as rows, TXY's x as y (a transposed movie)."""
    return sorted(range(3), key=lambda i: {"T": 0, "Y": 2, "X": 3}.get(movie_axes[i], 1))


def stack_shape(path: str | Path) -> tuple[int, ...]:
    """The shape :func:`read_stack` gives a TIFF stack, read from its header (no pixels are read):
    T×Y×X for a movie whatever the file's axis order (a TXY file's was (T, X, Y), and a label of
    the movie's shape was called the odd one); a file with channels keeps its own shape."""
    path = home_path(path)
    with _open_tiff(path) as tif:
        series = tif.series[_movie_series(tif, path)]
        shape, axes = tuple(series.shape), series.axes
    squeezed, kept_axes, _ = _channel_layout(shape, axes)
    if len(squeezed) != 3:
        return shape
    return tuple(squeezed[i] for i in _tyx_order(kept_axes))


def stack_dtype(path: str | Path) -> np.dtype:
    """The pixel type of a TIFF stack, read from its header (no pixels are read)."""
    path = home_path(path)
    with _open_tiff(path) as tif:
        return np.dtype(tif.series[_movie_series(tif, path)].dtype)


def read_movie(
    path: str | Path,
    pixel_size_um: float | None = None,
    frame_interval_ms: float | None = None,
    channel: int | None = None,
    *,
    warn: bool = True,
) -> Movie:
    """Read a T×Y×X movie with its units; explicit arguments override the file's metadata, with a
    warning where they differ from it (:func:`resolve_units`; ``warn`` False for units a
    detection recorded, named already when it ran).

    ``channel`` picks the calcium channel of a multi-channel stack (see :func:`read_stack`).
    """
    path = home_path(path)
    data = read_stack(path, channel)
    pixel, frame = resolve_units(path, pixel_size_um, frame_interval_ms, warn=warn)
    z_stack = _z_stack(path)
    if z_stack and frame is None:
        raise CasparksError(f"is a z-stack ({z_stack}), not an x-y-t movie", path=path,
                            fix="give a movie; if its slices are a movie's frames (Fiji opens an image sequence "
                                "as slices), pass --frame-interval MS (Fiji: Image > Properties, frames)")
    if warn:
        warn_how_read(path, data.dtype, frame)
    missing = [
        (what, flag, argument)
        for what, flag, argument, value in (("pixel size", "--pixel-size µm", "pixel_size_um=", pixel),
                                            ("frame interval", "--frame-interval ms", "frame_interval_ms=", frame))
        if value is None
    ]
    if missing:  # only what is missing: the Python hint named both where one was there
        fps = _imagej_fps(path) if frame is None else None
        raise CasparksError(
            f"the {' and the '.join(m[0] for m in missing)} {'are' if len(missing) > 1 else 'is'} not in "
            "the file's metadata"
            + (f" (its ImageJ fps {fps:g} is the animation speed Fiji plays it at, not read as the frame rate)"
               if fps is not None else ""),
            path=path,
            fix="pass " + " and ".join(m[1] for m in missing) + f" (Python: {', '.join(m[2] for m in missing)})"
            + (f"; recorded at {fps:g} frames per second, that is --frame-interval {1000.0 / fps:.4g}"
               if fps is not None else ""),
        )
    _check_unit(pixel, "pixel size", "µm", path)
    _check_unit(frame, "frame interval", "ms", path)
    return Movie(data, float(pixel), float(frame), name=movie_stem(path), source=path, channel=channel,
                 pixel_size_given=pixel_size_um is not None)


def warn_how_read(path: Path, dtype: np.dtype, frame_interval_ms: float | None) -> None:
    """Warn how a movie is read (the stored values of a movie ImageJ shows as signed 16-bit, a
    z-stack's slices as frames), once per movie: detect_files reads its movies quietly before
    its checks and gives these warnings for the movies that pass them."""
    if dtype == np.uint16:
        with _open_tiff(path) as tif:
            signed = _imagej_signed16(tif)
        if signed:
            _warn_once((str(path), "signed 16-bit", ""),
                       "%s: a signed 16-bit movie, which ImageJ shows 32768 lower than it stores; casparks reads the "
                       "stored values, so a dark level you give (--offset) is ImageJ's value + 32768 (auto reads it "
                       "either way)", path)
    z_stack = _z_stack(path)
    if z_stack and frame_interval_ms is not None:
        _warn_once((str(path), "z-stack", ""), "%s: its slices (%s) are read as frames %.4g ms apart", path,
                   z_stack, frame_interval_ms)


def _imagej_fps(path: Path) -> float | None:
    """The ImageJ ``fps`` of a file without ``finterval``, for the error that says no frame interval
    was found: the user who sees a number there must learn why it was not used."""
    with _open_tiff(path) as tif:
        meta = tif.imagej_metadata or {}
        fps = _metadata_number(meta.get("fps"), path, "ImageJ fps") if meta.get("fps") else None
    return fps if fps is not None and fps > 0 and not meta.get("finterval") else None


def _z_stack(path: Path) -> str | None:
    """What makes the movie's file a z-stack, e.g. "12 slices 0.5 µm apart", or None: its axes
    hold z and no time, and the file says how far apart its slices are (ImageJ's ``spacing``,
    OME's PhysicalSizeZ); slices without a spacing are taken as frames without a word (Fiji
    stores an image sequence as slices)."""
    with _open_tiff(path) as tif:
        series = tif.series[_movie_series(tif, path)]
        axes = "".join(a for a, n in zip(series.axes, series.shape) if n > 1)
        if "Z" not in axes or "T" in axes:
            return None
        slices = series.shape[series.axes.index("Z")]
        spacing, unit = None, ""
        if tif.is_imagej and (tif.imagej_metadata or {}).get("spacing"):
            spacing, unit = (tif.imagej_metadata or {}).get("spacing"), (tif.imagej_metadata or {}).get("unit", "")
        elif tif.is_ome and tif.ome_metadata and "PhysicalSizeZ=" in tif.ome_metadata:
            root = ET.fromstring(tif.ome_metadata)
            pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
            if pixels is not None and pixels.get("PhysicalSizeZ"):
                spacing, unit = pixels.get("PhysicalSizeZ"), pixels.get("PhysicalSizeZUnit", "µm")
    if spacing is None:
        return None
    shown = "µm" if _LENGTH_UNITS_UM.get(_unit_key(unit)) == 1.0 else (str(unit) or "units")
    return f"{slices} slices {float(spacing):g} {shown} apart"


#: given units further from the file's own than this (relative) are named in a warning
UNIT_MISMATCH_TOLERANCE = 0.01


def resolve_units(
    path: str | Path,
    pixel_size_um: float | None,
    frame_interval_ms: float | None,
    names: tuple[str, str] = ("--pixel-size / pixel_size_um=", "--frame-interval / frame_interval_ms="),
    warn: bool = True,
    fallback: bool = False,
) -> tuple[float | None, float | None]:
    """(pixel size µm, frame interval ms) of a movie from the given units and the file's (None
    where neither has one).

    Given units override the file's, so that wrong metadata can be corrected (the flags of
    detect and prepare-labels); with ``fallback`` they only fill in where the file has none (a
    training config's units, set once for many movies). Where both exist and differ by more than
    1 %, a warning names the movie, both values and the setting (``names``): a value meant for
    other movies must not rescale a calibrated one unseen. Metadata casparks cannot use raises
    its :class:`CasparksError` only where no unit is given instead.
    """
    path = home_path(path)
    found = _metadata_units(path)
    used = []
    for given, own, name, what, unit in zip((pixel_size_um, frame_interval_ms), found, names,
                                            ("pixel size", "frame interval"), ("µm", "ms")):
        if isinstance(own, CasparksError):
            if given is None:
                raise own
            if warn:  # e.g. pixels 0.2 µm wide and 0.4 µm high: the given size fits one axis
                _warn_once((str(path), f"unusable {what}", repr(given)),
                           "%s: %s %g %s (%s) is used in place of the file's metadata, which casparks cannot use: "
                           "%s", path, what, given, unit, name, own.what)
            own = None
        if given is None or own is None:
            used.append(own if given is None else given)
            continue
        used.append(own if fallback else given)
        if warn and not math.isclose(float(given), float(own), rel_tol=UNIT_MISMATCH_TOLERANCE):
            if fallback:
                log.warning("%s: its own %s of %g %s is used, not %s %g %s (which fills in for movies without "
                            "units; to correct the file's, casparks prepare-labels --pixel-size/--frame-interval "
                            "writes them into copies)", path, what, own, unit, name, given, unit)
            else:
                log.warning("%s: %s %g %s (%s) overrides the %g %s in the file's metadata", path, what, given, unit,
                            name, own, unit)
    return used[0], used[1]


def movie_stem(path: str | Path) -> str:
    """File name without the .tif/.tiff/.lsm suffix (and the .ome of an OME-TIFF)."""
    name = Path(path).name
    for suffix in tuple(".ome" + s for s in TIFF_SUFFIXES) + MOVIE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


# ----------------------------------------------------------------------------------------------
# writing


def instance_dtype(max_id: int) -> np.dtype:
    """Smallest unsigned dtype that holds instance ids up to ``max_id`` (uint16 or uint32)."""
    if max_id < 0:
        raise ValueError("instance ids are non-negative")
    if max_id <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if max_id <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise ValueError(f"{max_id} instances do not fit in uint32")


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    """The process umask (read once: reading it means setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def movie_fingerprint(data: np.ndarray) -> str:
    """A short hash of a movie's pixel values in its first, middle and last frames, as float64 (a
    re-export as float keeps it): which movie a detection was made on, wherever the file moved
    (scoring or drawing one movie's detection on another of the same shape gave no sign of it)."""
    import hashlib

    frames = np.asarray(data[[0, data.shape[0] // 2, data.shape[0] - 1]], dtype="<f8")
    digest = hashlib.sha256(repr(tuple(data.shape)).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()[:16]


def is_stream(path: str | Path) -> bool:
    """Whether ``path`` is a stream rather than a file an output replaces: a character device or a
    pipe (``/dev/stdout``, ``/dev/stderr``, a named pipe a workflow reads)."""
    import stat

    text = str(path)
    if text in ("/dev/stdout", "/dev/stderr") or text.startswith(("/dev/fd/", "/proc/self/fd/")):
        return True  # the process's own output, whatever the shell sent it to (`> out.json`: a file, not replaced)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def check_output_file(path: str | Path, overwrite: bool = False, append: bool = False) -> Path:
    """``path`` as a file an output may be written to, else a one-line error: before the work, so a
    run does not end in a failed write (a folder given for a file was reported as a full disk).
    ``append``: a file appended to in place (a log), which needs itself writable, not its folder."""
    path = Path(path)
    if is_stream(path):  # /dev/stdout, a named pipe: written into as it is, never replaced
        return path
    if append and path.is_file():
        if not os.access(path, os.W_OK):
            raise CasparksError("cannot be written (no permission)", path=path, fix="choose a file you may write to")
        return path
    if path.is_dir():
        raise CasparksError("is a folder", path=path, fix="give a file name for this output")
    if path.exists() and not overwrite:
        raise CasparksError("exists already", path=path, fix="choose another output or pass --overwrite to replace it")
    blocking = next((parent for parent in path.parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise CasparksError("is a file, not a folder", path=blocking, fix=f"choose another place for {path.name}")
    if blocking is not None and not os.access(blocking, os.W_OK | os.X_OK):  # found after the work, it was lost
        raise CasparksError(f"cannot be written: {blocking} is not writable", path=path,
                            fix="choose a folder you may write to")
    if blocking is not None:  # a read-only file system, or a share that refuses: the permission bits said yes
        import tempfile

        try:
            with tempfile.TemporaryFile(dir=blocking):
                pass
        except OSError as exc:
            raise CasparksError(f"cannot be written: {blocking} is not writable ({exc.strerror or exc})", path=path,
                                fix="choose a folder you may write to") from None
    return path


def refuse_folders(paths: Iterable[str | Path], fix: str) -> None:
    """Refuse, before any work, a folder where a result file goes: its write failed last (the
    system's "Is a directory", exit 1), after the work and with the files written before it left."""
    folders = [Path(p) for p in paths if Path(p).is_dir()]
    if folders:
        more = f" (and {len(folders) - 1} more such folder(s))" if len(folders) > 1 else ""
        raise CasparksError(f"is a folder where a result file goes{more}", path=folders[0], fix=fix)


def _frames_written_one_by_one(tif: tifffile.TiffFile) -> bool:
    """Whether a file is frames that tifffile wrote one call each (``for frame in movie:
    writer.write(frame)``, the usual loop): every page its own "shaped" series of one 2-D image
    of one size and type. Read as they are, the movie was its first frame ("a single 2-D image");
    without the shaped metadata they are one series of pages, as in any plain multi-page TIFF."""
    if not tif.is_shaped or len(tif.pages) < 2:
        return False
    # the first two pages' own headers, not tif.series: parsing a series per page took 8 s per
    # opening of a 10 000-frame file (pages of other sizes further on are refused as in any plain TIFF)
    first, second = tif.pages.first, tif.pages[1]
    return _shaped_rank(first) == 2 == _shaped_rank(second) and first.shape == second.shape and \
        first.dtype == second.dtype


def _shaped_header(page: Any) -> dict[str, Any]:
    """The JSON header tifffile writes into a page's description (``{"shape": [...], ...}``), or {}."""
    if not getattr(page, "is_shaped", False):
        return {}
    try:
        header = json.loads(page.description)
    except (ValueError, TypeError):
        return {}
    return header if isinstance(header, dict) else {}


def _shaped_rank(page: Any) -> int | None:
    """How many axes a page's shaped header gives its image (None without one)."""
    shape = _shaped_header(page).get("shape")
    return len(shape) if isinstance(shape, list) else None


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only if the block succeeds.

    The result gets the permissions of a normally created file (0666 less the umask), not
    mkstemp's private 0600, so results on shared lab storage stay readable by the lab.
    """
    path = check_output_file(path, overwrite)
    if is_stream(path):  # --json /dev/stdout: there is no file to replace (as root, /dev/stdout became one)
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:  # the hidden file's random name told the user nothing
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise named_os_error(exc, path, hidden=tmp) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def named_os_error(exc: OSError, path: str | Path, hidden: str | Path | None = None) -> OSError:
    """``exc``, or a copy naming ``path`` where it names no file (tifffile's and NumPy's
    full-disk errors name none: "1638400 requested and 735040 written") or names ``hidden``,
    the temporary file ``path`` is written as."""
    if exc.filename and (hidden is None or str(exc.filename) != str(hidden)):
        return exc
    if exc.errno is None and "requested and" in str(exc) and "written" in str(exc):  # NumPy's short write
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({exc})", str(path))
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def imagej_units(axes: str, pixel_size_um: float | None, frame_interval_ms: float | None) -> dict[str, Any]:
    """tifffile.imwrite's arguments for an ImageJ hyperstack of these axes with its units (µm,
    and the frame interval in seconds, as ImageJ stores it); units that are None are left out."""
    metadata: dict[str, Any] = {"axes": axes}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": metadata}
    if pixel_size_um:
        metadata["unit"] = "um"
        kwargs["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
    if frame_interval_ms:
        metadata["finterval"] = frame_interval_ms / 1000.0
    return kwargs


def write_probabilities(path: str | Path, probabilities: np.ndarray, pixel_size_um: float | None,
                        frame_interval_ms: float | None, overwrite: bool = False) -> Path:
    """Write class probabilities (4 × T × Y × X: background, spark, wave, puff) as a float32
    ImageJ hyperstack of T frames × 4 channels, with the movie's units: written as 4T frames at a
    quarter of the frame interval, ImageJ and read_movie took them for a movie four times as fast."""
    p = np.asarray(probabilities, dtype=np.float32)
    if p.ndim != 4 or p.shape[0] != 4:
        raise ValueError(f"expected 4 × T × Y × X probabilities, got shape {p.shape}")
    with atomic_output(path, overwrite) as tmp:
        tifffile.imwrite(tmp, np.ascontiguousarray(p.transpose(1, 0, 2, 3)), photometric="minisblack",
                         **imagej_units("TCYX", pixel_size_um, frame_interval_ms))
    return Path(path)


def read_probabilities(path: str | Path) -> np.ndarray:
    """Probabilities written by :func:`write_probabilities` (4 × T × Y × X), or by casparks before
    session 33, as 4T frames (each time point's four classes in turn)."""
    path = home_path(path)
    with _open_tiff(path) as tif:
        series = tif.series[_movie_series(tif, path)]
        try:
            data = series.asarray()
        except Exception as exc:
            raise _damaged(path, exc) from None
        channels = "C" in series.axes and series.shape[series.axes.index("C")] == 4
    if channels and data.ndim == 4:
        return data.transpose(1, 0, 2, 3)
    if data.ndim != 3 or data.shape[0] % 4:
        raise CasparksError(f"holds no class probabilities (shape {data.shape}, axes {series.axes})", path=path,
                            fix="write it with casparks detect --save-probabilities, or remove it")
    return data.reshape(-1, 4, *data.shape[1:]).transpose(1, 0, 2, 3)


def write_stack(
    path: str | Path,
    data: np.ndarray,
    pixel_size_um: float | None,
    frame_interval_ms: float | None,
    overwrite: bool = False,
) -> Path:
    """Write a T×Y×X stack as an ImageJ-compatible TIFF with its units.

    uint8, uint16 and float32 are written as ImageJ hyperstacks (frames, µm, seconds); other
    dtypes (uint32 instance ids) as a plain TIFF whose JSON description holds the units, which
    :func:`read_units` understands as well.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3:
        raise ValueError(f"expected a T×Y×X array, got shape {data.shape}")
    kwargs: dict[str, Any] = {"photometric": "minisblack"}
    if data.dtype in (np.uint8, np.uint16, np.float32):
        kwargs.update(imagej_units("TYX", pixel_size_um, frame_interval_ms))
    else:
        metadata: dict[str, Any] = {"axes": "TYX"}
        if pixel_size_um:
            metadata["pixel_size_um"] = float(pixel_size_um)
            kwargs["resolution"] = (1.0 / pixel_size_um, 1.0 / pixel_size_um)
            kwargs["resolutionunit"] = "MICROMETER"
        if frame_interval_ms:
            metadata["frame_interval_ms"] = float(frame_interval_ms)
        kwargs.update(metadata=metadata)
    with atomic_output(path, overwrite) as tmp:
        tifffile.imwrite(tmp, data, **kwargs)
    return path


def write_movie(path: str | Path, movie: Movie, overwrite: bool = False) -> Path:
    """Write a :class:`Movie` with its units."""
    if not isinstance(movie, Movie):  # an array or swapped arguments were an AttributeError
        if isinstance(path, Movie) or (hasattr(path, "shape") and isinstance(movie, (str, os.PathLike))):
            raise CasparksError("write_movie takes the path first, then the Movie", fix="call write_movie(path, movie)")
        got = "an array" if hasattr(movie, "shape") else f"{type(movie).__name__} {movie!r:.40}"
        raise CasparksError(f"write_movie writes a Movie (its units go into the file), got {got}",
                            fix="pass casparks.Movie(array, pixel_size_um, frame_interval_ms)")
    return write_stack(path, movie.data, movie.pixel_size_um, movie.frame_interval_ms, overwrite)


def write_class_label(path, labels, pixel_size_um=None, frame_interval_ms=None, overwrite=False) -> Path:
    """Write a class-label stack as uint8 (the format's codes are 0-4; a detection's are checked
    by :func:`casparks.detection.write_detection`)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):  # other codes are for the readers to refuse
        raise ValueError("class codes must lie in 0..255")
    return write_stack(path, labels.astype(np.uint8, copy=False), pixel_size_um, frame_interval_ms, overwrite)


def write_event_label(path, instances, pixel_size_um=None, frame_interval_ms=None, overwrite=False) -> Path:
    """Write instance ids as uint16, or uint32 when there are more than 65 535 of them."""
    instances = np.asarray(instances)
    if instances.size and instances.min() < 0:
        raise ValueError("instance ids must be non-negative")
    dtype = instance_dtype(int(instances.max()) if instances.size else 0)
    return write_stack(path, instances.astype(dtype, copy=False), pixel_size_um, frame_interval_ms, overwrite)


def write_csv(path: str | Path, table, overwrite: bool = False) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_output(path, overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.10g")  # 122.4, not 122.39999999999999
    return Path(path)


def write_json(path: str | Path, obj: Any, overwrite: bool = False) -> Path:
    """Write JSON atomically (NaN becomes null)."""
    text = json.dumps(_json_safe(obj), indent=2, ensure_ascii=False)
    with atomic_output(path, overwrite) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return Path(path)


def as_json(obj: Any) -> Any:
    """``obj`` as :func:`write_json` stores it and ``json.loads`` reads it back (tuples become
    lists, paths text, NumPy scalars numbers, NaN None): what a written summary is compared with."""
    return json.loads(json.dumps(_json_safe(obj)))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
