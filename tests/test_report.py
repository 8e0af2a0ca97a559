"""The report: figures (units, class colours, empty movies), the overlay movie (TIFF, MP4), the HTML
pages and their files, input checks, the CLI, and the page opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from matplotlib.figure import Figure
from matplotlib.image import imread

import casparks
from casparks import figures
from casparks.classes import CLASS_COLORS, PUFF, SPARK, WAVE
from casparks.cli import main
from casparks.detection import Detection, read_detection, write_detection
from casparks.errors import CasparksError
from casparks.io import write_movie
from casparks.measure import MeasureConfig, event_frequency, measure_events
from casparks.overlay import (contrast_limits, mp4_available, mp4_settings, overlay_chunk, overlay_frames,
                              write_overlay_mp4, write_overlay_tiff)
from casparks.report import FIGURES, summary_table, write_report
from casparks.simulate import load_simulation_config, simulate_movie

#: 150 frames × 40 × 160 px of the dense preset; seed 21 has sparks, a wave and puffs
RICH = ("dense", {"n_frames": 150, "height_px": 40, "width_px": 160}, 21)
#: a tiny movie without any labelled event
EMPTY = ("default", {"n_frames": 80, "height_px": 32, "width_px": 96}, [0, 1])


def _truth_detection(preset, size, seed, name):
    """A Detection made from the simulator's truth (no network: fast, and every class present)."""
    sim = simulate_movie(load_simulation_config(preset, size), seed=seed)
    movie = sim.movie
    px, dt = movie.pixel_size_um, movie.frame_interval_ms
    events = measure_events(movie.data, sim.class_label, sim.event_label, px, dt)
    detection = Detection(
        name=name, source=None, pixel_size_um=px, frame_interval_ms=dt, class_label=sim.class_label,
        event_label=sim.event_label.astype(np.uint16), events=events,
        frequency=event_frequency(events, movie.shape, px, dt), event_threshold=0.5, model="truth",
        settings={"measure": MeasureConfig().to_dict(), "window_frames": 64}, timings_s={"total": 0.5},
    )
    return sim, detection


def _write(folder: Path, movies: Path, sim, detection) -> Path:
    """Movie into ``movies``, detection files into ``folder`` (recording the movie's path)."""
    movie_path = movies / f"{detection.name}.tif"
    write_movie(movie_path, sim.movie, overwrite=True)
    import dataclasses

    write_detection(dataclasses.replace(detection, source=movie_path), folder)
    return movie_path


@pytest.fixture(scope="module")
def rich():
    return _truth_detection(*RICH, name="cell_a")


@pytest.fixture(scope="module")
def dff(rich):
    sim, detection = rich
    return figures.detection_dff(sim.movie, detection)


@pytest.fixture(scope="module")
def shown(rich, dff):
    sim, _ = rich
    return figures.display_dff(dff, sim.movie.pixel_size_um, sim.movie.frame_interval_ms)


@pytest.fixture(scope="module")
def detection_dir(tmp_path_factory, rich):
    root = tmp_path_factory.mktemp("report")
    (root / "movies").mkdir()
    _write(root / "det", root / "movies", *rich)
    return root / "det"


@pytest.fixture(scope="module")
def report(detection_dir, tmp_path_factory):
    """One full report (with the overlay movies), shared by the checks of its files."""
    out = tmp_path_factory.mktemp("out") / "cell.html"
    return write_report(detection_dir, out=out)


def _rgb01(code):
    return tuple(c / 255 for c in CLASS_COLORS[code])


# ----------------------------------------------------------------------------------------------
# figures


def test_projection_outlines_each_class_in_its_colour_in_micrometres(rich, shown):
    sim, detection = rich
    px = sim.movie.pixel_size_um
    _, H, W = sim.movie.shape
    fig = figures.projection_figure(shown, detection.class_label, px, detection.events)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (µm)" and ax.get_ylabel() == "y (µm)"
    assert ax.images[0].get_extent() == pytest.approx([0, W * px, H * px, 0])
    np.testing.assert_allclose(ax.images[0].get_array(), shown.max(axis=0))
    for code, name in ((SPARK, "spark"), (WAVE, "wave"), (PUFF, "puff")):
        outline = [c for c in ax.collections if c.get_gid() == f"outline-{name}"]
        assert len(outline) == 1, name
        assert tuple(outline[0].get_edgecolor()[0][:3]) == pytest.approx(_rgb01(code))
    # the spark outline lies on the sparks' pixels, in µm
    mask = (detection.class_label == SPARK).any(axis=0)
    ys, xs = np.nonzero(mask)
    vertices = np.concatenate([p.vertices for p in
                               next(c for c in ax.collections if c.get_gid() == "outline-spark").get_paths()])
    assert vertices[:, 0].min() >= xs.min() * px - px and vertices[:, 0].max() <= (xs.max() + 1) * px + px
    assert vertices[:, 1].min() >= ys.min() * px - px and vertices[:, 1].max() <= (ys.max() + 1) * px + px
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [f"sparks ({detection.counts['spark']})", f"waves ({detection.counts['wave']})",
                      f"puffs ({detection.counts['puff']})"]


def test_projection_ids_at_the_fields_edges_stay_inside_it(rich, shown):
    """A spark 0.06 µm from the top had its id written above it, outside the axes: clipped away."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    sim, detection = rich
    px = sim.movie.pixel_size_um
    _, H, W = sim.movie.shape
    events = detection.events.head(3).copy()
    events[["peak_y_um", "peak_x_um"]] = [[0.06, 5.0], [H * px / 2, W * px - 0.1], [H * px / 2, W * px / 2]]
    fig = figures.projection_figure(shown, detection.class_label, px, events)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_text() in {str(i) for i in events["id"]}]
    assert len(labels) == 3
    frame = ax.get_window_extent()
    for label in labels:
        box = label.get_window_extent(renderer=canvas.get_renderer())
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, label.get_text()


def test_kymograph_shows_max_over_y_or_a_line_with_units(rich, shown):
    sim, detection = rich
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    T, H, W = sim.movie.shape
    fig = figures.kymograph_figure(shown, detection.class_label, px, dt, detection.events)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "t (ms)" and ax.get_ylabel() == "x (µm)"  # 1.02 s: milliseconds
    assert "max over y" in ax.get_title()
    np.testing.assert_allclose(ax.images[0].get_array(), shown.max(axis=1).T)
    assert ax.images[0].get_extent() == pytest.approx([0, T * dt, W * px, 0])
    wave = [c for c in ax.collections if c.get_gid() == "outline-wave"]
    assert wave and tuple(wave[0].get_edgecolor()[0][:3]) == pytest.approx(_rgb01(WAVE))
    line = figures.kymograph_figure(shown, detection.class_label, px, dt, y_um=4.1, line_width_um=0.6, name="cell_a")
    ax = line.axes[0]
    assert ax.get_title().startswith("cell_a: kymograph: ΔF/F0 along a line at y = 4.1 µm (0.6 µm wide)")
    np.testing.assert_allclose(ax.images[0].get_array(), shown[:, 19:22].mean(axis=1).T, rtol=1e-6)
    with pytest.raises(ValueError, match="outside the field"):
        figures.kymograph_figure(shown, detection.class_label, px, dt, y_um=H * px + 1)


def test_every_figure_title_names_the_movie(rich, dff, shown):
    sim, detection = rich
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    made = [
        figures.projection_figure(shown, detection.class_label, px, detection.events, name="cell_a"),
        figures.kymograph_figure(shown, detection.class_label, px, dt, detection.events, name="cell_a"),
        figures.trace_gallery_figure(dff, detection.event_label, detection.events, px, dt, name="cell_a"),
        figures.distributions_figure(detection.events, name="cell_a"),
        figures.frequency_figure(detection.frequency, name="cell_a"),
    ]
    titles = [fig.axes[0].get_title() for fig in made[:2]] + [fig.get_suptitle() for fig in made[2:]]
    assert all(t.startswith("cell_a: ") for t in titles), titles
    assert figures.distributions_figure(detection.events, title="mine").get_suptitle() == "mine"


def test_detection_figures_makes_all_five_from_a_detection_and_its_movie(rich):
    sim, detection = rich
    made = figures.detection_figures(detection, sim.movie, kymograph_y_um=4.1, per_class=2)
    assert list(made) == ["projection", "kymograph", "traces", "distributions", "frequency"]
    assert all(isinstance(fig, Figure) for fig in made.values())
    assert "line at y = 4.1 µm" in made["kymograph"].axes[0].get_title()
    assert sum(ax.get_title().startswith("spark ") for ax in made["traces"].axes) == 2


def test_detection_figures_take_the_movies_file(rich, tmp_path):
    """A path was taken for an array: "a movie is a T×Y×X array, got shape ()"."""
    from casparks.io import write_movie

    sim, detection = rich
    path = write_movie(tmp_path / "cell_a.tif", sim.movie)
    made = figures.detection_figures(detection, str(path), per_class=2)
    assert list(made) == ["projection", "kymograph", "traces", "distributions", "frequency"]
    in_memory = figures.detection_figures(detection, sim.movie, per_class=2)
    np.testing.assert_array_equal(made["projection"].axes[0].images[0].get_array(),
                                  in_memory["projection"].axes[0].images[0].get_array())


def test_empty_movie_gives_figures_that_say_no_events():
    T, H, W = 400, 8, 16
    zeros, labels = np.zeros((T, H, W), np.float32), np.zeros((T, H, W), np.uint8)
    empty = pd.DataFrame(columns=["id", "class", "start_ms", "end_ms", "amplitude_dff", "fwhm_um", "fdhm_ms",
                                  "duration_ms"])
    frequency = event_frequency(empty, (T, H, W), 0.2, 6.8)
    made = {
        "projection": figures.projection_figure(zeros, labels, 0.2),
        "kymograph": figures.kymograph_figure(zeros, labels, 0.2, 6.8),
        "traces": figures.trace_gallery_figure(zeros, labels.astype(np.uint16), empty, 0.2, 6.8),
        "distributions": figures.distributions_figure(empty),
        "frequency": figures.frequency_figure(frequency),
    }
    for name, fig in made.items():
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any(t.startswith("no ") for t in texts), name
        assert figures.figure_png(fig, dpi=40)[:4] == b"\x89PNG"
    assert made["kymograph"].axes[0].get_xlabel() == "t (s)"  # 2.7 s: seconds
    assert {t.get_text() for ax in made["traces"].axes for t in ax.texts} == {"no sparks", "no waves", "no puffs"}


def test_a_line_kymographs_colour_scale_reaches_its_events():
    """Events covering under 0.5 % of a line's kymograph: the 99.5th percentile of the image
    topped the scale at 0.09 for sparks of 0.3-0.9, every spark shown saturated."""
    rng = np.random.default_rng(0)
    T, H, W = 400, 16, 64
    dff = (0.03 * rng.standard_normal((T, H, W))).astype(np.float32)
    classes = np.zeros((T, H, W), np.uint8)
    dff[100:104, 6:10, 20:24] += 0.6  # one spark on the line
    classes[100:104, 6:10, 20:24] = SPARK
    fig = figures.kymograph_figure(dff, classes, 0.2, 6.8, y_um=1.6, line_width_um=0.6)
    assert fig.axes[0].images[0].get_clim()[1] >= 0.5


def test_a_narrow_cells_projection_is_scaled_by_the_cell_not_the_background_noise():
    """A 6 µm cell in a 12.8 µm field: the dim background's ΔF/F0 noise (a few) set the grey
    scale, and the cell's sparks of 0.6 showed near black."""
    rng = np.random.default_rng(1)
    T, H, W = 200, 64, 128
    dff = (0.05 * rng.standard_normal((T, H, W))).astype(np.float32)
    cell = np.zeros((H, W), bool)
    cell[17:47] = True
    dff[:, ~cell] = 1.5 * rng.standard_normal((T, int((~cell).sum())))  # F0 near 0: ΔF/F0 is noise
    classes = np.zeros((T, H, W), np.uint8)
    dff[50:54, 30:34, 60:64] += 0.6
    classes[50:54, 30:34, 60:64] = SPARK
    fig = figures.projection_figure(dff, classes, 0.2, cell=cell)
    assert 0.5 <= fig.axes[0].images[0].get_clim()[1] <= 1.0
    whole_field = figures.projection_figure(dff, classes, 0.2)  # without the cell: the field's scale, as before
    assert whole_field.axes[0].images[0].get_clim()[1] > 3.0


