"""A visual report of a detection: one self-contained HTML page per movie, PNGs, an overlay movie.

:func:`write_report` reads what ``casparks detect`` wrote (``<stem>_detection.json`` and the files
beside it, :func:`casparks.detection.read_detection`) together with the movie, and writes:

=====================================  =========================================================
``report.html``                        the page of the movie, or for a folder of several movies
                                       the summary page: one row per movie (linked to its page),
                                       pooled distributions and frequencies, the settings
``<stem>_report.html``                 (several movies) each movie's page, beside the summary
``report_files/<stem>_<figure>.png``   the page's figures, also embedded in it as base64:
                                       ``projection``, ``kymograph``, ``traces``,
                                       ``distributions``, ``frequency``
``report_files/<stem>_summary.csv``    the movie's summary table (one row per class)
``report_files/<stem>_overlay.tif``    the overlay movie: the recording in grey, events tinted
                                       by class (ImageJ RGB hyperstack with units)
``report_files/<stem>_overlay.mp4``    the same as H.264 video, when ``imageio-ffmpeg`` is installed
``report_files/summary-*.png, .csv``   (several movies) the summary page's figures and table
=====================================  =========================================================

``report.html`` lies in the detection folder unless ``out`` says otherwise (a ``.html`` path, or
a folder to hold ``report.html``); for one ``<stem>_detection.json`` it is ``<stem>_report.html``
beside it, except in a folder of several movies' detections, where that name is the movie's page
of the folder's report: a report of one of them that would write any page or ``report_files/`` of
the folder's report is refused (``out`` elsewhere, or the folder's report). The files folder is
named after the main page (``<name>_files``, as browsers save pages). A page holds its images,
so it can be mailed or archived alone; the overlay videos are linked, not embedded (megabytes
each), with relative links, so the folder can be moved whole.
Time and memory: about 7 s and 0.6 GB for a 500 × 64 × 512 movie, 3.8 s without the overlay
movies (``benchmarks/results/report.md``).

Each movie's page: what was analysed (movie, shape, sampling, model, threshold), the summary
table (counts, frequency per class, medians of the measurements), the max projection with event
outlines, the kymograph, a gallery of ΔF/F0 traces per class, the distributions of amplitude,
FWHM, FDHM and duration, the frequency per class, the overlay movie, the events table and every
setting of the detection. ΔF/F0 is computed as the measurements did
(:func:`casparks.figures.detection_dff`), so the pictures show what the numbers were measured on
(sparks and puffs on a wave's decay excepted: the table reads them above the local background
they stand on, which the pictures keep).

Before anything is written every input is checked: each detection is complete and its movie is
found (the path recorded at detection time, the movie's name in the detection folder, or
``movie``: a file for one movie, a folder to look in for several) with the detection's shape; and
no output exists unless ``overwrite``. Each file is written atomically; the pages come last, so a
page never points to a file that is not there. Memory holds one movie's ΔF/F0 at a time (float32
copies of the movie: about 1.1 MB per 64 × 512 frame at the peak).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import html
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import quote

import numpy as np
import pandas as pd

from .classes import CLASS_COLORS, CLASS_NAMES, format_counts
from .errors import CasparksError, raise_together
from .paths import home_path

log = logging.getLogger(__name__)

__all__ = ["Report", "summary_table", "write_report"]

DEFAULT_NAME = "report.html"
FIGURES = ("projection", "kymograph", "traces", "distributions", "frequency")
#: measurements summarised by their median in the summary table: column, heading
MEDIANS = (("amplitude_dff", "amplitude ΔF/F0"), ("fwhm_um", "FWHM µm"), ("fdhm_ms", "FDHM ms"),
           ("duration_ms", "duration ms"), ("time_to_peak_ms", "time to peak ms"), ("decay_tau_ms", "decay τ ms"),
           ("speed_um_per_s", "speed µm/s"))


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote: the main page, each movie's page, and every file."""

    main: Path
    pages: dict[str, Path]
    files: tuple[Path, ...]


@dataclass(frozen=True)
class _Plan:
    """One movie's inputs and outputs, decided before anything is written."""

    stem: str
    summary_path: Path
    movie_path: Path
    page: Path
    assets: dict[str, Path]
    channel: int | None = None  # of a multi-channel movie: the one it was detected on


# ----------------------------------------------------------------------------------------------
# tables


