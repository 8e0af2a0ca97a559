"""Movies inside microscope project files → one TIFF per movie, with its units.

Why: a Leica LIF file is a project. It holds a session's recordings: x-y-t movies, and also line
scans, z-stacks and snapshots, often in folders. casparks reads one movie per TIFF, so that every
command (detect, report, napari, training) names, finds and re-reads a movie by its file.
``casparks convert`` writes each x-y-t movie of a project as its own ImageJ TIFF with its pixel
size (µm) and frame interval (ms), and names what it left out and why.

The reader is Christoph Gohlke's ``liffile``. A LIF dimension's length runs from the first to
the last pixel (or frame), so the step is length / (n − 1), as liffile's coordinates and readlif's
scales have it; a length without a unit is in metres (x, y, z) or seconds (t), as readlif reads it.
Not checked against a file from a Leica microscope: the tests write LIF files in the layout
liffile reads (tests/leica_lif.py).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CasparksError
from .io import (LSM_SCANS_WITHOUT_FRAMES, _LENGTH_UNITS_UM, _TIME_UNITS_MS, Movie, _square, _unit_key,
                 atomic_output, check_output_file, imagej_units, movie_fingerprint, read_movie)
from .paths import home_path

log = logging.getLogger(__name__)

#: project files ``convert`` opens, and what they are called in messages
PROJECT_SUFFIXES = {".lif": "a Leica LIF project"}

#: pixel types an ImageJ TIFF holds; float64 is written as float32, others are refused
_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)

_LINE_SCAN = f"{LSM_SCANS_WITHOUT_FRAMES[2]}, not an x-y-t movie: analyse line scans with a line-scan tool such as SparkMaster 2"


@dataclass(frozen=True)
class ProjectImage:
    """One image of a project file: ``path`` within the project (folders joined by '/'), its
    axes (slowest first, 'C' for channels) and shape, its units (None where the file has none),
    and ``skipped``: why it is no x-y-t movie (None: it is one)."""

    project: Path
    path: str
    axes: str
    shape: tuple[int, ...]
    dtype: str
    pixel_size_um: float | None
    frame_interval_ms: float | None
    skipped: str | None = None

    @property
    def channels(self) -> int:
        return self.shape[self.axes.index("C")] if "C" in self.axes else 1

    def describe(self) -> str:
        """'500 × 64 × 512, 2 channels, 0.2 µm, 6.8 ms' (frames × rows × columns)."""
        sizes = dict(zip(self.axes, self.shape))
        parts = [" × ".join(str(sizes[a]) for a in "TYX" if a in sizes)]
        if self.channels > 1:
            parts.append(f"{self.channels} channels")
        parts.append(f"{self.pixel_size_um:.4g} µm" if self.pixel_size_um else "pixel size unknown")
        parts.append(f"{self.frame_interval_ms:.4g} ms" if self.frame_interval_ms else "frame interval unknown")
        return ", ".join(parts)


@dataclass(frozen=True)
class Converted:
    """A movie written by :func:`convert`: where from, where to."""

    image: ProjectImage
    output: Path


def is_project_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in PROJECT_SUFFIXES


def project_error(path: Path) -> CasparksError:
    """The one-line error for a command given a project file where it needs a movie."""
    kind = PROJECT_SUFFIXES.get(path.suffix.lower(), "a microscope project file")
    return CasparksError(f"is {kind}, which can hold many recordings; casparks reads one movie per TIFF",
                         path=path, fix=f"write its movies as TIFFs first: casparks convert {path} --out DIR")


# ----------------------------------------------------------------------------------------------
# reading a LIF project


def _open_lif(path: Path) -> Any:
    try:
        import liffile
    except ImportError:  # pragma: no cover - a dependency: absent only from an install made without it
        raise CasparksError("reading Leica LIF files needs the liffile package", path=path,
                            fix="pip install liffile, or export the movies as TIFF from LAS X or Fiji") from None
    if not path.is_file():
        raise CasparksError("file not found" if not path.exists() else "is not a file", path=path, fix="check the path")
    try:
        return liffile.LifFile(path)
    except Exception as exc:  # liffile raises several types for damaged files
        raise CasparksError(f"cannot be read as a Leica LIF file ({type(exc).__name__}: {exc})", path=path,
                            fix="check that it is a .lif file saved by LAS X, or export its movies from LAS X") from None


def _dimension_steps(element: Any) -> dict[str, tuple[float, str]]:
    """Axis letter → (step between elements, unit) from an image's DimensionDescriptions."""
    letters = {1: "X", 2: "Y", 3: "Z", 4: "T"}
    steps = {}
    for dim in element.findall("./Data/Image/ImageDescription/Dimensions/DimensionDescription"):
        letter = letters.get(int(dim.get("DimID", 0)))
        n = int(dim.get("NumberOfElements", 0))
        try:
            length = float(dim.get("Length", "nan"))
        except ValueError:
            length = math.nan
        if letter and n > 1 and math.isfinite(length) and length > 0:
            steps[letter] = (length / (n - 1), dim.get("Unit") or ("s" if letter == "T" else "m"))
    return steps