def test_long_kymograph_keeps_short_events_by_taking_the_max_over_frames():
    T, H, W = 3000, 4, 10
    dff, labels = np.zeros((T, H, W), np.float32), np.zeros((T, H, W), np.uint8)
    dff[1234, 2, 5], labels[1234, 2, 5] = 1.0, SPARK  # a one-frame event
    fig = figures.kymograph_figure(dff, labels, 0.2, 6.8, max_columns=1000)
    ax = fig.axes[0]
    image = ax.images[0].get_array()
    assert image.shape == (W, 1000) and image[5, 1234 // 3] == 1.0 and image.sum() == 1.0
    assert "max over 3 frames per column" in ax.get_title()
    assert ax.images[0].get_extent() == pytest.approx([0, T * 6.8 / 1000, W * 0.2, 0])
    outline = next(c for c in ax.collections if c.get_gid() == "outline-spark").get_paths()[0].vertices
    assert outline[:, 0].mean() == pytest.approx(1234.5 * 6.8 / 1000, abs=3 * 6.8 / 1000)


def test_trace_gallery_shows_each_class_with_span_and_units(rich, dff):
    sim, detection = rich
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    fig = figures.trace_gallery_figure(dff, detection.event_label, detection.events, px, dt, per_class=3)
    events = detection.events
    expected = {name: min(3, int((events["class"] == name).sum())) for name in ("spark", "wave", "puff")}
    titles = [ax.get_title() for ax in fig.axes]
    for name, n in expected.items():
        assert sum(t.startswith(f"{name} ") for t in titles) == n
    for ax in fig.axes:
        assert ax.get_xlabel() == "t (ms)"
        event_id = int(ax.get_title().split()[1].rstrip(","))
        row = events.set_index("id").loc[event_id]
        span = ax.patches[0]
        x0, width = span.get_x(), span.get_width()
        assert (x0, x0 + width) == pytest.approx((row["start_ms"], row["end_ms"]))
        assert tuple(span.get_facecolor()[:3]) == pytest.approx(_rgb01({"spark": SPARK, "wave": WAVE, "puff": PUFF}[row["class"]]))
        t, values = ax.lines[0].get_data()
        inside = (t >= row["start_ms"]) & (t <= row["end_ms"])
        # baseline and decay shown, where the movie has them
        assert t.min() < row["start_ms"] or row["start_ms"] == 0
        assert t.max() > row["end_ms"] or row["end_ms"] == sim.movie.duration_ms
        assert values[inside].max() > np.median(values[~inside])  # the event rises above its surroundings
    assert fig.axes[0].get_ylabel() == "ΔF/F0"
    # the brightest spark comes first
    sparks = events[events["class"] == "spark"].sort_values("amplitude_dff", ascending=False)
    assert titles[0].startswith(f"spark {int(sparks['id'].iloc[0])},")


@pytest.mark.parametrize("px, square", [(0.2, "3 × 3 px, 0.6 µm"), (0.3, "one pixel"), (0.1, "5 × 5 px, 0.5 µm")])
def test_trace_gallery_says_the_square_it_averages_and_its_title_fits(rich, dff, px, square):
    """The title said "mean over 0.6 µm" at any pixel size (1 px = 0.3 µm was averaged at 0.3 µm),
    and was cut off at both ends with three or fewer columns."""
    sim, detection = rich
    events = detection.events[detection.events["class"] == "wave"]
    fig = figures.trace_gallery_figure(dff, detection.event_label, events, px, sim.movie.frame_interval_ms,
                                       name="a_movie_with_a_long_name")
    title = fig._suptitle
    assert f"(mean over {square})" in title.get_text().replace("\n", " ")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    box = title.get_window_extent(renderer=canvas.get_renderer())
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_distributions_and_frequency_plot_the_table_values(rich):
    _, detection = rich
    events = detection.events
    fig = figures.distributions_figure(events)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["amplitude (ΔF/F0)", "FWHM (µm)", "FDHM (ms)", "duration (ms)"]
    ax = fig.axes[0]
    spark_dots = ax.collections[0].get_offsets()[:, 1]
    amplitudes = events.loc[events["class"] == "spark", "amplitude_dff"].dropna()
    np.testing.assert_allclose(np.sort(spark_dots), np.sort(amplitudes))
    assert tuple(ax.collections[0].get_facecolor()[0][:3]) == pytest.approx(_rgb01(SPARK))
    freq = figures.frequency_figure(detection.frequency)
    assert [a.get_ylabel() for a in freq.axes] == ["events / 100 µm / s", "events / 1000 µm² / s"]
    heights = [bar.get_height() for bar in freq.axes[0].patches]
    np.testing.assert_allclose(heights, detection.frequency["per_100um_per_s"])
    # pooled over movies: bars are the mean, one dot per movie
    pooled = pd.concat([detection.frequency.assign(movie="a"),
                        detection.frequency.assign(movie="b", per_100um_per_s=0.0)], ignore_index=True)
    freq = figures.frequency_figure(pooled)
    np.testing.assert_allclose([b.get_height() for b in freq.axes[0].patches],
                               detection.frequency["per_100um_per_s"] / 2)
    assert len(freq.axes[0].collections) == 3  # dots per class


def test_summary_table_counts_frequencies_and_medians(rich):
    _, detection = rich
    table = summary_table(detection.events, detection.frequency).set_index("class")
    events = detection.events
    for name in ("spark", "wave", "puff"):
        own = events[events["class"] == name]
        assert table.loc[name, "count"] == len(own)
        assert table.loc[name, "median_amplitude_dff"] == pytest.approx(own["amplitude_dff"].median())
        assert table.loc[name, "median_duration_ms"] == pytest.approx(own["duration_ms"].median())
        rate = detection.frequency.set_index("class").loc[name, "per_100um_per_s"]
        assert table.loc[name, "per_100um_per_s"] == pytest.approx(rate)
    # a frequency of 7 sparks in 32 µm × 1.02 s: 21.4 per 100 µm per s
    assert table.loc["spark", "per_100um_per_s"] == pytest.approx(7 / 0.32 / 1.02)
    empty = summary_table(events.iloc[0:0], detection.frequency.assign(count=0, per_100um_per_s=0.0))
    assert list(empty["count"]) == [0, 0, 0] and empty["median_fwhm_um"].isna().all()


# ----------------------------------------------------------------------------------------------
# overlay


def test_overlay_tints_event_voxels_by_class_and_leaves_the_rest_grey(rich):
    sim, detection = rich
    data, labels = sim.movie.data, detection.class_label
    limits = contrast_limits(data)
    rgb = overlay_chunk(data, labels, limits, alpha=0.55)
    assert rgb.shape == (*data.shape, 3) and rgb.dtype == np.uint8
    background = labels == 0
    assert np.array_equal(rgb[background][:, 0], rgb[background][:, 1])
    assert np.array_equal(rgb[background][:, 1], rgb[background][:, 2])
    lo, hi = limits
    grey = np.clip((data[background].astype(np.float32) - lo) * 255 / (hi - lo), 0, 255)
    assert np.abs(rgb[background][:, 0] - grey).max() <= 1
    for code in (SPARK, WAVE, PUFF):
        voxels = labels == code
        g = np.clip((data[voxels].astype(np.float32) - lo) * 255 / (hi - lo), 0, 255)
        expected = 0.45 * g[:, None] + 0.55 * np.asarray(CLASS_COLORS[code], np.float32)
        assert np.abs(rgb[voxels].astype(np.float32) - expected).max() <= 1
    chunks = list(overlay_frames(data, labels, limits, chunk_frames=32))
    assert [len(c) for c in chunks] == [32, 32, 32, 32, 22]
    assert np.array_equal(np.concatenate(chunks), rgb)


def test_overlay_tiff_is_an_imagej_rgb_stack_with_units(rich, tmp_path):
    sim, detection = rich
    path = write_overlay_tiff(tmp_path / "o.tif", sim.movie.data, detection.class_label, 0.2, 6.8, chunk_frames=40)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["unit"] == "um"
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.0068)
        assert tif.pages[0].tags["XResolution"].value == (5, 1)  # 5 px per µm
        stack = tif.asarray()
    np.testing.assert_array_equal(stack, overlay_chunk(sim.movie.data, detection.class_label,
                                                       contrast_limits(sim.movie.data)))
    with pytest.raises(CasparksError, match="exists already"):
        write_overlay_tiff(path, sim.movie.data, detection.class_label, 0.2, 6.8)


