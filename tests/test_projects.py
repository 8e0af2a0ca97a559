"""casparks convert: the x-y-t movies of Leica LIF projects as TIFFs with their units."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from leica_lif import LifImage, write_lif

from casparks.cli import main
from casparks.projects import convert, list_images, output_name
from casparks.detection import expand_inputs
from casparks.errors import CasparksError
from casparks.io import read_movie, read_units, stack_channels

RNG = np.random.default_rng(7)
MOVIE = RNG.integers(0, 4000, size=(30, 16, 40), dtype=np.uint16)  # T, Y, X
TWO_CHANNELS = RNG.integers(0, 255, size=(12, 2, 8, 20), dtype=np.uint8)  # T, C, Y, X


def _um(n: int, step_um: float) -> tuple[float, str]:
    """A LIF length: from the first to the last of n pixels, in metres."""
    return ((n - 1) * step_um * 1e-6, "m")


def _s(n: int, step_ms: float) -> tuple[float, str]:
    return ((n - 1) * step_ms * 1e-3, "s")


def _project(path, extra=()):
    """A LAS X session: a movie, a two-channel movie in a folder, a line scan, a z-stack and a snapshot."""
    images = [
        LifImage("Series001", MOVIE, "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.2), "T": _s(30, 6.8)}),
        LifImage("Series002", TWO_CHANNELS, "TCYX", {"X": _um(20, 0.1), "Y": _um(8, 0.1), "T": _s(12, 2.5)},
                 folder="cell 2"),
        LifImage("xt scan", RNG.integers(0, 4000, (50, 40), dtype=np.uint16), "TX", {"X": _um(40, 0.1), "T": _s(50, 1.0)}),
        LifImage("z-stack", RNG.integers(0, 4000, (5, 16, 40), dtype=np.uint16), "ZYX",
                 {"X": _um(40, 0.2), "Y": _um(16, 0.2), "Z": _um(5, 0.5)}),
        LifImage("snapshot", RNG.integers(0, 4000, (16, 40), dtype=np.uint16), "YX", {"X": _um(40, 0.2), "Y": _um(16, 0.2)}),
        *extra,
    ]
    return write_lif(path, images)


def test_a_leica_projects_movies_become_tiffs_with_their_units(tmp_path):
    """Each x-y-t movie becomes <project>_<image>.tif with its pixel size and frame interval (a LIF
    length spans first to last pixel: the step is length / (n − 1)); channels are kept; line
    scans, z-stacks and snapshots are left out, each with its reason."""
    project = _project(tmp_path / "session 1.lif")
    images = {image.path: image for image in list_images(project)}
    assert set(images) == {"Series001", "cell 2/Series002", "xt scan", "z-stack", "snapshot"}
    assert "line scan (x-t)" in images["xt scan"].skipped and "SparkMaster" in images["xt scan"].skipped
    assert "z-stack" in images["z-stack"].skipped
    assert "single image" in images["snapshot"].skipped

    done = convert(project, tmp_path / "movies")
    assert [d.output.name for d in done] == ["session_1_Series001.tif", "session_1_cell_2_Series002.tif"]
    movie = read_movie(done[0].output)
    np.testing.assert_array_equal(movie.data, MOVIE)
    assert movie.pixel_size_um == pytest.approx(0.2, rel=1e-6)
    assert movie.frame_interval_ms == pytest.approx(6.8, rel=1e-6)
    assert stack_channels(done[1].output) == 2
    for channel in (0, 1):
        second = read_movie(done[1].output, channel=channel)
        np.testing.assert_array_equal(second.data, TWO_CHANNELS[:, channel])
        assert (second.pixel_size_um, second.frame_interval_ms) == pytest.approx((0.1, 2.5), rel=1e-6)
    assert sorted(p.name for p in (tmp_path / "movies").iterdir()) == [d.output.name for d in done]  # no temporaries


def test_the_convert_command_lists_what_it_writes_and_leaves_out_and_never_overwrites_unasked(tmp_path, capsys):
    project = _project(tmp_path / "exp.lif")
    out = tmp_path / "movies"
    assert main(["convert", str(project), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "exp.lif: Series001 -> " in printed and "(30 × 16 × 40, 0.2 µm, 6.8 ms)" in printed
    assert "cell 2/Series002 -> " in printed and "2 channels, 0.1 µm, 2.5 ms" in printed
    assert "exp.lif: xt scan: left out, a line scan (x-t)" in printed
    assert "2 movie(s) written to" in printed and "3 image(s) left out" in printed

    first = out / "exp_Series001.tif"
    before = first.stat().st_mtime_ns
    os.utime(first, ns=(before - 10**9, before - 10**9))
    assert main(["convert", str(project), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exists already and 1 more" in err and "--overwrite" in err
    assert first.stat().st_mtime_ns == before - 10**9  # untouched
    assert main(["convert", str(tmp_path), "--out", str(out), "--overwrite"]) == 0  # a folder of projects
    assert first.stat().st_mtime_ns != before - 10**9


def test_convert_refuses_an_output_it_cannot_write_before_printing_anything(tmp_path, capsys):
    """--out a file: the refusal came after the "left out" lines, as if the work had begun."""
    project = _project(tmp_path / "exp.lif")
    out = tmp_path / "movies"
    out.write_text("")
    assert main(["convert", str(project), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "is a file, not a folder" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.lif", "movies"]


def test_commands_given_a_project_say_to_convert_it(tmp_path, capsys, caplog):
    (tmp_path / "lif").mkdir()
    project = _project(tmp_path / "lif" / "exp.lif")
    for argv in (["detect", str(project), "--out", str(tmp_path / "o")],
                 ["detect", str(tmp_path / "lif"), "--out", str(tmp_path / "o")],
                 ["detect", str(tmp_path / "lif" / "*.lif"), "--out", str(tmp_path / "o")]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert "is a Leica LIF project" in err and f"casparks convert {project} --out DIR" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(CasparksError, match="casparks convert"):
        read_units(project)

    # a folder of TIFF movies and a project: the movies run, the project is named as left out
    done = convert(project, tmp_path / "lif")
    with caplog.at_level(logging.WARNING, logger="casparks"):
        assert [p.name for p in expand_inputs([tmp_path / "lif"])] == [d.output.name for d in done]
    assert "left out 1 project file(s) (exp.lif" in caplog.text and "casparks convert" in caplog.text

    capsys.readouterr()  # the warning above

    # several projects and no movie: one line for them all
    (tmp_path / "more").mkdir()
    _project(tmp_path / "more" / "a.lif")
    _project(tmp_path / "more" / "b.lif")
    for where, expected in ((tmp_path / "more", "more: holds 2 project files (a.lif, …) and no TIFF movies"),
                            (tmp_path / "more" / "*.lif", "matches 2 project files (a.lif, …)")):
        assert main(["detect", str(where), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err and f"casparks convert {where} --out DIR" in err


def test_projects_without_movies_or_damaged_are_refused_and_nothing_is_written(tmp_path, capsys):
    lines = write_lif(tmp_path / "lines.lif", [
        LifImage("xt", RNG.integers(0, 4000, (50, 40), dtype=np.uint16), "TX", {"X": _um(40, 0.1), "T": _s(50, 1.0)})])
    damaged = tmp_path / "damaged.lif"
    damaged.write_bytes(b"\x70\x00\x00\x00 not a leica file at all")
    for path, expected in ((lines, "holds no x-y-t movie (xt: a line scan (x-t)"),
                           (damaged, "cannot be read as a Leica LIF file"),
                           (tmp_path / "missing.lif", "no such file or folder"),
                           (tmp_path / "movie.tif", "not a project file casparks converts")):
        if path.suffix == ".tif":
            path.write_bytes(b"")
        assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and expected in err, err
    # one damaged project among good ones: nothing is written
    _project(tmp_path / "good.lif")
    assert main(["convert", str(tmp_path / "good.lif"), str(damaged), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_images_that_cannot_be_movies_are_left_out_with_the_reason(tmp_path):
    """Non-square pixels, x-y-z-t series and pixel types an ImageJ TIFF cannot hold; names that
    collide after their characters are made safe get _2."""
    tall = LifImage("tall", MOVIE, "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.3), "T": _s(30, 6.8)})
    xyzt = LifImage("xyzt", RNG.integers(0, 9, (4, 3, 16, 40), dtype=np.uint16), "TZYX",
                    {"X": _um(40, 0.2), "Y": _um(16, 0.2), "Z": _um(3, 1.0), "T": _s(4, 100.0)})
    wide = LifImage("wide", MOVIE.astype(np.uint32), "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.2), "T": _s(30, 6.8)})
    twin = LifImage("Series001", MOVIE[:5], "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.2), "T": _s(5, 6.8)}, folder="a")
    twin_name = LifImage("a_Series001", MOVIE[:6], "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.2), "T": _s(6, 6.8)})
    project = write_lif(tmp_path / "p.lif", [tall, xyzt, wide, twin, twin_name])
    reasons = {image.path: image.skipped for image in list_images(project)}
    assert "0.2 µm wide and 0.3 µm high" in reasons["tall"]
    assert "x-y-z-t series" in reasons["xyzt"]
    assert "pixel type uint32" in reasons["wide"]
    done = convert(project, tmp_path / "out")
    assert [(d.image.path, d.output.name) for d in done] == [("a_Series001", "p_a_Series001.tif"),
                                                            ("a/Series001", "p_a_Series001_2.tif")]
    assert read_movie(done[1].output).shape == (5, 16, 40)
    assert output_name(project, "../x: y?") == "p_.._x_y.tif"  # one name, no folder


def test_a_renamed_twin_never_takes_another_movies_own_name(tmp_path):
    """"cell 1" and "cell_1" became p_cell_1.tif twice, and the second was renamed p_cell_1_2.tif,
    the own name of "cell 1 2": one movie was written over another ("3 movie(s) written", 2 files)."""
    units = {"X": _um(40, 0.2), "Y": _um(16, 0.2), "T": _s(30, 6.8)}
    movies = [LifImage(name, MOVIE + k, "TYX", units) for k, name in enumerate(("cell 1", "cell_1", "cell 1 2"))]
    project = write_lif(tmp_path / "p.lif", movies)
    done = convert(project, tmp_path / "out")
    names = {d.image.path: d.output.name for d in done}
    assert names == {"cell 1": "p_cell_1.tif", "cell_1": "p_cell_1_3.tif", "cell 1 2": "p_cell_1_2.tif"}
    assert len(list((tmp_path / "out").glob("*.tif"))) == 3
    for k, name in enumerate(("cell 1", "cell_1", "cell 1 2")):
        assert read_movie(tmp_path / "out" / names[name]).data[0, 0, 0] == MOVIE[0, 0, 0] + k


def test_lengths_without_a_unit_are_metres_and_seconds_and_a_missing_one_leaves_the_unit_unknown(tmp_path):
    bare = LifImage("bare", MOVIE, "TYX", {"X": (39 * 0.2e-6, ""), "Y": (15 * 0.2e-6, ""), "T": (29 * 6.8e-3, "")})
    timeless = LifImage("timeless", MOVIE, "TYX", {"X": _um(40, 0.2), "Y": _um(16, 0.2)})  # T's length 0
    project = write_lif(tmp_path / "p.lif", [bare, timeless])
    images = {image.path: image for image in list_images(project)}
    assert (images["bare"].pixel_size_um, images["bare"].frame_interval_ms) == pytest.approx((0.2, 6.8), rel=1e-6)
    assert images["timeless"].frame_interval_ms is None
    assert images["timeless"].describe() == "30 × 16 × 40, 0.2 µm, frame interval unknown"
    done = convert(project, tmp_path / "out")
    pixel, frame = read_units(done[1].output)
    assert pixel == pytest.approx(0.2, rel=1e-6) and frame is None  # detect then asks for --frame-interval