def _units(steps: dict[str, tuple[float, str]], project: Path, name: str) -> tuple[float | None, float | None]:
    """(pixel size µm, frame interval ms) from the steps; None where absent or in an unknown unit."""
    def scaled(axis: str, table: dict[str, float]) -> float | None:
        if axis not in steps:
            return None
        step, unit = steps[axis]
        scale = table.get(_unit_key(unit))
        if scale is None:
            log.warning("%s: image %s: unknown %s unit %r; pass the units to casparks detect", project, name, axis, unit)
            return None
        return step * scale

    pixel_x, pixel_y = scaled("X", _LENGTH_UNITS_UM), scaled("Y", _LENGTH_UNITS_UM)
    return _square(pixel_x, pixel_y, project), scaled("T", _TIME_UNITS_MS)


def _why_not_a_movie(axes: str, dtype: np.dtype, is_flim: bool) -> str | None:
    """Why an image with these axes cannot be read as an x-y-t movie (None: it can)."""
    if is_flim:
        return "a FLIM (photon-counting) image, not an intensity movie"
    if "T" in axes and "X" in axes and "Y" not in axes:
        return _LINE_SCAN
    if "T" not in axes:
        return "a z-stack, not a time series" if "Z" in axes else "a single image, not a time series"
    if "Z" in axes:
        return "an x-y-z-t series; casparks needs one focal plane over time"
    if "S" in axes:
        return "an RGB image, not a fluorescence channel"
    extra = sorted(set(axes) - set("TCYX"))
    if extra or set("TYX") - set(axes):
        return f"has axes {axes}; casparks needs frames of x and y over time (and channels)"
    if dtype.kind != "f" and dtype not in _IMAGEJ_DTYPES:
        return f"has pixel type {dtype}, which an ImageJ TIFF cannot hold (8 or 16-bit integers, or floats)"
    return None


def list_images(path: str | Path) -> list[ProjectImage]:
    """Every image of a project file, movies and others, in the file's order."""
    path = _project_path(path)
    with _open_lif(path) as lif:
        return [_describe(lif_image, path) for lif_image in lif.images]


def project_movies(path: str | Path) -> tuple[list[tuple[ProjectImage, np.ndarray]], list[ProjectImage]]:
    """The x-y-t movies of a project file with their data (axes as ``image.axes``: TYX or
    TCYX; memory-mapped from the file where its layout allows), and the images left out, each
    in the file's order."""
    path = _project_path(path)
    with _open_lif(path) as lif:
        images = [_describe(lif_image, path) for lif_image in lif.images]
        movies = [(image, _movie_data(lif, image)) for image in images if image.skipped is None]
    return movies, [image for image in images if image.skipped is not None]


def movie_channels(movies: Sequence[tuple[ProjectImage, np.ndarray]]) -> list[tuple[str, np.ndarray, ProjectImage]]:
    """(name, T×Y×X array, image) per channel of each of a project's movies: named as ``convert``
    names its TIFFs, without ``.tif``, ``_channel<c>`` added where a movie has channels (the
    napari reader's layer names, which a detection made in the viewer records)."""
    out = []
    for image, data in movies:
        name = output_name(image.project, image.path)[: -len(".tif")]
        axis = image.axes.find("C")  # a channel is a view of the mapped file, not a copy
        out += [(name, data, image)] if axis < 0 else [
            (f"{name}_channel{c}", data[(slice(None),) * axis + (c,)], image) for c in range(image.channels)]
    return out