# the test extra installs imageio-ffmpeg: CI must run this test
@pytest.mark.skipif(not mp4_available() and not os.environ.get("CI"), reason="imageio-ffmpeg is not installed")
def test_overlay_mp4_pads_odd_sizes_enlarges_and_decodes(tmp_path):
    import imageio_ffmpeg

    rng = np.random.default_rng(0)
    data = rng.integers(100, 200, (20, 33, 47)).astype(np.uint16)
    labels = np.zeros(data.shape, np.uint8)
    labels[5:15, 10:20, 10:30] = SPARK
    settings = mp4_settings(data.shape, 6.8, min_size_px=200)
    assert settings["scale"] == 5 and (settings["width"], settings["height"]) == (236, 166)  # 235, 165 padded
    assert settings["fps"] == 30 and settings["slowdown"] == pytest.approx(1000 / 6.8 / 30)
    path = write_overlay_mp4(tmp_path / "o.mp4", data, labels, 6.8, min_size_px=200)
    assert path.stat().st_size > 1000
    assert not [p for p in tmp_path.iterdir() if p.name != "o.mp4"]  # no temporary left behind
    frames = imageio_ffmpeg.read_frames(str(path))
    meta = next(frames)
    assert meta["size"] == (236, 166)
    decoded = [np.frombuffer(f, np.uint8).reshape(166, 236, 3) for f in frames]
    assert len(decoded) == 20
    # the spark region is amber (red and green above blue), the rest grey
    spark = decoded[10][60:90, 60:140].reshape(-1, 3).astype(int).mean(axis=0)
    rest = decoded[10][130:160, 150:230].reshape(-1, 3).astype(int).mean(axis=0)
    assert spark[0] - spark[2] > 60 and abs(rest[0] - rest[2]) < 15


@pytest.mark.parametrize("chunks_before", [0, 1])
def test_an_interrupted_overlay_mp4_leaves_no_file(tmp_path, monkeypatch, chunks_before):
    """The temporary MP4 was removed while ffmpeg still ran: ffmpeg then wrote it again (a hidden
    .part.mp4 left in the report's folder, and "Error writing trailer" on the terminal)."""
    import time

    import casparks.overlay as overlay

    frames = overlay.overlay_frames

    def interrupted(*args, **kwargs):
        for i, chunk in enumerate(frames(*args, **kwargs)):
            if i == chunks_before:
                raise KeyboardInterrupt
            yield chunk

    monkeypatch.setattr(overlay, "overlay_frames", interrupted)
    data = np.random.default_rng(0).integers(100, 200, (40, 16, 24)).astype(np.uint16)
    with pytest.raises(KeyboardInterrupt):
        write_overlay_mp4(tmp_path / "o.mp4", data, np.zeros(data.shape, np.uint8), 6.8, min_size_px=64,
                          chunk_frames=8)
    time.sleep(1.0)  # what a still-running ffmpeg would write comes back within this
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# the report


def test_report_writes_pages_pngs_tables_and_overlays(report, rich):
    _, detection = rich
    main = report.main
    assert main.name == "cell.html" and report.pages == {"cell_a": main}
    files = main.parent / "cell_files"
    names = sorted(p.name for p in files.iterdir())
    expected = [f"cell_a_{k}.png" for k in ("projection", "kymograph", "traces", "distributions", "frequency")]
    expected += ["cell_a_summary.csv", "cell_a_overlay.tif"] + (["cell_a_overlay.mp4"] if mp4_available() else [])
    assert names == sorted(expected)
    assert set(report.files) == {main, *(files / n for n in expected)}
    for name in expected[:5]:
        image = imread(files / name)
        assert image.shape[0] > 200 and image.shape[1] > 500
        assert image[..., :3].std() > 0.05, name  # not a blank image
    text = main.read_text()
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 5
    import base64

    assert base64.b64decode(images[0]) == (files / "cell_a_projection.png").read_bytes()
    assert "cell_files/cell_a_overlay.mp4" in text or not mp4_available()
    # the summary table: counts and the settings
    table = pd.read_csv(files / "cell_a_summary.csv").set_index("class")
    assert table.loc["spark", "count"] == detection.counts["spark"]
    assert f"<td>{detection.counts['spark']}</td>" in text
    assert "truth" in text and "window_frames" in text
    assert "7 sparks, 1 wave, 2 puffs" in text


def test_report_refuses_to_overwrite_and_replaces_when_asked(report, detection_dir):
    before = {p: p.stat().st_mtime_ns for p in report.files}
    with pytest.raises(CasparksError, match="exist already"):
        write_report(detection_dir, out=report.main)
    assert {p: p.stat().st_mtime_ns for p in report.files} == before
    again = write_report(detection_dir, out=report.main, overwrite=True, video=False)  # same dpi: other tests read it
    assert again.main == report.main and all(p.exists() for p in again.files)


def test_missing_movie_is_a_one_line_error_before_anything_is_written(rich, tmp_path):
    sim, detection = rich
    (tmp_path / "movies").mkdir()
    movie = _write(tmp_path / "det", tmp_path / "movies", sim, detection)
    moved = tmp_path / "elsewhere" / movie.name
    moved.parent.mkdir()
    movie.rename(moved)
    out = tmp_path / "out" / "r.html"
    with pytest.raises(CasparksError) as info:
        write_report(tmp_path / "det", out=out, video=False, dpi=60)
    message = str(info.value)
    assert "\n" not in message and "--movie" in message and "cell_a" in message
    assert not out.parent.exists()
    # found with --movie (the file, or the folder holding it)
    assert write_report(tmp_path / "det", out=out, movie=moved, video=False, dpi=60).main.exists()
    assert write_report(tmp_path / "det", out=out, movie=moved.parent, video=False, overwrite=True, dpi=60).main.exists()
    with pytest.raises(CasparksError, match="not in this folder"):
        write_report(tmp_path / "det", out=out, movie=tmp_path, video=False, overwrite=True)
    # the detection's own label stack has the movie's shape, but is not the movie
    with pytest.raises(CasparksError, match="is a label or probability stack, not the movie"):
        write_report(tmp_path / "det", out=out, movie=tmp_path / "det" / "cell_a_class_label.tif", video=False,
                     overwrite=True)
    # a movie of another shape is refused
    other = tmp_path / "other" / movie.name
    other.parent.mkdir()
    write_movie(other, type(sim.movie)(sim.movie.data[:50], 0.2, 6.8))
    with pytest.raises(CasparksError, match="shape"):
        write_report(tmp_path / "det", out=out, movie=other, video=False, overwrite=True)
    # a summary that records no movie (edited by hand) said the movie "is not at (not recorded) any more"
    summary_path = tmp_path / "det" / "cell_a_detection.json"
    summary = json.loads(summary_path.read_text())
    del summary["movie"]
    summary_path.write_text(json.dumps(summary))
    with pytest.raises(CasparksError, match="does not record its movie, and none named cell_a.tif lies beside it"):
        write_report(tmp_path / "det", out=out, video=False, overwrite=True)