def summary_table(events: pd.DataFrame, frequency: pd.DataFrame) -> pd.DataFrame:
    """One row per class: count, frequency (per 100 µm per s, per 1000 µm² per s), medians.

    ``frequency`` is :func:`casparks.measure.event_frequency`'s table; with a ``movie`` column
    (several movies) counts are summed and frequencies averaged over movies. Medians skip
    failed (NaN) measurements; a class without events has NaN medians.
    """
    rows = []
    for name in CLASS_NAMES.values():
        own = events[events["class"] == name] if len(events) else events
        rates = frequency[frequency["class"] == name] if len(frequency) else frequency
        row: dict[str, Any] = {"class": name, "count": len(own)}
        for column in ("per_100um_per_s", "per_1000um2_per_s"):
            values = pd.to_numeric(rates[column], errors="coerce") if column in rates else pd.Series(dtype=float)
            row[column] = float(values.mean()) if values.notna().any() else float("nan")
        for column, _ in MEDIANS:
            values = pd.to_numeric(own[column], errors="coerce") if column in own else pd.Series(dtype=float)
            row[f"median_{column}"] = float(values.median()) if values.notna().any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value: Any, digits: int = 3) -> str:
    """Numbers to 3 significant digits; NaN and missing as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value == 0:
            return "0"
        magnitude = math.floor(math.log10(abs(value)))
        decimals = max(0, digits - 1 - magnitude)
        return f"{value:.{decimals}f}"
    return html.escape(str(value))


class _Raw(str):
    """Text that is HTML already (a link): tables put it in as it is."""


def _table(frame: pd.DataFrame, headings: dict[str, str] | None = None, classes: str = "") -> str:
    headings = headings or {}
    head = "".join(f"<th>{html.escape(headings.get(c, c))}</th>" for c in frame.columns)
    body = []
    for row in frame.to_dict("records"):
        cells = []
        for column, value in row.items():
            text = value if isinstance(value, _Raw) else _fmt(value)
            if column == "class" and value in {v for v in CLASS_NAMES.values()}:
                text = _swatch(value) + html.escape(value)
            cells.append(f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _swatch(name: str) -> str:
    code = {v: k for k, v in CLASS_NAMES.items()}[name]
    r, g, b = CLASS_COLORS[code]
    return f'<span class="swatch" style="background: rgb({r},{g},{b})"></span>'


def _summary_html(table: pd.DataFrame) -> str:
    headings = {"class": "class", "count": "events", "per_100um_per_s": "per 100 µm per s",
                "per_1000um2_per_s": "per 1000 µm² per s"}
    headings.update({f"median_{c}": f"median {h}" for c, h in MEDIANS})
    return _table(table, headings, "summary")


# ----------------------------------------------------------------------------------------------
# planning: every input checked, every output named, before anything is written


def _main_path(detection_path: Path, out: str | Path | None) -> Path:
    """``out`` as the main page; by default report.html in the folder, <stem>_report.html for one JSON."""
    from .detection import SUMMARY_SUFFIX

    if out is None:
        if detection_path.is_file() and detection_path.name.endswith(SUMMARY_SUFFIX):
            return detection_path.parent / f"{detection_path.name[: -len(SUMMARY_SUFFIX)]}_report.html"
        return detection_path / DEFAULT_NAME
    out = home_path(out)
    if out.is_file() and out.suffix.lower() not in (".html", ".htm"):
        raise CasparksError("is a file, not a folder or an .html page", path=out,
                            fix="give --out a folder or a .html file name")
    if out.is_dir() or out.suffix.lower() not in (".html", ".htm"):  # a folder (its name may hold dots)
        return out / DEFAULT_NAME
    return out


def _refuse_folder_report_files(path: Path, main: Path, assets: Path) -> None:
    """Refuse a report of one ``<stem>_detection.json`` that would write the pages or files of the
    report of its folder of several movies.

    There ``<stem>_report.html`` is the movie's page of the folder's report (figures in
    ``report_files/``, a link back to ``report.html``): one movie's report written over it was a
    page without that link, with its figures in ``<stem>_report_files/``, and ``--out DIR`` put a
    movie's page in place of the summary and removed the overlay movies its page links to. Where
    the folder has no report (``report.html`` or ``report_files/``), there is none to break.
    """
    from .detection import SUMMARY_SUFFIX, find_detections

    if not path.is_file():
        return
    folder = path.parent
    stems = [p.name[: -len(SUMMARY_SUFFIX)] for p in find_detections(folder)]
    if len(stems) < 2:  # a folder of one movie: its report is report.html, no movie page to clash with
        return
    pages = {(folder / DEFAULT_NAME).resolve()} | {(folder / f"{s}_report.html").resolve() for s in stems}
    shared = (folder / f"{Path(DEFAULT_NAME).stem}_files").resolve()
    if not ((folder / DEFAULT_NAME).exists() or shared.exists()):  # no folder report (yet) to break
        return
    clash = main if main.resolve() in pages else assets if assets.resolve() == shared else None
    if clash is not None:
        raise CasparksError(f"a report of this movie alone would write {clash.name}, which belongs to the report of "
                            f"the {len(stems)} movies in {folder}", path=path,
                            fix=f"run `casparks report {folder} --overwrite` (every page and the summary), or give "
                                f"--out (Python: out=) a path outside the folder's report for this movie's page alone")


def _resolve_movie(summary_path: Path, recorded: str, stem: str, movie: Path | None, several: bool) -> Path:
    """The movie of a detection: ``movie`` (file or folder), else where it was, else beside the results."""
    from .io import MOVIE_SUFFIXES
    from .projects import is_project_file

    # a project file: a detection saved from the viewer on one of its movies (read_detected_movie finds it)
    recorded_path = Path(recorded) if recorded.lower().endswith(MOVIE_SUFFIXES) or is_project_file(recorded) else None
    names = ([recorded_path.name] if recorded_path else []) + [f"{stem}{suffix}" for suffix in MOVIE_SUFFIXES]
    if movie is not None:
        if movie.is_file():
            from .detection import is_movie_file

            if not is_movie_file(movie) and not is_project_file(movie):
                raise CasparksError("is a label or probability stack, not the movie", path=movie,
                                    fix="give --movie the movie that was detected")
            if several:
                raise CasparksError("--movie names one file but the detection folder holds several movies", path=movie,
                                    fix="give --movie the folder that holds the movies (Python: movie=FOLDER)")
            return movie
        if movie.is_dir():
            for name in names:
                if (movie / name).is_file():
                    return movie / name
            raise CasparksError(f"the movie of {stem!r} ({names[0]}) is not in this folder", path=movie,
                                fix="give --movie the folder (or, for one movie, the file) that holds it")
        raise CasparksError("no such movie file or folder", path=movie, fix="check the --movie path")
    if recorded_path is not None and recorded_path.is_file():
        return recorded_path
    for name in names:
        if (summary_path.parent / name).is_file():
            return summary_path.parent / name
    if recorded and recorded_path is None:  # a detection of an array (casparks.Movie(data, ..., name=...))
        raise CasparksError(f"the detection of {stem!r} was made on an array ({recorded!r}), not on a movie file",
                            path=summary_path, fix="save the movie with casparks.write_movie and pass it with --movie "
                            "FILE (Python: movie=)")
    if not recorded:  # "is not at (not recorded) any more" said nothing
        raise CasparksError(f"the detection of {stem!r} does not record its movie, and none named {names[0]} lies "
                            "beside it", path=summary_path,
                            fix="pass --movie FILE (or --movie FOLDER holding it; Python: movie=)")
    raise CasparksError(f"the movie of {stem!r} is not at {recorded_path or recorded} any more", path=summary_path,
                        fix="pass --movie FILE (or --movie FOLDER holding it; Python: movie=)")


def _plan(path: Path, out: str | Path | None, movie: str | Path | None, video: bool, channel: int | None,
          overwrite: bool, kymograph_y_um: float | None) -> tuple[Path, Path, list[_Plan]]:
    from .detection import find_detections
    from .overlay import mp4_available

    summaries = find_detections(path)
    main = _main_path(path, out)
    assets = main.parent / f"{main.stem}_files"
    _refuse_folder_report_files(path, main, assets)
    several = len(summaries) > 1
    movie_arg = home_path(movie) if movie is not None else None
    with_mp4 = video and mp4_available()
    plans, problems = [], []
    for summary_path in summaries:
        try:
            plans.append(_plan_movie(summary_path, movie_arg, several, channel, kymograph_y_um, assets, main,
                                     video, with_mp4))
        except CasparksError as exc:  # every movie's problem at once, a line each
            problems.append(exc)
    raise_together(problems, len(summaries), "reported", fix="fix or leave out these movies; nothing was written")
    targets = [main] + ([p.page for p in plans] if several else []) + [f for p in plans for f in p.assets.values()]
    if several:
        targets += _summary_assets(assets).values()
    duplicates = sorted({t.name for t in targets if targets.count(t) > 1})
    if duplicates:
        raise CasparksError(f"two outputs of the report would be named {duplicates[0]}", path=main,
                            fix="choose another --out name")
    if not overwrite:
        existing = [t for t in targets if t.exists()]
        if existing:
            raise CasparksError(f"{len(existing)} report file(s) exist already, e.g. {existing[0].name}",
                                path=existing[0].parent, fix="choose another --out or pass --overwrite")
    if video and not with_mp4:  # once every input is known to be fine
        log.warning("imageio-ffmpeg is not installed: the overlay movie is written as TIFF only "
                    "(pip install imageio-ffmpeg for an MP4)")
    return main, assets, plans


def _channels(movie_path: Path) -> int:
    """The channels of a movie file (1: a project's movies are read one channel at a time)."""
    from .io import stack_channels
    from .projects import is_project_file

    return 1 if is_project_file(movie_path) else stack_channels(movie_path)


def _plan_movie(summary_path: Path, movie_arg: Path | None, several: bool, channel: int | None,
                kymograph_y_um: float | None, assets: Path, main: Path, video: bool, with_mp4: bool) -> _Plan:
    """One movie's plan, its files checked (complete, its movie found with its shape and pixels)."""
    from .detection import SUMMARY_SUFFIX, check_detection
    from .io import movie_fingerprint
    from .projects import read_detected_movie

    stem = summary_path.name[: -len(SUMMARY_SUFFIX)]
    summary, shape = check_detection(summary_path)  # every movie's files, before anything is written
    movie_path = _resolve_movie(summary_path, str(summary.get("movie", "")), stem, movie_arg, several)
    recorded = summary.get("channel")
    if channel is not None and recorded is not None and channel != recorded:
        raise CasparksError(f"the detection of {stem!r} was made on channel {recorded}, not {channel}",
                            path=summary_path, fix=f"leave out --channel (or pass --channel {recorded})")
    channel_used = channel if channel is not None else recorded
    if channel is None and channel_used is not None and _channels(movie_path) == 1:
        channel_used = None  # the calcium channel saved on its own: its pixels are checked below
    found = read_detected_movie(movie_path, stem, summary.get("movie_fingerprint"), summary.get("pixel_size_um"),
                                summary.get("frame_interval_ms"), channel_used)
    if found.shape != shape:
        raise CasparksError(f"has shape {found.shape} but the detection of {stem!r} was made on {shape}",
                            path=movie_path, fix="pass the movie that was detected with --movie")
    recorded_print = summary.get("movie_fingerprint")
    if recorded_print and movie_fingerprint(found.data) != recorded_print:  # same shape, another movie
        raise CasparksError(f"is not the movie the detection of {stem!r} was made on (its pixels differ)",
                            path=movie_path, fix="pass the movie that was detected with --movie")
    height_um = shape[1] * found.pixel_size_um
    if kymograph_y_um is not None and not 0 <= kymograph_y_um < height_um:
        raise CasparksError(f"the kymograph line y = {kymograph_y_um:g} µm lies outside the field of {stem!r} "
                            f"(0 to {height_um:g} µm)", fix="choose a y inside the field")
    files = {kind: assets / f"{stem}_{kind}.png" for kind in FIGURES}
    files["summary"] = assets / f"{stem}_summary.csv"
    if video:
        overlays = _overlay_paths(assets, stem)
        files["overlay_tiff"] = overlays["overlay_tiff"]
        if with_mp4:
            files["overlay_mp4"] = overlays["overlay_mp4"]
    page = main.parent / f"{stem}_report.html" if several else main
    return _Plan(stem, summary_path, movie_path, page, files, channel_used)


#: the ends of the names a report writes into its files folder for each movie (<stem><end>)
REPORT_ASSET_ENDINGS = tuple(f"_{kind}.png" for kind in FIGURES) + ("_summary.csv", "_overlay.tif", "_overlay.mp4")


def _report_assets(assets: Path) -> list[Path]:
    """The files in ``assets`` that a report wrote: the summary's own names, and the files named
    for a movie stem whose five figures are all there (a report always writes them together), so
    that a user's ``cell_summary.csv`` or ``fig_traces.png`` beside them is not taken for one."""
    if not assets.is_dir():
        return []
    files = {p.name: p for p in assets.iterdir() if p.is_file()}
    stems = {name[: -len(f"_{FIGURES[0]}.png")] for name in files if name.endswith(f"_{FIGURES[0]}.png")}
    stems = {stem for stem in stems if all(f"{stem}_{kind}.png" in files for kind in FIGURES)}
    mine = {p.name for p in _summary_assets(assets).values()} | {stem + end for stem in stems
                                                                 for end in REPORT_ASSET_ENDINGS}
    return [path for name, path in files.items() if name in mine]


def _remove_stale(main: Path, assets: Path, written: Sequence[Path]) -> None:
    """Remove what an earlier report at ``main`` wrote and this one did not: its overlays (a run
    without video), and the pages, figures and tables of movies no longer in the folder, which
    the summary tables went on listing beside the new report; and its movie pages where it had
    several movies and this one has one (their link back led to the new page).

    Only a report's own files are removed (:func:`_report_assets`: a user's ``my_stats.csv`` in
    the files folder was deleted), and only pages that link files in this report's files folder
    (a report of one movie's JSON, ``<stem>_report.html`` with its own ``<stem>_report_files``,
    is another report)."""
    keep = {Path(p).resolve() for p in written}
    stems = set()
    for asset in _report_assets(assets):
        stems.update(asset.name[: -len(f"_{kind}.png")] for kind in FIGURES if asset.name.endswith(f"_{kind}.png"))
        if asset.resolve() not in keep:
            asset.unlink()
    for stem in stems:
        page = main.parent / f"{stem}_report.html"
        if page.is_file() and page.resolve() not in keep and _shows_images_of(page, assets):
            page.unlink()


def _shows_images_of(page: Path, assets: Path) -> bool:
    """Whether the report page ``page`` links files in the folder ``assets`` (its PNGs and CSV)."""
    try:
        text = page.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return f'href="{_href(page, assets)}/' in text


def _overlay_paths(assets: Path, stem: str) -> dict[str, Path]:
    """Where a movie's overlay movies go (written, or removed as stale when not written)."""
    return {"overlay_tiff": assets / f"{stem}_overlay.tif", "overlay_mp4": assets / f"{stem}_overlay.mp4"}


def _summary_assets(assets: Path) -> dict[str, Path]:
    # a hyphen: movie files are <stem>_<kind>.png, so these cannot collide with any movie's
    return {"distributions": assets / "summary-distributions.png", "frequency": assets / "summary-frequency.png",
            "table": assets / "summary-movies.csv", "events": assets / "summary-events.csv",
            "classes": assets / "summary-classes.csv"}


# ----------------------------------------------------------------------------------------------
# rendering


def _write_bytes(path: Path, data: bytes, overwrite: bool) -> Path:
    from .io import atomic_output

    with atomic_output(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return path


def _img(png: bytes, alt: str, link: str, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
            f'<figcaption>{caption} <a href="{link}">PNG</a></figcaption></figure>')


def _href(page: Path, target: Path) -> str:
    """A relative link from ``page`` to ``target``, so the report folder can be moved as a whole."""
    import os

    try:
        return quote(Path(os.path.relpath(target, page.parent)).as_posix())
    except ValueError:  # another drive (Windows): no relative path exists
        return Path(target).resolve().as_uri()


_CAPTIONS = {
    "projection": "Field of view: maximum over time of ΔF/F0 (smoothed by one pixel and one frame; the grey "
                  "scale set by the cell and its events, so a dim background's noise may show white), each "
                  "event outlined in its class colour and labelled with its id (as in the events table).",
    "kymograph": "Kymograph (line-scan view): x along the cell against time; outlines mark the events.",
    "traces": "ΔF/F0 over time at the peak of a selection of events per class (evenly spaced ranks of "
              "amplitude), the event's span shaded.",
    "distributions": "Amplitude, FWHM, FDHM and duration per class; failed measurements are left out.",
    "frequency": "Event frequency per class, per 100 µm of the cell's length along x per second and per 1000 µm² "
                 "of the cell per second (the cell found in the movie's resting image; its size is in the table above).",
}


def _page(title: str, body: str) -> str:
    from . import __version__

    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_CSS}</style></head>
<body><main>
{body}
<footer>Made by casparks {html.escape(__version__)} on {html.escape(when)}.</footer>
</main></body></html>
"""


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f;
       background: #fafafa; margin: 0; }
main { max-width: 1240px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: white; }
h1 { font-size: 1.6rem; margin: 0.2rem 0 0.8rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
table { border-collapse: collapse; font-size: 0.88rem; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.55rem; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; white-space: nowrap; }
table.meta td:first-child { font-weight: 600; }
figure { margin: 1rem 0 1.5rem; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; margin-top: 0.3rem; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.35em; border: 1px solid #555;
          vertical-align: -0.05em; }
pre { background: #f6f6f6; padding: 0.8rem; overflow-x: auto; font-size: 0.8rem; }
details { margin: 0.8rem 0; } summary { cursor: pointer; font-weight: 600; }
video { max-width: 100%; background: black; } footer { margin-top: 3rem; color: #777; font-size: 0.8rem; }
.note { color: #555; font-size: 0.9rem; }
"""


def _cell_row(frequency: pd.DataFrame, field_um2: float) -> list[tuple[str, str]]:
    """The cell the frequencies are per (its length along x and area), where it is recorded."""
    from .measure import frequency_cell_size

    size = frequency_cell_size(frequency)
    if size is None:
        return []
    length, area = size
    return [("cell (frequencies per)", f"{length:.1f} µm along x, {area:.0f} µm² "
                                       f"({100 * area / field_um2:.0f} % of the field)")]


def _meta_html(detection: Any, movie_path: Path) -> str:
    T, H, W = detection.class_label.shape
    px, dt = detection.pixel_size_um, detection.frame_interval_ms
    settings = detection.settings
    rows = [
        ("movie", str(movie_path) + (f", channel {detection.channel} (counted from 0)"
                                     if getattr(detection, "channel", None) is not None else "")),
        ("frames × height × width", f"{T} × {H} × {W} px"),
        ("sampling", f"{px:g} µm per pixel, {dt:g} ms per frame"),
        ("field of view", f"{W * px:.1f} × {H * px:.1f} µm (x × y), {T * dt / 1000:.2f} s"),
        *_cell_row(detection.frequency, W * H * px * px),
        *_source_rows(detection),
    ]
    level = getattr(detection, "dark_level", None)
    offset = (settings.get("measure") or {}).get("offset_adu")
    if level:  # read from the movie (offset_adu "auto"): the value, how, and any caveat
        from .darklevel import describe

        rows.append(("dark level (ΔF/F0 offset)", describe(level)))
    elif offset is not None and offset != "auto":  # "auto" without a level: no event was measured
        rows.append(("dark level (ΔF/F0 offset)", f"{offset} ADU (given)"))
    for key, label in (("device", "device"), ("precision", "precision"), ("window_frames", "window (frames)")):
        if key in settings:
            rows.append((label, str(settings[key])))
    if detection.timings_s.get("total") is not None:
        what = "measuring time" if getattr(detection, "labels", None) is not None else "detection time"
        rows.append((what, f"{detection.timings_s['total']:.1f} s"))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta">{body}</table>'


def _source_rows(detection: Any) -> list[tuple[str, str]]:
    """What found the events: the model and its threshold, or the label files measured (``casparks measure``)."""
    labels = getattr(detection, "labels", None)
    if labels is None:
        return [("model", detection.model or "–"), ("event threshold", _fmt(detection.event_threshold))]
    return [("labels measured (no model)", str(labels.get("class_label") or "given as arrays")),
            *([("event ids from", str(labels["event_label"]))] if labels.get("event_label") else [])]


_EVENT_COLUMNS = ("id", "class", "confidence", "start_ms", "peak_ms", "duration_ms", "peak_x_um", "peak_y_um",
                  "amplitude_dff", "fwhm_um", "fdhm_ms", "time_to_peak_ms", "decay_tau_ms", "speed_um_per_s", "snr")


def _events_html(events: pd.DataFrame) -> str:
    if not len(events):
        return "<p class='note'>No events.</p>"
    columns = [c for c in _EVENT_COLUMNS if c in events]
    return _table(events[columns], classes="events")


def _first_names(names: Sequence[str], shown: int = 5) -> str:
    """The first few of a list of movies named in a note, "…" for the rest."""
    return ", ".join(names[:shown]) + (" …" if len(names) > shown else "")


def _frequency_note(detection: Any) -> str:
    """What the page's frequencies are per: the cell, or the field where the detection fell back
    to it (most events peaked outside the cell found), which the page had called the cell; a cell
    across the scan (along y) inflates the per 100 µm ones, which detect only logged."""
    if detection.frequency_per == "field":
        return ("Frequencies are per the whole field (its width along x and its area: \"cell\" above): most "
                "events peak outside the cell found in the movie's resting image")
    return ("Frequencies are per the cell found in the movie's resting image (its length along x and its area: "
            "\"cell\" above)" + ("; it spans more of y than of x, so the per 100 µm frequencies (per its short "
                                 "extent along x) are inflated: compare those per 1000 µm²" if detection.cell_along_y
                                 else ""))


def _movie_page(plan: _Plan, detection: Any, pngs: dict[str, bytes], table: pd.DataFrame, video_info: dict | None,
                back: Path | None, csv_link: str | None) -> str:
    stem = html.escape(plan.stem)
    counts = format_counts(detection.counts)
    parts = [f"<h1>casparks report: {stem}</h1>"]
    if back is not None:
        parts.append(f'<p><a href="{_href(plan.page, back)}">← all movies</a></p>')
    parts.append(f"<p>{html.escape(counts)}.</p>")
    parts.append(_meta_html(detection, plan.movie_path))
    parts.append("<h2>Summary</h2>")
    parts.append(_summary_html(table))
    parts.append(f'<p class="note">{_frequency_note(detection)}; medians skip '
                 f'failed measurements. <a href="{_href(plan.page, plan.assets["summary"])}">CSV</a>'
                 + (f' · <a href="{csv_link}">all events (CSV)</a>' if csv_link else "") + "</p>")
    sections = (("Where and when", ("projection", "kymograph")), ("Events", ("traces",)),
                ("Measurements", ("distributions", "frequency")))
    for heading, kinds in sections:
        parts.append(f"<h2>{heading}</h2>")
        for kind in kinds:
            parts.append(_img(pngs[kind], f"{plan.stem}: {kind}", _href(plan.page, plan.assets[kind]), _CAPTIONS[kind]))
    if "overlay_tiff" in plan.assets:
        parts.append("<h2>Overlay movie</h2>")
        links = [f'<a href="{_href(plan.page, plan.assets["overlay_tiff"])}">RGB TIFF</a> (Fiji/ImageJ, with units)']
        if "overlay_mp4" in plan.assets and video_info:
            src = _href(plan.page, plan.assets["overlay_mp4"])
            parts.append(f'<video controls loop muted playsinline preload="metadata" src="{src}"></video>')
            links.append(f'<a href="{src}">MP4</a> ({video_info["fps"]:.3g} frames/s, '
                         f'{video_info["slowdown"]:.2g}× slower than real time, enlarged {video_info["scale"]}×)')
        parts.append("<p class='note'>The recording (contrast-stretched) with event voxels tinted by class: "
                     + ", ".join(f"{_swatch(n)}{n}s" for n in CLASS_NAMES.values()) + ". " + " · ".join(links) + "</p>")
    parts.append("<h2>Events</h2>")
    parts.append(f"<details><summary>All {len(detection.events)} events (times in ms, positions in µm)</summary>"
                 f"{_events_html(detection.events)}</details>")
    parts.append("<h2>Settings</h2>")
    if getattr(detection, "labels", None) is None:
        settings = json.dumps({"model": detection.model, "event_threshold": detection.event_threshold,
                               **detection.settings, "timings_s": detection.timings_s}, indent=2, default=str)
        parts.append(f"<details><summary>Model and every detection setting</summary><pre>{html.escape(settings)}"
                     "</pre></details>")
    else:
        settings = json.dumps({"labels": detection.labels, **detection.settings, "timings_s": detection.timings_s},
                              indent=2, default=str)
        parts.append(f"<details><summary>The labels and every measurement setting</summary><pre>"
                     f"{html.escape(settings)}</pre></details>")
    return _page(f"casparks report: {plan.stem}", "\n".join(parts))


def _summary_page(main: Path, plans: Sequence[_Plan], rows: list[dict[str, Any]], pngs: dict[str, bytes],
                  pooled: pd.DataFrame, settings: list[dict[str, Any]], assets: dict[str, Path],
                  per_field: Sequence[str] = ()) -> str:
    parts = [f"<h1>casparks report: {len(plans)} movies</h1>",
             f"<p>{html.escape(str(plans[0].summary_path.parent.resolve()))}</p>", "<h2>Movies</h2>"]
    headings = {"movie": "movie", "frames": "frames", "duration_s": "duration s", "cell_length_um": "cell length µm",
                "cell_area_um2": "cell area µm²", "frequency_per": "frequencies per",
                **{f"{n}s": f"{n}s" for n in CLASS_NAMES.values()},
                **{f"{n}s_per_100um_per_s": f"{n}s per 100 µm per s" for n in CLASS_NAMES.values()}}
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in headings if c in frame.columns]]  # the CSV has every column
    frame["movie"] = [_Raw(f'<a href="{_href(main, p.page)}">{html.escape(p.stem)}</a>') for p in plans]
    parts.append(_table(frame, headings))
    parts.append(f'<p class="note"><a href="{_href(main, assets["table"])}">CSV</a></p>')
    parts.append("<h2>All movies pooled</h2>")
    parts.append(_summary_html(pooled))
    parts.append(f'<p class="note"><a href="{_href(main, assets["classes"])}">CSV</a></p>')
    if per_field and len(per_field) < len(plans):
        means = (f"frequencies are the mean over the {len(plans) - len(per_field)} movies whose frequencies are per "
                 f"the cell; {len(per_field)} movie(s) whose frequencies are per the whole field (most events peaked "
                 f"outside the cell found: its \"cell\" columns are the field's) are left out of it: "
                 f"{_first_names(per_field)}")
    elif per_field:
        means = ("frequencies are the mean over movies, each per the whole field (most events peaked outside the "
                 "cell found in every movie: the \"cell\" columns are the field's)")
    else:
        means = "frequencies are the mean over movies, each per its cell"
    # a cell across the scan: its per 100 µm frequencies are per its short extent along x (inflated)
    along_y = [r["movie"] for r in rows if r.get("cell_along_y") and r.get("frequency_per") != "field"]
    if along_y:
        means += (f"; the per 100 µm frequencies of {len(along_y)} movie(s) whose cell spans more of y than of x "
                  f"are per its short axis (inflated: compare those per 1000 µm²): {_first_names(along_y)}")
    parts.append(f"<p class='note'>Counts summed over movies; {html.escape(means)}; "
                 "medians of the events measured.</p>")
    parts.append(_img(pngs["distributions"], "pooled distributions", _href(main, assets["distributions"]),
                      _CAPTIONS["distributions"]))
    parts.append(_img(pngs["frequency"], "frequency per movie", _href(main, assets["frequency"]),
                      "Event frequency per class: bars the mean over movies, dots the movies."))
    parts.append("<h2>Settings</h2>")
    from .detection import EXECUTION_SETTINGS, LABELS_MODEL

    # how each movie ran (device, precision, where the checkpoint lay) is not what it found: a
    # folder continued on another machine with --skip-existing was "different models or settings"
    distinct = {json.dumps({k: v for k, v in s.items() if k not in EXECUTION_SETTINGS}, sort_keys=True, default=str)
                for s in settings}
    measured = all(s.get("model") == LABELS_MODEL for s in settings)  # casparks measure: no model ran
    if len(distinct) == 1 and measured:
        parts.append("<p>Every movie's labels were measured (no model) with the same settings.</p>")
        shown = {k: v for k, v in settings[0].items() if k != "model"}  # "labels": no model ran
        parts.append(f"<details><summary>Every measurement setting</summary><pre>"
                     f"{html.escape(json.dumps(shown, indent=2, default=str))}</pre></details>")
    elif len(distinct) == 1:
        parts.append("<p>Every movie was detected with the same model and settings.</p>")
        parts.append(f"<details><summary>Model and every detection setting</summary><pre>"
                     f"{html.escape(json.dumps(settings[0], indent=2, default=str))}</pre></details>")
    else:
        parts.append("<p><strong>The movies were detected with different models or settings</strong>; each movie's "
                     "page lists its own.</p>")
    return _page(f"casparks report: {len(plans)} movies", "\n".join(parts))