def read_project_movie(path: str | Path, name: str, fingerprint: str | None, pixel_size_um: float,
                       frame_interval_ms: float) -> Movie:
    """The movie of a project file that a detection made in the viewer was made on (the project is
    its recorded source): the movie named ``name`` (:func:`movie_channels`), else, the layer renamed
    before its results were saved, the one of that :func:`casparks.io.movie_fingerprint`; with the
    detection's units."""
    path = _project_path(path)
    channels = movie_channels(project_movies(path)[0])
    found = [data for movie_name, data, _ in channels if movie_name == name]
    if not found and fingerprint:
        found = [data for _, data, _ in channels if movie_fingerprint(data) == fingerprint]
    if not found:
        raise CasparksError(f"holds no movie {name!r} (nor one of its pixels)", path=path,
                            fix="pass the movie that was detected with --movie")
    return Movie(found[0], pixel_size_um, frame_interval_ms, name=name, source=path)


def read_detected_movie(path: str | Path, name: str, fingerprint: str | None, pixel_size_um: float,
                        frame_interval_ms: float, channel: int | None = None) -> Movie:
    """The movie a detection was made on, with the detection's units (named when it ran): a TIFF
    (its ``channel``), or one movie of a project file, which a detection saved from the viewer
    records as its movie (:func:`read_project_movie`)."""
    if is_project_file(path):
        return read_project_movie(path, name, fingerprint, pixel_size_um, frame_interval_ms)
    return read_movie(path, pixel_size_um, frame_interval_ms, channel=channel, warn=False)


def _project_path(path: str | Path) -> Path:
    path = home_path(path)
    if not is_project_file(path):
        raise CasparksError("is not a project file casparks converts", path=path,
                            fix=f"give a {' or '.join(PROJECT_SUFFIXES)} file; TIFF and LSM movies need no conversion")
    return path


def _movie_data(lif: Any, image: ProjectImage) -> np.ndarray:
    """One movie of the open project ``lif``; floats as float32 (what TIFF movies hold)."""
    data = lif.images[image.path].asarray(out="memmap")  # mapped from the file where it can be
    return data.astype(np.float32) if data.dtype.kind == "f" and data.dtype != np.float32 else data


def _describe(lif_image: Any, project: Path) -> ProjectImage:
    name = lif_image.path
    try:
        axes, shape, dtype = "".join(lif_image.dims), tuple(lif_image.shape), np.dtype(lif_image.dtype)
    except (ValueError, KeyError, IndexError) as exc:  # liffile's checks of the layout
        return ProjectImage(project, name, "", (), "", None, None, f"cannot be read ({exc})")
    pixel, frame = None, None
    skipped = _why_not_a_movie(axes, dtype, lif_image.is_flim)
    if skipped is None:
        try:
            pixel, frame = _units(_dimension_steps(lif_image.xml_element), project, name)
        except CasparksError as exc:  # pixels that are not square
            skipped = exc.what
    return ProjectImage(project, name, axes, shape, str(dtype), pixel, frame, skipped)


# ----------------------------------------------------------------------------------------------
# writing