def test_kymograph_line_outside_the_field_is_refused_before_writing(detection_dir, tmp_path):
    out = tmp_path / "k.html"
    with pytest.raises(CasparksError, match=r"y = 9 µm lies outside the field of 'cell_a' \(0 to 8 µm\)"):
        write_report(detection_dir, out=out, kymograph_y_um=9.0)
    assert list(tmp_path.iterdir()) == []


def test_folder_of_movies_gets_a_summary_page_and_an_empty_movie_works(rich, tmp_path):
    movies = tmp_path / "movies"
    movies.mkdir()
    _write(tmp_path / "det", movies, *rich)
    _write(tmp_path / "det", movies, *_truth_detection(*EMPTY, name="quiet"))
    with pytest.raises(CasparksError, match="several movies"):
        write_report(tmp_path / "det", movie=movies / "quiet.tif", video=False)
    result = write_report(tmp_path / "det", video=False, dpi=60)
    assert result.main == tmp_path / "det" / "report.html"
    assert result.pages == {"cell_a": tmp_path / "det" / "cell_a_report.html",
                            "quiet": tmp_path / "det" / "quiet_report.html"}
    summary = result.main.read_text()
    assert 'href="cell_a_report.html"' in summary and 'href="quiet_report.html"' in summary
    assert summary.count("<img ") == 2
    assert "same model and settings" in summary
    assert "medians of the events measured" in summary  # not "over all events": failed measurements are skipped
    rows = pd.read_csv(tmp_path / "det" / "report_files" / "summary-movies.csv").set_index("movie")
    assert rows.loc["cell_a", "sparks"] == 7 and rows.loc["quiet", "sparks"] == 0
    # the pooled table per class, as on the page
    classes = pd.read_csv(tmp_path / "det" / "report_files" / "summary-classes.csv").set_index("class")
    assert classes.loc["spark", "count"] == 7 and classes.loc["wave", "count"] == rows["waves"].sum()
    assert classes.loc["spark", "per_100um_per_s"] == pytest.approx(rows["sparks_per_100um_per_s"].mean())
    assert classes.loc["spark", "median_amplitude_dff"] == pytest.approx(
        casparks.read_events(tmp_path / "det").query("`class` == 'spark'")["amplitude_dff"].median())
    assert rows.loc["cell_a", "sparks_per_100um_per_s"] == pytest.approx(
        7 / (rows.loc["cell_a", "cell_length_um"] / 100) / rows.loc["cell_a", "duration_s"])
    quiet = result.pages["quiet"].read_text()
    assert "0 sparks, 0 waves, 0 puffs" in quiet and 'href="report.html"' in quiet
    assert quiet.count("<img ") == 5
    # one movie's JSON alone: <stem>_report.html beside it
    single = write_report(tmp_path / "det" / "quiet_detection.json", out=tmp_path / "single", video=False, dpi=60)
    assert single.main == tmp_path / "single" / "report.html"
    # every event of every movie in one table, as casparks.read_events gives it
    pooled = pd.read_csv(tmp_path / "det" / "report_files" / "summary-events.csv")
    table = casparks.read_events(tmp_path / "det")
    assert list(pooled.columns) == list(table.columns) and pooled.columns[0] == "movie"
    assert pooled["movie"].tolist() == table["movie"].tolist() == ["cell_a"] * len(table)
    assert (pooled["class"] == "spark").sum() == 7
    pd.testing.assert_frame_equal(pooled, table.astype({"movie": str}), check_dtype=False)
    # a movie without events has no row but is a category: a per-cell count includes it as 0
    assert list(table["movie"].cat.categories) == ["cell_a", "quiet"]
    per_cell = table[table["class"] == "spark"].groupby("movie", observed=False).size()
    assert per_cell.to_dict() == {"cell_a": 7, "quiet": 0}
    assert casparks.read_events(tmp_path / "det" / "quiet_detection.json").empty
    # the table of movies, from the summaries alone, is the report's
    movies = casparks.read_movies(tmp_path / "det")
    pd.testing.assert_frame_equal(movies.drop(columns="model"), rows.reset_index().drop(columns="model"),
                                  check_dtype=False)
    assert {"cell_length_um", "cell_area_um2", "sparks_per_1000um2_per_s", "pixel_size_um"} <= set(movies.columns)
    (tmp_path / "det" / "quiet_events.csv").unlink()
    with pytest.raises(CasparksError, match="detection of 'quiet' is incomplete: quiet_events.csv missing"):
        casparks.read_events(tmp_path / "det")


def test_read_events_and_read_movies_pool_conditions_and_count_a_cell_without_events(rich, tmp_path):
    """Two conditions' folders with the same movie names could not be pooled: pd.concat by hand
    lost the categorical movie column, so a cell without events vanished from per-cell counts."""
    import dataclasses

    from casparks.detection import read_events_table

    sim, detection = rich
    quiet = _truth_detection(*EMPTY, name="quiet")
    _write(tmp_path / "det_ctrl", tmp_path, sim, detection)
    _write(tmp_path / "det_ctrl", tmp_path, *quiet)
    _write(tmp_path / "det_iso", tmp_path, sim, detection)
    _write(tmp_path / "det_iso", tmp_path, sim, dataclasses.replace(detection, name="cell_b"))
    sparks = int((detection.events["class"] == "spark").sum())
    # one folder: exactly as before (no group column, movie the stem, the events table's dtypes)
    single = casparks.read_events(tmp_path / "det_ctrl")
    own = read_events_table(tmp_path / "det_ctrl" / "cell_a_events.csv")
    assert list(single.columns) == ["movie", *own.columns]
    assert single.drop(columns="movie").dtypes.equals(own.dtypes)
    assert isinstance(single["movie"].dtype, pd.CategoricalDtype)
    assert list(single["movie"].cat.categories) == ["cell_a", "quiet"]
    single_movies = casparks.read_movies(tmp_path / "det_ctrl")
    assert single_movies.columns[0] == "movie" and "group" not in single_movies.columns
    assert single_movies["movie"].tolist() == ["cell_a", "quiet"]
    # two conditions: a first categorical group column, movies named group/stem
    groups = {"ctrl": tmp_path / "det_ctrl", "iso": tmp_path / "det_iso"}
    events = casparks.read_events(groups)
    assert list(events.columns) == ["group", *single.columns]
    assert list(events["group"].cat.categories) == ["ctrl", "iso"]
    assert list(events["movie"].cat.categories) == ["ctrl/cell_a", "ctrl/quiet", "iso/cell_a", "iso/cell_b"]
    ctrl = events[events["group"] == "ctrl"].drop(columns="group").reset_index(drop=True)
    pd.testing.assert_frame_equal(ctrl.assign(movie=ctrl["movie"].astype(str).str.removeprefix("ctrl/")),
                                  single.assign(movie=single["movie"].astype(str)))
    # the documented count per cell: each cell once, the one without events as 0, no cell invented
    per_cell = events[events["class"] == "spark"].groupby("movie", observed=False).size()
    assert per_cell.to_dict() == {"ctrl/cell_a": sparks, "ctrl/quiet": 0, "iso/cell_a": sparks, "iso/cell_b": sparks}
    # read_movies: the same names, and the counts align on them for per-group statistics
    cells = casparks.read_movies(groups)
    assert list(cells.columns) == ["group", *single_movies.columns]
    assert list(cells["group"].cat.categories) == ["ctrl", "iso"]
    assert cells["movie"].tolist() == list(events["movie"].cat.categories)
    pd.testing.assert_frame_equal(cells[cells["group"] == "ctrl"].drop(columns=["group", "movie"]),
                                  single_movies.drop(columns="movie"))
    cells = cells.set_index("movie")
    cells["kept"] = per_cell
    assert cells.groupby("group", observed=True)["kept"].mean().to_dict() == {"ctrl": sparks / 2, "iso": sparks}
    # a list of folders: each group is its folder's name
    listed = casparks.read_events([tmp_path / "det_ctrl", str(tmp_path / "det_iso")])
    assert list(listed["group"].cat.categories) == ["det_ctrl", "det_iso"]
    assert casparks.read_movies((tmp_path / "det_iso",))["movie"].tolist() == ["det_iso/cell_a", "det_iso/cell_b"]
    # two folders of one name cannot both name a group: refused, in one line, pointing to the mapping
    (tmp_path / "a").mkdir()
    (tmp_path / "det_ctrl").rename(tmp_path / "a" / "det")
    (tmp_path / "det_iso").rename(tmp_path / "det")
    for read in (casparks.read_events, casparks.read_movies):
        with pytest.raises(CasparksError, match=r"two detection folders named 'det' .*mapping") as caught:
            read([tmp_path / "a" / "det", tmp_path / "det"])
        assert "\n" not in str(caught.value)
        with pytest.raises(CasparksError, match=r"^\S*missing: no such detection folder") as caught:
            read({"ctrl": tmp_path / "det", "iso": tmp_path / "missing"})
        assert "\n" not in str(caught.value)
        with pytest.raises(CasparksError, match=r"two groups named '1'"):  # one replaced the other, silently
            read({1: tmp_path / "det", "1": tmp_path / "a" / "det"})
        with pytest.raises(CasparksError, match=r"two detection results of one folder named 'det'"):
            read([tmp_path / "det" / "cell_a_detection.json", tmp_path / "det" / "cell_b_detection.json"])


