"""The command line: version, help on every subcommand, logging flags, errors as one line."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import casparks
from casparks import cli
from casparks.cli import build_parser, main

SUBCOMMANDS = ["simulate", "check", "prepare-labels", "evaluate", "train", "detect", "report", "models"]


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"casparks {casparks.__version__}"


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: casparks {command}")
    assert "--verbose" in out and "--log-file" in out


def test_parser_lists_all_subcommands():
    help_text = build_parser().format_help()
    for command in SUBCOMMANDS:
        assert command in help_text


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: casparks" in capsys.readouterr().out


def test_verbose_levels_and_log_file(tmp_path):
    log_file = tmp_path / "logs" / "run.log"
    main(["check", str(tmp_path / "missing"), "-vv", "--log-file", str(log_file)])
    logger = logging.getLogger("casparks")
    console = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)][0]
    assert console.level == logging.DEBUG
    assert log_file.exists()
    logging.getLogger("casparks.test").debug("written to the file")
    for handler in logger.handlers:
        handler.flush()
    assert "written to the file" in log_file.read_text()
    main(["check", str(tmp_path / "missing"), "-v"])
    console = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)][0]
    assert console.level == logging.INFO
    main(["check", str(tmp_path / "missing")])
    assert logger.handlers[0].level == logging.WARNING


def test_user_error_is_one_line_exit_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "casparks", "check", str(tmp_path / "nowhere")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "nowhere: does not exist" in result.stderr  # it said "is not a folder"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device", "/results/01_video_class_label.tif"),
    OSError("Not enough free space to write 40960000 bytes after offset 384"),  # numpy's tofile
])
def test_a_full_disk_is_one_line_exit_1_without_traceback(monkeypatch, capsys, error):
    def fails(args):
        raise error

    monkeypatch.setattr(cli, "_run_check", fails)
    assert main(["check", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and ("free space" in err or "free some space" in err)
    assert ("01_video_class_label.tif: No space left on device" in err) == (error.filename is not None)


@pytest.mark.parametrize("error, advice", [
    (OSError(errno.EIO, "Input/output error", "/mnt/share/cell.tif"), "work from a local disk"),
    (OSError(errno.EACCES, "Permission denied", "/data/cell.tif"), "check the permissions of that file"),
    (OSError(errno.EROFS, "Read-only file system", "/cdrom/out/x.tif"), "write the results elsewhere"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/x/" + "a" * 300), "check that path"),
])
def test_a_system_error_gets_advice_for_its_kind_not_always_free_space(monkeypatch, capsys, error, advice):
    """A movie on a failing network share (an input/output error while reading it) was told to
    "check the free space and the permissions where the results go"."""
    def fails(args):
        raise error

    monkeypatch.setattr(cli, "_run_check", fails)
    assert main(["check", "anything"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{error.filename}: {error.strerror}; " in err and advice in err
    assert "free space" not in err


def test_import_and_detect_path_import_only_what_they_use():
    """`import casparks` stays light, and detection never loads the simulator or the metrics
    (the public names are imported on first use), while every public name still resolves."""
    code = (
        "import sys, casparks\n"
        "assert 'torch' not in sys.modules and 'casparks.simulate' not in sys.modules, 'import casparks is heavy'\n"
        "import casparks.detection\n"
        "heavy = sorted(m for m in ('casparks.simulate', 'casparks.evaluation', 'casparks.training') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "missing = [n for n in casparks.__all__ if getattr(casparks, n, None) is None]\n"
        "assert not missing, missing\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_huge_pages_are_requested_unless_the_user_chose():
    from casparks.hardware import request_huge_pages

    env: dict[str, str] = {}
    assert request_huge_pages(env) and env == {"THP_MEM_ALLOC_ENABLE": "1"}
    env = {"THP_MEM_ALLOC_ENABLE": "0"}  # the user's choice stands
    assert not request_huge_pages(env) and env == {"THP_MEM_ALLOC_ENABLE": "0"}


def test_the_command_line_requests_huge_pages_before_pytorch_is_loaded():
    """PyTorch reads THP_MEM_ALLOC_ENABLE once, at its first allocation: it must be set before."""
    import os

    code = ("import os, sys\nfrom casparks.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["1", "False"]  # after "casparks VERSION"


def test_detect_offset_takes_a_number_or_auto_and_rejects_anything_else(capsys):
    parser = build_parser()
    base = ["detect", "movie.tif", "--out", "results"]
    assert parser.parse_args(base + ["--offset", "120.5"]).offset == 120.5
    assert parser.parse_args(base + ["--offset", "AUTO"]).offset == "auto"
    assert parser.parse_args(base).offset is None
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(base + ["--offset", "dark"])
    assert exit_info.value.code == 2
    assert "expected a number of ADU or 'auto', got 'dark'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, needles", [
    (["detect", "m.tif", "--out", "r", "--overwirte"],
     ["casparks detect: error: unrecognized arguments: --overwirte (did you mean --overwrite?)", "casparks detect --help"]),
    (["prepare-labels", "in", "--out", "o", "--sparks-type", "peak"],
     ["casparks prepare-labels: error: argument --sparks-type: invalid choice: 'peak'"]),
    (["detcet", "m.tif"], ["casparks: error: argument COMMAND: invalid choice: 'detcet'"]),
])
def test_a_mistyped_option_is_one_line_of_its_commands_with_a_suggestion(argv, needles, capsys):
    """Unknown options printed the top-level usage; a wrong choice, an 8-line usage block."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "usage:" not in err
    for needle in needles:
        assert needle in err