def output_name(project: Path, image_path: str) -> str:
    """'<project stem>_<image path>.tif', with folders joined by '_' and characters that file
    systems or shells trip over replaced by '_'."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{project.stem}_{image_path}").strip("._")
    return f"{text or 'movie'}.tif"


def _targets(images: Sequence[ProjectImage], out_dir: Path) -> list[Path]:
    """One output per movie; names that collide get _2, _3, … that no other movie's name takes
    ("cell 1" and "cell_1 2" both became proj_cell_1_2.tif, one written over the other)."""
    names = [output_name(image.project, image.path) for image in images]
    taken = {name.lower() for name in names}  # case-insensitive file systems
    used: set[str] = set()
    targets = []
    for name in names:
        candidate, count = name, 1
        while candidate.lower() in used or (candidate != name and candidate.lower() in taken):
            count += 1
            candidate = f"{name[:-4]}_{count}.tif"
        used.add(candidate.lower())
        targets.append(out_dir / candidate)
    return targets


def _write(lif: Any, image: ProjectImage, target: Path, overwrite: bool) -> None:
    """Write one movie of the open project ``lif`` as an ImageJ hyperstack (T[C]YX) with its
    units, atomically."""
    import tifffile

    data = _movie_data(lif, image)
    with atomic_output(target, overwrite) as tmp:
        tifffile.imwrite(tmp, data, photometric="minisblack",
                         **imagej_units(image.axes, image.pixel_size_um, image.frame_interval_ms))


def expand_projects(inputs: Iterable[str | Path]) -> list[Path]:
    """Project files from files and folders (a folder's project files)."""
    found: list[Path] = []
    for item in inputs:
        path = home_path(item)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if is_project_file(p) and not p.name.startswith("."))
            if not files:
                raise CasparksError(f"holds no project files ({', '.join(PROJECT_SUFFIXES)})", path=path,
                                    fix="give the project files or their folder")
            found += files
        elif not path.exists():
            raise CasparksError("no such file or folder", path=path, fix="check the path")
        else:
            found.append(path)
    return list(dict.fromkeys(p.resolve() for p in found))


def plan(inputs: Iterable[str | Path], out_dir: str | Path,
         overwrite: bool = False) -> tuple[list[tuple[ProjectImage, Path]], list[ProjectImage]]:
    """(movie → output) pairs and the images left out, checked before anything is written: an
    input that is no project, a project without a movie, an existing output (without
    ``overwrite``) or an output that cannot be written raises a :class:`CasparksError`."""
    out_dir = home_path(out_dir)
    movies: list[ProjectImage] = []
    skipped: list[ProjectImage] = []
    projects = expand_projects(inputs)
    for project in projects:
        for image in list_images(project):
            (movies if image.skipped is None else skipped).append(image)
    if not movies:
        named = (lambda image: image.path) if len(projects) == 1 else (lambda image: f"{image.project.name}/{image.path}")
        listed = "; ".join(f"{named(image)}: {image.skipped}" for image in skipped[:3]) or "no images"
        what = "holds no" if len(projects) == 1 else f"none of the {len(projects)} project files holds an"
        raise CasparksError(f"{what} x-y-t movie ({listed})", path=projects[0] if len(projects) == 1 else None,
                            fix="record movies as x-y-t time series (xyt), or export them from LAS X")
    targets = _targets(movies, out_dir)
    existing = [t for t in targets if t.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise CasparksError(f"exists already{more}", path=existing[0],
                            fix="choose another --out folder or pass --overwrite to replace them")
    for target in targets:  # --out a file, a folder not writable: refused now, not after the "left out" lines
        check_output_file(target, overwrite)
    return list(zip(movies, targets)), skipped


def convert(inputs: str | Path | Iterable[str | Path], out_dir: str | Path,
            overwrite: bool = False) -> list[Converted]:
    """Write every x-y-t movie of the project files in ``inputs`` (files or folders) to
    ``out_dir`` as '<project>_<image>.tif', one at a time. Images that are no movie are logged
    and left out. Nothing is written unless every input can be read and no output exists
    (unless ``overwrite``)."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    pairs, skipped = plan(inputs, out_dir, overwrite)
    for image in skipped:
        log.info("%s: %s left out: %s", image.project.name, image.path, image.skipped)
    return list(iter_convert(pairs, overwrite))


def iter_convert(pairs: Sequence[tuple[ProjectImage, Path]], overwrite: bool = False) -> Iterator[Converted]:
    """Write the planned movies one at a time, yielding each as it is written (for progress)."""
    for project, group in itertools.groupby(pairs, key=lambda pair: pair[0].project):
        with _open_lif(project) as lif:  # once per project: its XML header is parsed on opening
            for image, target in group:
                _write(lif, image, target, overwrite)
                yield Converted(image, target)

