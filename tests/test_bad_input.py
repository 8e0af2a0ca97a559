"""Bad input through the command line: one line naming the file and the fix, exit 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from casparks.cli import main
from casparks.errors import CasparksError
from casparks.io import write_class_label, write_event_label, write_stack

SHAPE = (12, 8, 16)


def annotated(folder, sid="01", shape=SHAPE, units=True, codes=None):
    classes = np.zeros(shape, np.uint8)
    classes[2:6, 2:5, 2:6] = 1
    if codes is not None:
        classes[0, 0, 0] = codes
    events = (classes > 0).astype(np.uint16)
    px, dt = (0.2, 6.8) if units else (None, None)
    if units:
        write_stack(folder / f"{sid}_video.tif", np.full(shape, 300, np.uint16), px, dt)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(folder / f"{sid}_video.tif", np.full(shape, 300, np.uint16))
    write_class_label(folder / f"{sid}_class_label.tif", classes, px, dt)
    write_event_label(folder / f"{sid}_event_label.tif", events, px, dt)
    return folder


def run(argv, capsys):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_prepare_labels_without_units_names_the_movie_and_the_flags(tmp_path, capsys):
    source = annotated(tmp_path / "raw", units=False)
    out = tmp_path / "out"
    code, err = run(["prepare-labels", source, "--out", out], capsys)
    assert_one_line_error(code, err, "01_video.tif", "--pixel-size", "--frame-interval")
    assert not out.exists() or not any(out.iterdir())


def test_prepare_labels_with_units_given_works(tmp_path, capsys):
    source = annotated(tmp_path / "raw", units=False)
    code, _ = run(["prepare-labels", source, "--out", tmp_path / "out", "--pixel-size", "0.2",
                   "--frame-interval", "6.8"], capsys)
    assert code == 0


def test_evaluate_shape_mismatch_names_both_files(tmp_path, capsys):
    truth = annotated(tmp_path / "truth")
    pred = tmp_path / "pred"
    write_class_label(pred / "01_class_label.tif", np.zeros((12, 8, 15), np.uint8))
    out = tmp_path / "scores.json"
    code, err = run(["evaluate", "--truth", truth, "--pred", pred, "--json", out], capsys)
    assert_one_line_error(code, err, "01_class_label.tif", "shape")
    assert not out.exists()


def test_evaluate_unknown_codes(tmp_path, capsys):
    truth = annotated(tmp_path / "truth")
    pred = annotated(tmp_path / "pred", codes=7)
    code, err = run(["evaluate", "--truth", truth, "--pred", pred], capsys)
    assert_one_line_error(code, err, "01_class_label.tif", "7")


def test_evaluate_empty_prediction_folder(tmp_path, capsys):
    truth = annotated(tmp_path / "truth")
    (tmp_path / "pred").mkdir()
    code, err = run(["evaluate", "--truth", truth, "--pred", tmp_path / "pred"], capsys)
    assert_one_line_error(code, err, "pred")


def test_evaluate_refuses_to_overwrite_json(tmp_path, capsys):
    truth, pred = annotated(tmp_path / "truth"), annotated(tmp_path / "pred")  # not --truth: refused as itself
    out = tmp_path / "scores.json"
    out.write_text("keep me")
    code, err = run(["evaluate", "--truth", truth, "--pred", pred, "--json", out], capsys)
    assert_one_line_error(code, err, "scores.json", "--overwrite")
    assert out.read_text() == "keep me"
    code, _ = run(["evaluate", "--truth", truth, "--pred", pred, "--json", out, "--overwrite"], capsys)
    assert code == 0 and out.read_text() != "keep me"


def test_check_unreadable_truth_is_reported_not_raised(tmp_path, capsys):
    folder = annotated(tmp_path / "set")
    (folder / "01_event_label.tif").write_bytes(b"\x00" * 10)
    code = main(["check", str(folder)])
    out = capsys.readouterr().out
    assert code == 1 and "01_event_label.tif" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--set", "no_such_parameter=1"], "no_such_parameter"),
        (["--preset", "no-such-preset"], "no-such-preset"),
        (["--movies", "0"], "--movies"),
        (["--set", "pixel_size_um=abc"], "pixel_size_um"),
    ],
)
def test_simulate_bad_arguments_write_nothing(tmp_path, capsys, argv, needle):
    out = tmp_path / "sim"
    code, err = run(["simulate", out, "--frames", "20", "--height", "16", "--width", "32", *argv], capsys)
    assert_one_line_error(code, err, needle)
    assert not out.exists() or not any(out.iterdir())


def test_simulate_refuses_to_overwrite_and_keeps_results(tmp_path, capsys):
    out = tmp_path / "sim"
    small = ["--frames", "20", "--height", "16", "--width", "32", "--no-preview"]
    assert run(["simulate", out, *small], capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, err = run(["simulate", out, *small, "--seed", "9"], capsys)
    assert_one_line_error(code, err, "--overwrite")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run(["simulate", out, *small, "--seed", "9", "--overwrite"], capsys)[0] == 0
    assert (out / "01_video.tif").read_bytes() != before["01_video.tif"]


@pytest.mark.parametrize("kind", ["plain", "imagej", "zlib"])
def test_a_tiff_cut_short_is_named_damaged_in_one_line(tmp_path, capsys, kind):
    """A plain one gave a traceback; an ImageJ one was "a single 2-D image"; tifffile's own
    complaints came as extra lines."""
    movie = (np.arange(40 * 16 * 32) % 997).astype(np.uint16).reshape(40, 16, 32)
    whole = tmp_path / "whole.tif"
    if kind == "imagej":
        write_stack(whole, movie, 0.2, 6.8)
    else:
        tifffile.imwrite(whole, movie, compression="zlib" if kind == "zlib" else None)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    code, err = run(["detect", cut, "--out", tmp_path / "o", "--pixel-size", 0.2, "--frame-interval", 6.8], capsys)
    assert_one_line_error(code, err, "cut.tif", "damaged or truncated", "re-export the file")
    assert not (tmp_path / "o").exists()


def test_a_multichannel_image_without_time_is_refused_and_a_time_axis_saved_last_is_moved_first(tmp_path, capsys):
    """12 channels of one time point were detected as 12 frames; a YXT stack's rows were its frames."""
    channels = np.random.default_rng(0).integers(100, 200, (12, 16, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "cyx.tif", channels, imagej=True, metadata={"axes": "CYX"})
    code, err = run(["detect", tmp_path / "cyx.tif", "--out", tmp_path / "o", "--pixel-size", 0.2,
                     "--frame-interval", 6.8], capsys)
    assert_one_line_error(code, err, "cyx.tif", "has no time axis (axes CYX", "Re-order Hyperstack")
    from casparks.io import read_stack

    movie = (np.arange(20 * 16 * 32) % 1000).astype(np.uint16).reshape(20, 16, 32)
    tifffile.imwrite(tmp_path / "yxt.tif", np.moveaxis(movie, 0, -1), metadata={"axes": "YXT"})
    assert np.array_equal(read_stack(tmp_path / "yxt.tif"), movie)


def test_frames_written_as_imagej_channels_are_told_the_python_fix(tmp_path, capsys):
    """imwrite(imagej=True) without axes stores the frames as channels: the fix says so for Python too."""
    movie = np.random.default_rng(0).integers(100, 200, (12, 16, 32), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "ij.tif", movie, imagej=True)
    code, err = run(["detect", tmp_path / "ij.tif", "--out", tmp_path / "o", "--pixel-size", 0.2,
                     "--frame-interval", 6.8], capsys)
    assert_one_line_error(code, err, "ij.tif", "has no time axis (axes CYX", "Re-order Hyperstack",
                          "Python: tifffile.imwrite(path, movie, imagej=True, metadata={'axes': 'TYX'})")


def test_a_two_d_line_scan_is_named_as_one(tmp_path, capsys):
    """A 2-D x-t line scan was told to "save all frames as one T×Y×X stack"."""
    tifffile.imwrite(tmp_path / "line.tif", np.full((5000, 160), 300, np.uint16))
    code, err = run(["detect", tmp_path / "line.tif", "--out", tmp_path / "o", "--pixel-size", 0.2,
                     "--frame-interval", 6.8], capsys)
    assert_one_line_error(code, err, "line.tif: is a single 2-D image (5000×160 px, one side 31 times the other): "
                          "it looks like a line scan (x-t), not an x-y-t movie; analyse line scans with a line-scan "
                          "tool such as SparkMaster 2")
    assert not (tmp_path / "o").exists()


def test_a_label_stack_under_another_name_is_told_it_looks_like_labels(tmp_path, caplog):
    """01_labels.tif (class codes 0-4) was detected as a movie ("21 sparks, 1 wave, 1 puff")
    without a word: only NN_class_label.tif and NN_event_label.tif are told by their names."""
    import logging

    from casparks.detection import _check_values
    from casparks.io import Movie

    labels = np.zeros((40, 16, 32), np.uint8)
    labels[10:20, 4:8, 4:12] = 1
    labels[25:30, 8:12, 16:20] = 4
    with caplog.at_level(logging.WARNING, logger="casparks"):
        _check_values(labels, Movie(labels, 0.2, 6.8, name="01_labels"))
    assert "01_labels: its values are whole numbers from 0 to 4, mostly 0, as in a class label stack" in caplog.text
    caplog.clear()
    rng = np.random.default_rng(0)
    movie = rng.poisson(300, (40, 16, 32)).astype(np.uint16)  # a movie: no word
    with caplog.at_level(logging.WARNING, logger="casparks"):
        _check_values(movie, Movie(movie, 0.2, 6.8, name="cell"))
    assert caplog.text == ""


def test_a_z_stack_is_named_as_one(tmp_path, caplog):
    """An ImageJ or OME z-stack (slices with a z spacing, no time) asked for a frame interval and,
    given one, was detected as a movie without a word."""
    import logging

    import tifffile

    from casparks.io import read_movie

    stack = np.random.default_rng(0).poisson(200, (20, 16, 32)).astype(np.uint16)
    imagej = tmp_path / "z.tif"
    tifffile.imwrite(imagej, stack, imagej=True, resolution=(5, 5), metadata={"axes": "ZYX", "unit": "um", "spacing": 0.5})
    ome = tmp_path / "z.ome.tif"
    tifffile.imwrite(ome, stack, ome=True, photometric="minisblack",
                     metadata={"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5})
    for path in (imagej, ome):
        with pytest.raises(CasparksError, match=r"is a z-stack \(20 slices 0.5 µm apart\), not an x-y-t movie"):
            read_movie(path)
    with caplog.at_level(logging.WARNING, logger="casparks"):
        movie = read_movie(imagej, frame_interval_ms=6.8)  # the user says its slices are frames
    assert movie.shape == (20, 16, 32) and "its slices (20 slices 0.5 µm apart) are read as frames" in caplog.text
    # Fiji opens an image sequence as slices without a spacing: frames, as before (the interval asked for)
    sequence = tmp_path / "sequence.tif"
    tifffile.imwrite(sequence, stack, imagej=True, resolution=(5, 5), metadata={"axes": "ZYX", "unit": "um"})
    with pytest.raises(CasparksError, match="the frame interval is not in the file's metadata"):
        read_movie(sequence)


def test_a_label_file_given_to_detect_by_name_is_refused_naming_its_movie(tmp_path, capsys):
    """`casparks detect set/01_class_label.tif` detected the label stack as a movie (23 sparks and
    5 puffs, with a warning that label stacks are told by their names, as this one was)."""
    labels = np.zeros((40, 16, 32), np.uint8)
    write_stack(tmp_path / "01_class_label.tif", labels, 0.2, 6.8)
    write_stack(tmp_path / "01_video.tif", labels.astype(np.uint16) + 100, 0.2, 6.8)
    write_stack(tmp_path / "cell_probabilities.tif", labels.astype(np.float32), 0.2, 6.8)
    assert main(["detect", str(tmp_path / "01_class_label.tif"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "01_class_label.tif: is named as a label or probability stack" in err
    assert f"give the movie it belongs to ({tmp_path / '01_video.tif'})" in err and "\n" not in err.strip()
    assert main(["detect", str(tmp_path / "cell_probabilities.tif"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().endswith("not a movie; give the movie it belongs to")
    assert not (tmp_path / "o").exists()


def test_label_stacks_an_unquoted_glob_gives_beside_their_movies_are_left_out(tmp_path):
    """After an interruption, `detect d/*.tif --out d --skip-existing` (the shell expanding the
    pattern over the results written) was refused for d/cell_class_label.tif, which detect's own
    advice had led to; a data set's NN_class_label.tif beside NN_video.tif likewise."""
    from casparks.detection import expand_inputs

    labels = np.zeros((40, 16, 32), np.uint8)
    for name in ("cell.tif", "01_video.tif"):
        write_stack(tmp_path / name, labels.astype(np.uint16) + 100, 0.2, 6.8)
    for name in ("cell_class_label.tif", "cell_event_label.tif", "cell_probabilities.tif", "01_class_label.tif"):
        write_stack(tmp_path / name, labels, 0.2, 6.8)
    shell = sorted(str(p) for p in tmp_path.glob("*.tif"))  # what the shell hands over
    assert [p.name for p in expand_inputs(shell)] == ["01_video.tif", "cell.tif"]
    # a stack whose movie is not given is still refused: it was meant as a movie
    with pytest.raises(CasparksError, match="01_class_label.tif: is named as a label"):
        expand_inputs([str(tmp_path / "cell.tif"), str(tmp_path / "01_class_label.tif")])


def test_a_folder_of_single_frames_is_one_line_naming_an_image_sequence(tmp_path, capsys):
    """A folder of 200 single-frame TIFFs (a per-frame export) printed 202 lines, one per frame."""
    for i in range(12):
        tifffile.imwrite(tmp_path / f"frame{i:03d}.tif", np.zeros((16, 32), np.uint16))
    write_stack(tmp_path / "short.tif", np.zeros((3, 16, 32), np.uint16), None, None)
    assert main(["detect", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4, lines
    assert "12 files (frame000.tif, frame001.tif, frame002.tif, …)" in lines[1]
    assert "are single 2-D images (16×32 px), not movies" in lines[1] and "Import > Image Sequence" in lines[1]
    assert "short.tif" in lines[2] and not (tmp_path / "o").exists()