def test_a_closed_pipe_is_not_an_error_and_the_work_goes_on(tmp_path):
    """`casparks evaluate ... | head -2`: the reader leaves; no 'Broken pipe; check the free
    space' error, and the work goes on to its end (a closed pipe had stopped `detect` after its
    first movie and lost calibrate's --json, exit 141 without a word)."""
    import numpy as np

    from casparks.io import write_class_label, write_stack

    classes = np.zeros((12, 8, 40), np.uint8)
    classes[0:4, 0:4, 0:4] = 1
    for folder, name in ((tmp_path / "truth", "01"), (tmp_path / "pred", "01_video")):
        folder.mkdir()
        write_class_label(folder / f"{name}_class_label.tif", classes)
    write_stack(tmp_path / "truth" / "01_video.tif", np.ones(classes.shape, np.uint16), 0.2, 6.8)
    process = subprocess.Popen([sys.executable, "-m", "casparks", "evaluate", "--truth", str(tmp_path / "truth"),
                                "--pred", str(tmp_path / "pred"), "--json", str(tmp_path / "s.json")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before anything is printed
    err = process.stderr.read().decode()
    assert process.wait() == 0 and "error" not in err and "Traceback" not in err
    assert (tmp_path / "s.json").is_file()
    # detect prints a line per movie: every line after the reader left is dropped, and every movie detected
    assert main(["simulate", str(tmp_path / "sim"), "--movies", "2", "--frames", "64", "--height", "32",
                 "--width", "96", "--no-preview"]) == 0
    process = subprocess.Popen([sys.executable, "-m", "casparks", "detect", str(tmp_path / "sim"), "--out",
                                str(tmp_path / "det"), "--window", "64"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait() == 0 and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "det").glob("*_detection.json")) == ["01_video_detection.json",
                                                                                   "02_video_detection.json"]


def test_train_prints_an_undefined_score_as_a_dash(monkeypatch, capsys, tmp_path):
    """A class without events in the validation movies printed 'nan'; tables show '–'."""
    import casparks.config
    import casparks.training
    from casparks.training import TrainResult

    monkeypatch.setattr(casparks.config, "load_config", lambda path, overrides: None)
    result = TrainResult(tmp_path, tmp_path / "step_0000002.ckpt", 2,
                         {"loss": 0.25, "spark/f1_reference": 0.5, "wave/f1_reference": float("nan")}, None)
    monkeypatch.setattr(casparks.training, "train", lambda config: result)
    assert main(["train", "config.yaml"]) == 0
    out = capsys.readouterr().out
    assert "validation: loss 0.25, spark/f1_reference 0.5, wave/f1_reference –" in out and "nan" not in out


def test_a_log_file_that_is_a_folder_or_not_a_log_is_refused_in_one_line(tmp_path, capsys):
    movie = tmp_path / "01_video.tif"
    movie.write_bytes(b"II*\x00 not a log")
    for bad, message in [(tmp_path, "is a folder"), (movie, "exists and is not a casparks log"),
                         (movie / "run.log", "is a file, not a folder")]:
        assert main(["check", str(tmp_path / "missing"), "--log-file", str(bad)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert movie.read_bytes() == b"II*\x00 not a log"
    log_file = tmp_path / "run.log"
    main(["check", str(tmp_path / "missing"), "--log-file", str(log_file)])
    main(["check", str(tmp_path / "missing"), "--log-file", str(log_file)])  # a log is appended to
    assert "exists and is not" not in capsys.readouterr().err


def test_small_messages_name_what_they_are_about(tmp_path, capsys):
    """Reviews found messages that named too little: the colliding movies, a folder given as the
    config, a folder of checkpoint files given as a run, a --set without a key, z-stacks taken for channels."""
    import numpy as np
    import tifffile

    from casparks.io import write_stack

    for name in ("a/cell.tif", "b/cell.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_stack(tmp_path / name, np.ones((10, 8, 8), np.uint16), 0.2, 6.8)
    assert main(["detect", str(tmp_path / "a" / "cell.tif"), str(tmp_path / "b" / "cell.tif"), "--out",
                 str(tmp_path / "o")]) == 2
    assert f"several movies are named 'cell' ({tmp_path / 'a' / 'cell.tif'}, {tmp_path / 'b' / 'cell.tif'})" \
        in capsys.readouterr().err
    assert main(["train", str(tmp_path)]) == 2
    assert "is a folder, not a config file" in capsys.readouterr().err
    (tmp_path / "ckpts").mkdir()
    (tmp_path / "ckpts" / "mine.ckpt").write_bytes(b"")
    assert main(["detect", str(tmp_path / "a" / "cell.tif"), "--out", str(tmp_path / "o"), "--model",
                 str(tmp_path / "ckpts")]) == 2
    assert "is a folder holding mine.ckpt, not a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["detect", str(tmp_path / "a" / "cell.tif"), "--out", str(tmp_path / "o"), "--set", "=3"])
    assert "(no key)" in capsys.readouterr().err
    tifffile.imwrite(tmp_path / "z.tif", np.ones((10, 3, 8, 8), np.uint16), imagej=True, metadata={"axes": "TZYX"})
    assert main(["detect", str(tmp_path / "z.tif"), "--out", str(tmp_path / "o"), "--pixel-size", "0.2",
                 "--frame-interval", "6.8"]) == 2
    assert "holds z-stacks over time (axes TZYX" in capsys.readouterr().err


def test_a_tilde_after_an_equals_sign_is_the_home_folder(tmp_path, monkeypatch):
    """bash leaves `--out=~/det` as typed: detect and simulate made a folder named '~' here."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "~/sims", "--movies", "1", "--frames", "40", "--height", "16", "--width", "64",
                 "--no-preview"]) == 0
    assert (tmp_path / "home" / "sims").is_dir() and not (tmp_path / "~").exists()
    parser = build_parser()
    args = parser.parse_args(["detect", "x.tif", "--out=~/det"])
    assert args.out == tmp_path / "home" / "det"


def test_a_tilde_before_a_name_stays_a_name():
    """`--out ~res` (no user 'res') ended in a traceback, and '~backup' was /var/backups."""
    from casparks.paths import home_path

    assert home_path("~res") == Path("~res") and home_path("~backup/x") == Path("~backup/x")
    assert home_path("~") == Path.home() and home_path("~/a") == Path.home() / "a"
    assert build_parser().parse_args(["detect", "x.tif", "--out", "~res"]).out == Path("~res")


def test_a_path_that_begins_with_a_tilde_and_a_name_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """`casparks check ~olddata` (no such user) ended in 'RuntimeError: Could not determine home directory'."""
    monkeypatch.chdir(tmp_path)
    assert main(["check", "~olddata"]) == 2
    err = capsys.readouterr().err
    assert "~olddata" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_log_file_says_how_a_command_stopped(tmp_path, capsys):
    """A job's --log-file was empty after an error (exit 2) or an interruption (143): it could not
    tell a failed job from one that did nothing."""
    log_file = tmp_path / "run.log"
    assert main(["check", str(tmp_path / "missing"), "--log-file", str(log_file)]) == 2
    for handler in logging.getLogger("casparks").handlers:
        handler.flush()
    text = log_file.read_text()
    assert "check stopped with an error (exit 2)" in text and "missing" in text
    assert "stopped with an error" not in capsys.readouterr().err  # the console has its own line
    main(["check", str(tmp_path / "missing")])  # the logger as a command without a log file leaves it


def test_a_mistake_on_the_command_line_reaches_the_log_file(tmp_path, capsys):
    """An unknown option stopped the parse before logging started: a job's --log-file had no
    word of why it failed. A file that is not a log is still left untouched."""
    log_file = tmp_path / "run.log"
    with pytest.raises(SystemExit) as info:
        main(["check", str(tmp_path), "--bogus", "--log-file", str(log_file)])
    assert info.value.code == 2
    for handler in logging.getLogger("casparks").handlers:
        handler.flush()
    assert "casparks check stopped with an error (exit 2): unrecognized arguments: --bogus" in log_file.read_text()
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    movie = tmp_path / "01_video.tif"
    movie.write_bytes(b"II*\x00 not a log")
    with pytest.raises(SystemExit):
        main(["check", str(tmp_path), "--bogus", "--log-file", str(movie)])
    assert movie.read_bytes() == b"II*\x00 not a log"
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_an_option_before_its_command_is_named_as_the_commands(tmp_path, capsys):
    """`casparks -v check DIR` said "unrecognized arguments: -v", though check takes -v after it."""
    with pytest.raises(SystemExit) as info:
        main(["-v", "check", str(tmp_path)])
    assert info.value.code == 2
    assert "-v is an option of casparks check: give it after the command" in capsys.readouterr().err


def test_an_interrupted_convert_and_prepare_labels_say_what_is_complete_and_the_log_records_it(
        monkeypatch, capsys, tmp_path):
    """convert and prepare-labels died by Python's own SIGTERM (hidden .part files left), and a
    detect, simulate or report interruption reached stderr but not --log-file."""
    from types import SimpleNamespace

    import casparks.labels
    import casparks.projects

    image = SimpleNamespace(project=SimpleNamespace(name="p.lif"), path="cell 1", describe=lambda: "10 frames")
    monkeypatch.setattr(casparks.projects, "plan", lambda inputs, out, overwrite: ([object(), object()], []))

    def two_then_stop(pairs, overwrite):
        yield SimpleNamespace(image=image, output=tmp_path / "p_cell1.tif")
        raise KeyboardInterrupt

    monkeypatch.setattr(casparks.projects, "iter_convert", two_then_stop)
    log_file = tmp_path / "convert.log"
    assert main(["convert", "p.lif", "--out", str(tmp_path / "tifs"), "--log-file", str(log_file)]) == 130
    err = capsys.readouterr().err
    assert "interrupted: 1 of 2 movie(s) are complete" in err and "--overwrite" in err
    assert "interrupted (exit 130): 1 of 2 movie(s) are complete" in log_file.read_text()

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(casparks.labels, "prepare_dataset_labels", stop)
    assert main(["prepare-labels", str(tmp_path), "--out", str(tmp_path / "prep")]) == 130
    assert "the same command with --skip-existing goes on" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["detect", "movies", "--out", ""],
    ["detect", "", "--out", "results"],
    ["simulate", ""],
    ["check", ""],
    ["convert", "", "--out", "tifs"],
])
def test_an_empty_path_is_refused_not_taken_for_the_working_directory(argv, tmp_path, monkeypatch, capsys):
    """`--out "$OUT"` with OUT unset wrote the results into the working directory (Path("") is ".")."""
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)  # detect's movies are read by detect_files: its one-line error
    except SystemExit as stop:  # a path option: argparse's error
        code = stop.code
    assert code == 2 and "empty" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_detect_threshold_and_a_set_event_threshold_that_disagree_are_refused(tmp_path, capsys):
    """--threshold 0.7 --set event_threshold=0.5: one silently won (0.7 in the JSON)."""
    assert main(["detect", str(tmp_path / "m.tif"), "--out", str(tmp_path / "r"), "--threshold", "0.7",
                 "--set", "event_threshold=0.5"]) == 2
    assert "--threshold 0.7 and --set event_threshold=0.5 disagree" in capsys.readouterr().err


def test_small_cli_mistakes_are_told_once_and_plainly(tmp_path, capsys):
    """--log-file before the command was "invalid choice: 'x.log'"; a mistyped preset file was an
    "unknown simulation preset"; models --config /dev/stdout mixed its "wrote" line into the YAML."""
    import yaml

    with pytest.raises(SystemExit):
        main(["--log-file", str(tmp_path / "x.log"), "check", str(tmp_path)])
    assert "--log-file is an option of each command: give it after the command" in capsys.readouterr().err
    assert main(["simulate", str(tmp_path / "sim"), "--preset", str(tmp_path / "nosuch.yaml")]) == 2
    assert "nosuch.yaml: preset file not found" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "casparks", "models", "--config", "/dev/stdout"],
                          capture_output=True, text=True)  # stdout a pipe, as `| tee` or `> ft.yaml` in a job
    assert done.returncode == 0 and "wrote standard output" in done.stderr
    assert "casparks train the file you kept it in" in done.stderr and "train /dev/stdout" not in done.stderr
    assert set(yaml.safe_load(done.stdout)) == {"format_version", "run", "data", "loss", "network"}


def test_a_report_movie_that_does_not_exist_is_told_once(tmp_path, capsys):
    """report --movie nosuch.tif on a folder of two movies printed the same line twice."""
    assert main(["report", str(tmp_path), "--movie", str(tmp_path / "nosuch.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("nosuch.tif: no such movie file or folder") == 1 and err.count("\n") == 1


def test_dash_is_stdout_and_stdout_redirected_to_a_file_is_written_into(tmp_path):
    """--json - wrote a file named "-"; --config /dev/stdout > ft.yaml was refused ("exists
    already"), and with --overwrite it would have replaced the /dev/stdout link itself."""
    import yaml

    out = tmp_path / "ft.yaml"
    with open(out, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "casparks", "models", "--config", "-"], stdout=handle,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "wrote standard output" in done.stderr and "/dev/stdout" not in done.stderr
    assert set(yaml.safe_load(out.read_text())) == {"format_version", "run", "data", "loss", "network"}
    assert not (tmp_path / "-").exists()


def test_a_log_file_the_system_refuses_and_help_with_a_log_file(tmp_path, capsys):
    """Reading --log-file ahead of the parse raised a traceback for a name the system refuses
    (it was one line), made the file and its folder for --help, and took --l for --log-file."""
    too_long = tmp_path / ("a" * 300 + ".log")
    assert main(["check", str(tmp_path), "--log-file", str(too_long)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "File name too long" in err
    with pytest.raises(SystemExit) as info:
        main(["check", str(tmp_path), "--log-file", str(tmp_path / "sub" / "x.log"), "--help"])
    assert info.value.code == 0 and not (tmp_path / "sub").exists()
    capsys.readouterr()
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(SystemExit):
            main(["simulate", str(tmp_path / "o"), "--l", "x"])
    finally:
        os.chdir(here)
    assert not (tmp_path / "x").exists()