# ----------------------------------------------------------------------------------------------
# the entry point


def write_report(
    path: str | Path,
    out: str | Path | None = None,
    movie: str | Path | None = None,
    overwrite: bool = False,
    video: bool = True,
    *,
    channel: int | None = None,
    kymograph_y_um: float | None = None,
    gallery_per_class: int = 6,
    dpi: float = 120,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Write the report of a detection folder (or one ``<stem>_detection.json``); see the module docstring.

    ``out``: the main page (``.html``) or a folder for ``report.html`` (default: the detection
    folder). ``movie``: the movie file (one movie) or a folder holding the movies, when they are
    no longer where detection found them. ``video=False`` skips the overlay movies (TIFF and
    MP4). ``channel``: the calcium channel of multi-channel movies. ``kymograph_y_um``: draw the
    kymograph along a line at this y (µm) instead of the maximum over y. ``dpi``: of the PNGs.
    ``progress(done, total)`` is called after each movie.
    """
    if gallery_per_class < 1:
        raise CasparksError(f"gallery_per_class must be at least 1, got {gallery_per_class}")
    if movie is not None and not home_path(movie).exists():  # one line, not one per movie of the folder
        raise CasparksError("no such movie file or folder", path=movie, fix="check the --movie path")
    main, assets, plans = _plan(home_path(path), out, movie, video, channel, overwrite, kymograph_y_um)
    several = len(plans) > 1
    written: list[Path] = []
    results = []
    for i, plan in enumerate(plans):
        result = _write_movie(plan, main if several else None, kymograph_y_um, gallery_per_class, dpi,
                              overwrite)
        written += result["files"]
        results.append(result)
        log.info("%s: report page %s", plan.stem, plan.page)
        if progress is not None:
            progress(i + 1, len(plans))
    if several:
        written += _write_summary(main, assets, plans, results, dpi, overwrite)
    if overwrite:  # a report written over another holds only its own files
        _remove_stale(main, assets, written)
    return Report(main=main, pages={p.stem: p.page for p in plans}, files=tuple(written))


def _write_movie(plan: _Plan, summary_page: Path | None, kymograph_y_um: float | None,
                 gallery_per_class: int, dpi: float, overwrite: bool) -> dict[str, Any]:
    """One movie's figures, table, overlays and page (in that order); returns what the summary needs."""
    from . import figures
    from .detection import movie_row, read_detection
    from .io import write_csv
    from .measure import event_frequency, frequency_cell_size
    from .projects import read_detected_movie
    from .overlay import mp4_settings, write_overlay_mp4, write_overlay_tiff

    detection = read_detection(plan.summary_path, probabilities=False)  # the report draws none
    px, dt = detection.pixel_size_um, detection.frame_interval_ms
    recording = read_detected_movie(plan.movie_path, plan.stem, detection.movie_fingerprint, px, dt, plan.channel)
    # from the events table, as the counts are: a table filtered by hand gives its own rates,
    # per the cell the detection found (a detection of an earlier version recorded the field)
    recorded = detection.frequency
    frequency = event_frequency(detection.events, detection.class_label.shape, px, dt,
                                cell_size=frequency_cell_size(recorded))
    if len(recorded) and "count" in recorded and recorded["count"].tolist() != frequency["count"].tolist():
        log.warning("%s: the events table holds %s events, the detection found %s: the report follows the table",
                    plan.stem, "/".join(map(str, frequency["count"])), "/".join(map(str, recorded["count"])))
    detection = dataclasses.replace(detection, frequency=frequency)
    figs = figures.detection_figures(detection, recording, kymograph_y_um=kymograph_y_um, per_class=gallery_per_class)
    pngs = {kind: figures.figure_png(fig, dpi) for kind, fig in figs.items()}
    del figs
    files = [_write_bytes(plan.assets[kind], png, overwrite) for kind, png in pngs.items()]
    table = summary_table(detection.events, frequency)
    files.append(write_csv(plan.assets["summary"], table, overwrite=overwrite))
    video_info = None
    if "overlay_tiff" in plan.assets:
        files.append(write_overlay_tiff(plan.assets["overlay_tiff"], recording.data, detection.class_label, px, dt,
                                        overwrite))
    if "overlay_mp4" in plan.assets:
        files.append(write_overlay_mp4(plan.assets["overlay_mp4"], recording.data, detection.class_label, dt, overwrite))
        video_info = mp4_settings(recording.shape, dt)
    events_csv = _href(plan.page, plan.summary_path.parent / f"{plan.stem}_events.csv")
    text = _movie_page(plan, detection, pngs, table, video_info, summary_page, events_csv)
    files.append(_write_bytes(plan.page, text.encode("utf-8"), overwrite))
    row = movie_row(plan.stem, detection.class_label.shape, px, dt, frequency, detection.model, detection.frequency_per,
                    detection.cell_along_y)
    return {"files": files, "row": row, "events": detection.events.assign(movie=plan.stem),
            "frequency": frequency.assign(movie=plan.stem), "settings": {"model": detection.model, **detection.settings}}


def _write_summary(main: Path, assets: Path, plans: Sequence[_Plan], results: Sequence[dict[str, Any]], dpi: float,
                   overwrite: bool) -> list[Path]:
    """The summary page of several movies: table, pooled figures, settings."""
    from . import figures
    from .io import write_csv

    files = _summary_assets(assets)
    events = pd.concat([r["events"] for r in results], ignore_index=True)
    frequency = pd.concat([r["frequency"] for r in results], ignore_index=True)
    rows = [r["row"] for r in results]
    # a movie whose frequencies are per the field (its events lay outside the cell found) would
    # pull a mean per cell down (1.5 against 10.8 per 1000 µm² per s for the same cell)
    per_field = [r["movie"] for r in rows if r.get("frequency_per") == "field"]
    if per_field and len(per_field) < len(rows):
        frequency = frequency[~frequency["movie"].isin(per_field)]
    pngs = {"distributions": figures.figure_png(figures.distributions_figure(
                events, title=f"measurements per class, {len(plans)} movies pooled"), dpi),
            "frequency": figures.figure_png(figures.frequency_figure(frequency), dpi)}
    written = [_write_bytes(files[kind], png, overwrite) for kind, png in pngs.items()]
    written.append(write_csv(files["table"], pd.DataFrame(rows), overwrite=overwrite))
    # every event of every movie, one row each: the table for statistics across cells
    pooled = events[["movie", *(c for c in events.columns if c != "movie")]]
    written.append(write_csv(files["events"], pooled, overwrite=overwrite))
    classes = summary_table(events, frequency)  # the page's pooled table, for statistics elsewhere
    written.append(write_csv(files["classes"], classes, overwrite=overwrite))
    text = _summary_page(main, plans, rows, pngs, classes, [r["settings"] for r in results], files, per_field)
    written.append(_write_bytes(main, text.encode("utf-8"), overwrite))
    return written