def test_pooled_frequencies_leave_out_movies_per_the_field_and_read_movies_follows_a_filtered_table(rich, tmp_path):
    """The summary page averaged a movie's frequencies per the field (its events outside the cell
    found: 1.5 per 1000 µm² per s) with the others' per the cell (10.8), without a word; and
    read_movies kept the detection's counts where summary-movies.csv followed a filtered table."""
    import dataclasses

    sim, detection = rich
    _write(tmp_path / "det", tmp_path, sim, detection)
    field = dataclasses.replace(detection, name="cell_b", frequency_per="field",
                                frequency=detection.frequency.assign(per_100um_per_s=0.0, per_1000um2_per_s=0.0))
    _write(tmp_path / "det", tmp_path, sim, field)
    write_report(tmp_path / "det", video=False, dpi=60)
    page = (tmp_path / "det" / "report.html").read_text()
    assert "1 movie(s) whose frequencies are per the whole field" in page and "cell_b" in page
    pooled = pd.read_csv(tmp_path / "det" / "report_files" / "summary-movies.csv").set_index("movie")
    assert pooled.loc["cell_b", "frequency_per"] == "field"
    from casparks.report import summary_table

    own = summary_table(detection.events, detection.frequency.assign(movie="cell_a"))
    shown = re.search(r"All movies pooled</h2>(.*?)</table>", page, re.S).group(1)
    spark_rate = own.set_index("class").loc["spark", "per_100um_per_s"]
    from casparks.report import _fmt

    # the per-cell movie's rate, not halved by the field's zero
    assert f">{_fmt(spark_rate)}<" in shown and f">{_fmt(spark_rate / 2)}<" not in shown
    # a table filtered by hand: read_movies counts its rows, as summary-movies.csv does
    table_path = tmp_path / "det" / "cell_a_events.csv"
    events = pd.read_csv(table_path)
    sparks = events[events["class"] == "spark"]
    events.drop(index=sparks.index[:2]).to_csv(table_path, index=False)
    movies = casparks.read_movies(tmp_path / "det").set_index("movie")
    assert movies.loc["cell_a", "sparks"] == len(sparks) - 2
    write_report(tmp_path / "det", video=False, dpi=60, overwrite=True)
    rows = pd.read_csv(tmp_path / "det" / "report_files" / "summary-movies.csv").set_index("movie")
    assert rows.loc["cell_a", "sparks"] == len(sparks) - 2
    assert rows.loc["cell_a", "sparks_per_100um_per_s"] == pytest.approx(movies.loc["cell_a", "sparks_per_100um_per_s"])


def test_the_table_of_movies_and_the_summary_page_name_cells_along_y(rich, tmp_path):
    """A movie whose cell spans more of y than of x (its per 100 µm frequencies per its short
    axis) was marked on its own page only: read_movies and summary-movies.csv had no column for
    it, and the summary page pooled its per 100 µm frequencies silently."""
    import dataclasses

    sim, detection = rich
    _write(tmp_path / "det", tmp_path, sim, detection)
    _write(tmp_path / "det", tmp_path, sim, dataclasses.replace(detection, name="cell_b", cell_along_y=True))
    write_report(tmp_path / "det", video=False, dpi=60)
    rows = pd.read_csv(tmp_path / "det" / "report_files" / "summary-movies.csv")
    movies = casparks.read_movies(tmp_path / "det")
    for table in (rows, movies):
        columns = list(table.columns)
        assert columns[columns.index("frequency_per") + 1] == "cell_along_y"
        assert table.set_index("movie")["cell_along_y"].tolist() == [False, True]
    page = (tmp_path / "det" / "report.html").read_text()
    assert ("the per 100 µm frequencies of 1 movie(s) whose cell spans more of y than of x are per its short "
            "axis") in page and "1000 µm²): cell_b;" in page
    # a summary written before it was recorded: False
    summary_path = tmp_path / "det" / "cell_b_detection.json"
    summary = json.loads(summary_path.read_text())
    del summary["cell_along_y"]
    summary_path.write_text(json.dumps(summary))
    assert casparks.read_movies(tmp_path / "det")["cell_along_y"].tolist() == [False, False]
    write_report(tmp_path / "det", video=False, dpi=60, overwrite=True)
    assert "spans more of y" not in (tmp_path / "det" / "report.html").read_text()


def test_one_json_gets_its_own_page_and_leaves_the_folders_report_alone(rich, tmp_path):
    """`casparks report DIR/<stem>_detection.json --overwrite` was suspected of writing over the
    folder's report.html: its page is <stem>_report.html with <stem>_report_files/ beside it."""
    _write(tmp_path / "det", tmp_path, *rich)
    folder = write_report(tmp_path / "det", video=False, dpi=60)
    assert folder.main == tmp_path / "det" / "report.html"
    before = {p: p.read_bytes() for p in folder.files}
    single = write_report(tmp_path / "det" / "cell_a_detection.json", video=False, dpi=60, overwrite=True)
    assert single.main == tmp_path / "det" / "cell_a_report.html"
    assert {p.parent for p in single.files} == {single.main.parent, tmp_path / "det" / "cell_a_report_files"}
    assert {p: p.read_bytes() for p in folder.files} == before


def test_one_json_in_a_folder_of_several_movies_leaves_the_folders_report_whole(rich, tmp_path, capsys):
    """In a folder of several movies, <stem>_report.html is the movie's page of the folder's report
    (back link, figures in report_files/): `casparks report DIR/<stem>_detection.json --overwrite`
    wrote a standalone page over it (no link back, figures in <stem>_report_files/), and `--out DIR`
    put a movie's page in place of the summary and removed the overlay its page links to. Both are
    refused now, naming the folder's report; --out elsewhere still gives the movie's page alone."""
    det = tmp_path / "det"
    _write(det, tmp_path, *rich)
    _write(det, tmp_path, *_truth_detection(*EMPTY, name="quiet"))
    # before the folder has a report, one movie's report is made as documented (a review: it was refused)
    first = write_report(det / "quiet_detection.json", video=False, dpi=60)
    assert first.main == det / "quiet_report.html"
    for leftover in (first.main, *first.main.parent.joinpath("quiet_report_files").iterdir()):
        leftover.unlink()
    det.joinpath("quiet_report_files").rmdir()
    folder = write_report(det, dpi=60)  # with the overlay TIFFs, which a --no-video report removed
    assert 'href="report.html"' in folder.pages["cell_a"].read_text()
    before = {p: p.read_bytes() for p in det.rglob("*") if p.is_file()}
    one = det / "cell_a_detection.json"
    for out in (None, det, det / "quiet_report.html", det / "report.htm"):
        with pytest.raises(CasparksError, match="belongs to the report of the 2 movies") as caught:
            write_report(one, out=out, video=False, dpi=60, overwrite=True)
        assert "\n" not in str(caught.value) and f"casparks report {det} --overwrite" in str(caught.value)
    assert main(["report", str(one), "--overwrite", "--no-video"]) == 2
    assert "cell_a_report.html, which belongs to the report of the 2 movies" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in det.rglob("*") if p.is_file()} == before
    alone = write_report(one, out=tmp_path / "alone", video=False, dpi=60)
    assert alone.main == tmp_path / "alone" / "report.html" and "all movies" not in alone.main.read_text()
    assert {p: p.read_bytes() for p in det.rglob("*") if p.is_file()} == before


def test_report_of_a_real_detection(tmp_path):
    """casparks detect's own output (model settings, real JSON) renders."""
    from casparks.detection import DetectSettings, detect_files

    sim = simulate_movie(load_simulation_config(*EMPTY[:2]), seed=[0, 3])
    movie = tmp_path / "m.tif"
    write_movie(movie, sim.movie)
    detect_files([movie], tmp_path / "det", settings=DetectSettings(window_frames=64), device="cpu", progress=False)
    result = write_report(tmp_path / "det", video=False, dpi=60)
    assert result.main == tmp_path / "det" / "report.html"
    text = result.main.read_text()
    detection = read_detection(tmp_path / "det" / "m_detection.json")
    assert detection.model in text and "postprocess" in text
    assert text.count("<img ") == 5
    length, area = detection.frequency[["length_um", "area_um2"]].iloc[0]
    assert f"cell (frequencies per)</td><td style='text-align:left'>{length:.1f} µm along x, {area:.0f} µm²" in text


# ----------------------------------------------------------------------------------------------
# command line


def test_cli_report_exit_codes(detection_dir, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(detection_dir), "--out", str(out), "--no-video"]) == 0
    assert "r.html" in capsys.readouterr().out
    assert not (tmp_path / "r_files" / "cell_a_overlay.tif").exists()
    assert main(["report", str(detection_dir), "--out", str(out), "--no-video"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("casparks report: error:") and "exist already" in err and "\n" not in err
    assert main(["report", str(detection_dir), "--out", str(out), "--no-video", "--overwrite",
                 "--kymograph-y", "2.0"]) == 0
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_cli_missing_movie_exits_2_with_one_line(rich, tmp_path):
    sim, detection = rich
    (tmp_path / "movies").mkdir()
    movie = _write(tmp_path / "det", tmp_path / "movies", sim, detection)
    movie.unlink()
    result = subprocess.run([sys.executable, "-m", "casparks", "report", str(tmp_path / "det"), "--no-video"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "--movie" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------------------------
# the page in a browser

_PROBE = """<img id="probe-broken" alt="probe" src="data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAbroken">
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var out = document.createElement("pre");
  out.id = "image-check";
  out.textContent = JSON.stringify({count: images.length, broken: broken.map(function (i) { return i.id || i.alt; }),
                                    widths: images.map(function (i) { return i.naturalWidth; })});
  document.body.appendChild(out);
});
</script>
</body>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def test_report_opens_in_headless_chromium_with_every_image_decoded(report, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium (Debian's chromium package) to check the report")
        pytest.skip("chromium is not installed")
    text = report.main.read_text()
    assert text.count("</body>") == 1
    # a copy with a deliberately broken image and a script writing what the browser decoded into the page:
    # the check fails if the browser cannot show an image, and proves it can tell
    page = tmp_path / "check.html"
    page.write_text(text.replace("</body>", _PROBE))
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom",
               page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="image-check">(.*?)</pre>', result.stdout, re.DOTALL)
    assert found, f"chromium did not run the check (exit {result.returncode}): {result.stderr[-2000:]}"
    check = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert check["count"] == 6  # five figures and the probe
    assert check["broken"] == ["probe-broken"]
    assert all(w > 500 for w in check["widths"][:5])


def test_display_smoothing_in_blocks_equals_one_pass():
    from scipy import ndimage

    dff = np.random.default_rng(0).normal(0, 1, (50, 12, 20)).astype(np.float32)
    dff[3, 4, 5] = np.nan
    whole = ndimage.gaussian_filter(np.nan_to_num(dff), (1.0, 1.0, 1.0), truncate=2.0)
    for block in (7, 16, 50, 256):
        np.testing.assert_allclose(figures.display_dff(dff, 0.2, 6.8, block_frames=block), whole, atol=1e-6)


def test_detection_figures_stream_the_movie_and_show_what_the_whole_movie_shows(rich):
    """The images and traces of detection_figures (lazy ΔF/F0, blocks) equal those made from
    the whole smoothed movie, with a kymograph line too."""
    from casparks.measure import LazyDff

    sim, detection = rich
    movie = sim.movie
    px, dt = detection.pixel_size_um, detection.frame_interval_ms
    full = figures.detection_dff(movie, detection)
    lazy = figures.detection_dff(movie, detection, lazy=True)
    assert isinstance(lazy, LazyDff) and np.array_equal(np.asarray(lazy), full)
    shown = figures.display_dff(full, px, dt)
    y_um = 0.5 * detection.class_label.shape[1] * px
    rows = figures.line_rows(detection.class_label.shape[1], px, y_um)
    projection, kymograph = figures.display_projections(lazy, px, dt, line_rows=rows, block_frames=17)
    np.testing.assert_allclose(projection, shown.max(axis=0), atol=1e-6)
    np.testing.assert_allclose(kymograph, shown[:, rows].mean(axis=1), atol=1e-6)
    figs = figures.detection_figures(detection, movie)
    image = np.asarray(figs["projection"].axes[0].images[0].get_array())
    np.testing.assert_allclose(image, shown.max(axis=0), atol=1e-6)
    kymo = np.asarray(figs["kymograph"].axes[0].images[0].get_array())
    np.testing.assert_allclose(kymo, shown.max(axis=1).T, atol=1e-6)
    plain = figures.trace_gallery_figure(full, detection.event_label, detection.events, px, dt)
    for a, b in zip(figs["traces"].axes, plain.axes):
        for la, lb in zip(a.get_lines(), b.get_lines()):
            np.testing.assert_allclose(la.get_ydata(), lb.get_ydata(), atol=1e-6)


def test_display_dff_uses_the_dark_level_the_table_was_measured_with(rich):
    import dataclasses

    from casparks.measure import MeasureConfig, dff_movie

    sim, detection = rich
    auto = dataclasses.replace(detection, settings={"measure": MeasureConfig().to_dict()},
                               dark_level={"adu": 123.0, "method": "skewness"})
    expected = dff_movie(sim.movie.data, np.asarray(detection.event_label) > 0, detection.pixel_size_um,
                         detection.frame_interval_ms, MeasureConfig(offset_adu=123.0), detection.class_label)
    np.testing.assert_array_equal(figures.detection_dff(sim.movie, auto), expected)


def test_the_page_says_which_dark_level_the_amplitudes_used(rich, tmp_path):
    import dataclasses

    from casparks.report import _meta_html

    sim, detection = rich
    read = dataclasses.replace(detection, dark_level={"adu": 212.5, "se_adu": 1.8, "method": "skewness"})
    assert "dark level (ΔF/F0 offset)</td><td style='text-align:left'>212.5 ± 1.8 ADU (skewness)" in _meta_html(read, tmp_path)
    failed = dataclasses.replace(detection, dark_level={"adu": None, "method": "none", "reason": "no noise"})
    assert "not read: 0 used (none; no noise)" in _meta_html(failed, tmp_path)
    given = dataclasses.replace(detection, dark_level=None, settings={"measure": {"offset_adu": 100.0}})
    assert "100.0 ADU (given)" in _meta_html(given, tmp_path)


def test_the_page_says_which_channel_was_analysed(rich, tmp_path):
    import dataclasses

    from casparks.report import _meta_html

    _, detection = rich
    assert "channel" not in _meta_html(detection, tmp_path / "cell.tif")
    two = dataclasses.replace(detection, channel=1)
    assert f"{tmp_path / 'cell.tif'}, channel 1 (counted from 0)" in _meta_html(two, tmp_path / "cell.tif")


@pytest.mark.parametrize("damage, needle", [
    ("empty_csv", "events table cannot be read (EmptyDataError"),
    ("no_class_column", "events table lacks column(s) class"),
    ("short_event_label", "has shape (10, 32, 96), the class labels (80, 32, 96)"),
])
def test_a_later_movies_damaged_files_stop_the_report_before_anything_is_written(rich, tmp_path, damage, needle):
    movies = tmp_path / "movies"
    movies.mkdir()
    _write(tmp_path / "det", movies, *rich)
    sim, detection = _truth_detection(*EMPTY, name="quiet")
    _write(tmp_path / "det", movies, sim, detection)
    csv_path, events_path = tmp_path / "det" / "quiet_events.csv", tmp_path / "det" / "quiet_event_label.tif"
    if damage == "empty_csv":
        csv_path.write_text("")
    elif damage == "no_class_column":
        pd.read_csv(csv_path).drop(columns="class").to_csv(csv_path, index=False)
    else:
        tifffile.imwrite(events_path, np.zeros((10, *sim.class_label.shape[1:]), np.uint16))
    before = sorted(p.name for p in (tmp_path / "det").iterdir())
    with pytest.raises(CasparksError, match=re.escape(needle)) as info:
        write_report(tmp_path / "det", video=False, dpi=60)
    assert "\n" not in str(info.value) and "quiet" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == before  # not one page of cell_a


@pytest.mark.parametrize("damage, needle", [
    ("text_amplitude", "row 3: amplitude_dff is 'abc', not a number"),
    ("misspelled_class", "row 2: class 'sprak' is none of puff, spark, wave"),
    ("cut_row", "row 4 has no "),
    ("fractional_id", "row 2: id 1.5 is no whole number ≥ 1"),
    ("semicolons", "the events table is semicolon-separated (a spreadsheet's export); save it as comma-separated CSV"),
])
def test_an_events_table_edited_into_nonsense_stops_the_report_before_anything_is_written(rich, tmp_path, damage,
                                                                                           needle):
    """Text in a number column failed with a traceback in the figures, after the pages of the
    movies before it were written; a misspelled class dropped its events from every count; a
    row cut short passed as an event without a place. A European-locale Excel's table (';'
    between fields, ',' for decimals) was said to lack every column."""
    from casparks.detection import read_events_table

    movies = tmp_path / "movies"
    movies.mkdir()
    _write(tmp_path / "det", movies, *_truth_detection(*EMPTY, name="a_quiet"))
    _write(tmp_path / "det", movies, *rich)
    csv_path = tmp_path / "det" / "cell_a_events.csv"
    table = pd.read_csv(csv_path)
    assert len(table) >= 3
    if damage == "cut_row":
        lines = csv_path.read_text().splitlines()
        lines[3] = lines[3][: lines[3].index(",", lines[3].index(",") + 1)]  # id and class only
        csv_path.write_text("\n".join(lines) + "\n")
    elif damage == "semicolons":
        table.to_csv(csv_path, index=False, sep=";", decimal=",")
    else:
        table = table.astype({"amplitude_dff": object, "id": float})
        if damage == "text_amplitude":
            table.loc[1, "amplitude_dff"] = "abc"
        elif damage == "misspelled_class":
            table.loc[0, "class"] = "sprak"
        else:
            table.loc[0, "id"] = 1.5
        table.to_csv(csv_path, index=False)
    before = sorted(p.name for p in (tmp_path / "det").iterdir())
    with pytest.raises(CasparksError, match=re.escape(needle)) as info:
        write_report(tmp_path / "det", video=False, dpi=60)
    assert "\n" not in str(info.value) and "cell_a_events.csv" in str(info.value)
    assert sorted(p.name for p in (tmp_path / "det").iterdir()) == before  # not one page of a_quiet
    with pytest.raises(CasparksError, match=re.escape(needle)):
        read_events_table(csv_path)


def test_an_events_table_is_read_with_number_columns_as_numbers(rich, tmp_path):
    from casparks.detection import read_events_table

    _write(tmp_path / "det", tmp_path, *rich)
    table = read_events_table(tmp_path / "det" / "cell_a_events.csv")
    assert table["id"].dtype == np.int64 and table["amplitude_dff"].dtype == np.float64
    assert table["id"].tolist() == list(range(1, len(table) + 1))


def test_a_table_written_before_the_snr_column_existed_is_read_with_it_empty(rich, tmp_path):
    from casparks.detection import read_events_table
    from casparks.measure import COLUMNS

    sim, detection = rich
    movie = _write(tmp_path / "det", tmp_path, sim, detection)
    csv_path = tmp_path / "det" / "cell_a_events.csv"
    table = pd.read_csv(csv_path)
    assert table.loc[table["class"] != "wave", "snr"].notna().all()
    table.drop(columns="snr").to_csv(csv_path, index=False)
    old = read_events_table(csv_path)
    assert list(old.columns[: len(COLUMNS)]) == COLUMNS and old["snr"].isna().all()
    write_report(tmp_path / "det", movie=movie, video=False, dpi=60)  # no "lacks column(s) snr"
    assert (tmp_path / "det" / "report.html").exists()


def test_a_table_filtered_by_hand_gives_its_own_counts_and_frequencies(rich, tmp_path, caplog):
    sim, detection = rich
    movie = _write(tmp_path / "det", tmp_path, sim, detection)
    csv_path = tmp_path / "det" / "cell_a_events.csv"
    table = pd.read_csv(csv_path)
    kept = table.drop(index=table.index[table["class"] == "spark"][:3])
    kept.to_csv(csv_path, index=False)
    with caplog.at_level("WARNING", logger="casparks"):
        write_report(tmp_path / "det", movie=movie, video=False, dpi=60)
    assert "the report follows the table" in caplog.text
    rows = pd.read_csv(tmp_path / "det" / "report_files" / "cell_a_summary.csv").set_index("class")
    n_sparks = int((kept["class"] == "spark").sum())
    T, _, W = sim.class_label.shape
    expected = n_sparks / (W * sim.movie.pixel_size_um / 100) / (T * sim.movie.frame_interval_ms / 1000)
    assert rows.loc["spark", "count"] == n_sparks
    assert rows.loc["spark", "per_100um_per_s"] == pytest.approx(expected, rel=1e-6)


def test_a_report_written_over_another_keeps_no_overlay_of_the_last_one(detection_dir, tmp_path, caplog):
    out = tmp_path / "r.html"
    first = write_report(detection_dir, out=out, dpi=60)
    overlay = out.parent / "r_files" / "cell_a_overlay.tif"
    assert overlay in first.files and overlay.is_file()
    with caplog.at_level("WARNING", logger="casparks"):
        with pytest.raises(CasparksError, match="exist already"):
            write_report(detection_dir, out=out, dpi=60)
    assert "imageio-ffmpeg" not in caplog.text  # a refusal says only what is wrong
    again = write_report(detection_dir, out=out, overwrite=True, video=False, dpi=60)
    assert not overlay.exists() and not (out.parent / "r_files" / "cell_a_overlay.mp4").exists()
    assert all(p.exists() for p in again.files)


def test_a_report_written_over_another_leaves_the_users_own_files_alone(rich, tmp_path):
    """--overwrite deleted every .png/.csv/.tif/.mp4 in the files folder that the report did not
    write: a user's own tables, figures and movies kept beside the report."""
    _write(tmp_path / "det", tmp_path, *rich)
    files = tmp_path / "det" / "report_files"
    files.mkdir()
    own = {name: files / name for name in ("my_stats.csv", "figure_for_paper.png", "cell_A.tif", "cell_A.mp4",
                                           "cell_summary.csv", "fig_traces.png", "cell_a_notes.png")}
    for path in own.values():
        path.write_bytes(b"mine")
    # the figures, table and overlay of a movie no longer in the folder: a report's (all five figures)
    stale = [files / f"gone_{kind}.png" for kind in FIGURES] + [files / "gone_summary.csv", files / "gone_overlay.tif"]
    for path in stale:
        path.write_bytes(b"old")
    write_report(tmp_path / "det", video=False, dpi=60, overwrite=True)
    assert all(path.read_bytes() == b"mine" for path in own.values())
    assert not any(path.exists() for path in stale)


def test_a_folder_down_to_one_movie_keeps_no_page_of_its_earlier_report(rich, tmp_path):
    """A folder reported with two movies, then with one: the old movie pages stayed, their link
    back leading to the new page of the one movie. A report of one movie's JSON beside them
    (its own <stem>_report_files) is another report, and stays."""
    movies = tmp_path / "movies"
    movies.mkdir()
    det = tmp_path / "det"
    _write(det, movies, *rich)
    _write(det, movies, *_truth_detection(*EMPTY, name="quiet"))
    two = write_report(det, video=False, dpi=60)
    assert set(two.pages.values()) == {det / "cell_a_report.html", det / "quiet_report.html"}
    for path in det.glob("quiet_*"):
        if path.name != "quiet_report.html":
            path.unlink()
    one = write_report(det, video=False, dpi=60, overwrite=True)
    assert one.pages == {"cell_a": det / "report.html"}
    assert not (det / "cell_a_report.html").exists() and not (det / "quiet_report.html").exists()
    alone = write_report(det / "cell_a_detection.json", video=False, dpi=60)
    assert alone.main == det / "cell_a_report.html"
    write_report(det, video=False, dpi=60, overwrite=True)
    assert alone.main.exists() and all(path.exists() for path in alone.files)


def test_the_report_leaves_the_saved_probabilities_unread(rich, tmp_path):
    """The report read the whole probabilities stack (4 × the movie in float32) and drew nothing
    from it; a damaged one stopped the report, after the pages before it were written."""
    from casparks.detection import PROBABILITIES_SUFFIX, read_detection

    _write(tmp_path / "det", tmp_path, *rich)
    damaged = tmp_path / "det" / f"cell_a{PROBABILITIES_SUFFIX}"
    tifffile.imwrite(damaged, np.zeros((8, 8), np.float32))
    with pytest.raises(CasparksError, match="probabilities"):
        read_detection(tmp_path / "det" / "cell_a_detection.json")
    assert read_detection(tmp_path / "det" / "cell_a_detection.json", probabilities=False).probabilities is None
    result = write_report(tmp_path / "det", video=False, dpi=60)
    assert result.main.exists()


def test_movies_detected_on_two_machines_share_their_settings(tmp_path):
    """A folder continued with --skip-existing on another machine (another device, precision,
    checkpoint path) was reported as detected with "different models or settings"."""
    import dataclasses

    movies = tmp_path / "movies"
    movies.mkdir()
    sim, base = _truth_detection(*EMPTY[:2], seed=[0, 3], name="one")
    ran = {"window_frames": 64, "measure": MeasureConfig().to_dict()}
    _write(tmp_path / "det", movies, sim, dataclasses.replace(
        base, settings={**ran, "device": "cpu", "precision": "bf16", "checkpoint": "/a/sim-v3.ckpt"}))
    _write(tmp_path / "det", movies, sim, dataclasses.replace(
        base, name="two", settings={**ran, "device": "cuda", "precision": "32", "checkpoint": "/b/sim-v3.ckpt"}))
    page = write_report(tmp_path / "det", video=False, dpi=40).main.read_text()
    assert "Every movie was detected with the same model and settings" in page
    _write(tmp_path / "det", movies, sim, dataclasses.replace(base, name="three", settings={**ran, "window_frames": 32}))
    page = write_report(tmp_path / "det", video=False, dpi=40, overwrite=True).main.read_text()
    assert "different models or settings" in page


def _dark_level_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "dark level" in r.getMessage()]


def test_report_figures_use_the_tables_dark_level_and_name_the_movie_when_reading_one(caplog):
    """A report of two movies warned "the dark level could not be read ..." naming neither: the
    figures read the dark level again although the detection recorded that it had not been read
    (0 used for the table). Now they use the table's 0; a dark level read again (a detection that
    recorded none) names the movie."""
    from types import SimpleNamespace

    from casparks.io import Movie
    from casparks.measure import dff_movie

    rng = np.random.default_rng(0)
    data = rng.poisson(300.0, (60, 16, 32)).astype(np.uint16)  # a uniform field: the dark level cannot be read
    movie = Movie(data, 0.2, 6.8, name="cell7_video")
    events = np.zeros(data.shape, np.uint16)
    level = {"adu": None, "se_adu": None, "read_noise_adu": None, "method": "none", "reason": "too uniform"}
    recorded = SimpleNamespace(settings={}, dark_level=level, event_label=events, pixel_size_um=0.2,
                               frame_interval_ms=6.8, name="cell7_video")
    with caplog.at_level("WARNING", logger="casparks"):
        dff = figures.detection_dff(movie, recorded)
    assert not _dark_level_warnings(caplog)  # not read again
    np.testing.assert_array_equal(dff, dff_movie(data, events > 0, 0.2, 6.8, MeasureConfig(offset_adu=0.0)))
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        figures.detection_dff(movie, SimpleNamespace(**{**vars(recorded), "dark_level": None}), lazy=True)
    (message,) = _dark_level_warnings(caplog)
    assert message.startswith("cell7_video: the dark level could not be read")


def test_a_report_written_over_another_keeps_none_of_the_movies_that_left_the_folder(rich, tmp_path):
    """--overwrite after a movie's results were removed kept its page, its figures and its row in
    the summary tables, beside the new report."""
    det = tmp_path / "det"
    _write(det, tmp_path, *rich)
    _write(det, tmp_path, *_truth_detection(*EMPTY, name="quiet"))
    (det / "report_files" / "notes.txt").parent.mkdir(parents=True)
    (det / "report_files" / "notes.txt").write_text("mine")
    first = write_report(det, video=False, dpi=60)
    assert (det / "quiet_report.html").is_file() and (det / "report_files" / "quiet_projection.png").is_file()
    for leftover in det.glob("quiet_*"):
        if leftover.is_file():
            leftover.unlink()
    again = write_report(det, video=False, dpi=60, overwrite=True)
    assert again.main == first.main and not (det / "quiet_report.html").exists()
    names = sorted(p.name for p in (det / "report_files").iterdir())
    assert not [n for n in names if n.startswith("quiet_") or n.startswith("summary-")], names
    assert (det / "report_files" / "notes.txt").read_text() == "mine"  # not the report's: left alone
    assert {p.resolve() for p in again.files} >= {p.resolve() for p in (det / "report_files").glob("cell_a_*")}


def test_an_interrupted_report_says_how_to_write_it_whole(detection_dir, tmp_path, capsys, monkeypatch):
    """It said only "interrupted", and the rerun was refused for the files already written."""
    import casparks.report

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(casparks.report, "write_report", stop)
    assert main(["report", str(detection_dir), "--out", str(tmp_path / "r.html")]) == 130
    assert "the same command with --overwrite writes it whole" in capsys.readouterr().err


def test_out_naming_an_existing_file_that_is_no_page_is_refused(detection_dir, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main(["report", str(detection_dir), "--out", str(notes), "--no-video"]) == 2
    assert "notes.txt: is a file, not a folder or an .html page" in capsys.readouterr().err
    assert notes.read_text() == "mine"


def test_every_movie_that_cannot_be_reported_is_named_at_once(rich, tmp_path):
    """With the movies moved, only the first was named: one rerun per movie to find them all."""
    movies = tmp_path / "movies"
    movies.mkdir()
    _write(tmp_path / "det", movies, *rich)
    _write(tmp_path / "det", movies, *_truth_detection(*EMPTY, name="quiet"))
    for movie in list(movies.iterdir()):
        movie.rename(tmp_path / movie.name)
    with pytest.raises(CasparksError) as info:
        write_report(tmp_path / "det", video=False, dpi=60)
    lines = str(info.value).splitlines()
    assert lines[0] == "2 of 2 movies cannot be reported:"
    assert any("'cell_a' is not at" in line for line in lines) and any("'quiet' is not at" in line for line in lines)
    assert not (tmp_path / "det" / "report.html").exists()


def test_a_detection_saved_from_the_viewer_on_a_projects_movie_is_reported(tmp_path, capsys):
    """A detection made in napari on a movie of a Leica project records the project as its movie:
    the report said the movie 'is not at session.lif any more' while the file was there."""
    import dataclasses

    from leica_lif import LifImage, write_lif

    from casparks.io import movie_fingerprint

    sim, detection = _truth_detection(*EMPTY, name="session_Series002")
    n, rows, cols = sim.movie.shape
    px, dt = sim.movie.pixel_size_um, sim.movie.frame_interval_ms
    movie = np.asarray(sim.movie.data, dtype=np.uint16)
    lengths = {"X": ((cols - 1) * px * 1e-6, "m"), "Y": ((rows - 1) * px * 1e-6, "m"), "T": ((n - 1) * dt * 1e-3, "s")}
    project = write_lif(tmp_path / "session.lif", [LifImage("Series001", movie[::-1].copy(), "TYX", lengths),
                                                   LifImage("Series002", movie, "TYX", lengths)])
    write_detection(dataclasses.replace(detection, source=project, movie_fingerprint=movie_fingerprint(movie)),
                    tmp_path / "det")
    result = write_report(tmp_path / "det", video=False, dpi=50)
    assert f"{project}" in result.main.read_text()
    # renamed in the viewer before it was saved: found by its pixels
    write_detection(dataclasses.replace(detection, name="cell A", source=project,
                                        movie_fingerprint=movie_fingerprint(movie)), tmp_path / "renamed")
    assert write_report(tmp_path / "renamed", video=False, dpi=50).main.is_file()
    # another movie's detection: named, one line
    write_detection(dataclasses.replace(detection, name="other", source=project, movie_fingerprint="0" * 16),
                    tmp_path / "other")
    assert main(["report", str(tmp_path / "other")]) != 0
    err = capsys.readouterr().err
    assert "session.lif: holds no movie 'other' (nor one of its pixels); pass the movie that was detected" in err


def test_a_detection_of_an_array_asks_for_its_movie_file(tmp_path, capsys):
    """casparks.detect(casparks.Movie(data, 0.2, 6.8, name="cell3")) written and reported: the
    report said the movie 'is not at cell3 any more', as if a file had moved."""
    sim, detection = _truth_detection(*EMPTY, name="cell3")
    write_detection(detection, tmp_path / "det")
    assert main(["report", str(tmp_path / "det")]) != 0
    err = capsys.readouterr().err
    assert "the detection of 'cell3' was made on an array ('cell3'), not on a movie file; save the movie with " \
           "casparks.write_movie and pass it with --movie FILE" in err
    write_movie(tmp_path / "cell3.tif", sim.movie)
    assert write_report(tmp_path / "det", movie=tmp_path / "cell3.tif", video=False, dpi=50).main.is_file()
    # the movie itself given for the results: named as one (it was 'no such detection folder or file')
    assert main(["report", str(tmp_path / "cell3.tif")]) != 0
    assert "cell3.tif: is a movie, not detection results; run `casparks detect MOVIE --out DIR` first" \
        in capsys.readouterr().err


def test_the_page_says_when_frequencies_are_per_the_field(rich):
    """A detection that fell back to the field (most events outside the cell found) was called
    per the cell on its page."""
    import dataclasses

    from casparks.report import _frequency_note

    _, detection = rich
    assert _frequency_note(detection).startswith("Frequencies are per the cell found")
    field = dataclasses.replace(detection, frequency_per="field")
    assert _frequency_note(field).startswith("Frequencies are per the whole field") and "outside" in _frequency_note(field)
    # a cell along y: detect only logged that its per 100 µm frequencies are per its short extent along x
    assert "spans more of y" not in _frequency_note(detection)
    along_y = dataclasses.replace(detection, cell_along_y=True)
    assert "it spans more of y than of x, so the per 100 µm frequencies" in _frequency_note(along_y)
