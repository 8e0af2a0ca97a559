"""Command line: argument parsing only; every subcommand calls the Python API.

User mistakes (:class:`~casparks.errors.CasparksError`) print one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn, Sequence

from . import __version__
from .errors import CasparksError, interrupted_exit_code, terminate_as_interrupt

log = logging.getLogger("casparks")

EXIT_USER_ERROR = 2
#: the machine failed the command (a full disk, no permission to write): not the input's fault
EXIT_SYSTEM_ERROR = 1


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    key, value = text.split("=", 1)
    if not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r} (no key)")
    return key.strip(), value.strip()


def _path(text: str) -> Path:
    """A path argument with ``~/`` expanded: the shell leaves it as typed after ``--out=`` (a folder
    named ``~`` was made in the working directory, which ``rm -rf ~`` would then remove)."""
    from .paths import home_path

    if not text.strip():  # an unset shell variable: Path("") is the working directory, which got the results
        raise argparse.ArgumentTypeError("an empty path (an unset shell variable?)")
    return home_path(text)


def _output_path(text: str) -> Path:
    """An output file: ``-`` is standard output, as in most tools (it wrote a file named ``-``)."""
    return Path("/dev/stdout") if text.strip() == "-" else _path(text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _offset(text: str) -> float | str:
    """A dark level in ADU, or ``auto`` (read from the movie's photon noise: :mod:`casparks.darklevel`)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of ADU or 'auto', got {text!r}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("logging")
    group.add_argument(
        "-v", "--verbose", action="count", default=0, help="more messages (-v info, -vv debug)"
    )
    group.add_argument("--log-file", type=_path, help="also write the log (debug level) to this file")


def _units(parser: argparse.ArgumentParser, what: str = "movies") -> None:
    parser.add_argument(
        "--pixel-size", type=_positive_float, metavar="UM",
        help=f"pixel size of the {what} in µm (overrides the TIFF metadata)",
    )
    parser.add_argument(
        "--frame-interval", type=_positive_float, metavar="MS",
        help=f"time between frames of the {what} in ms (overrides the TIFF metadata)",
    )


# ----------------------------------------------------------------------------------------------
# subcommands


def _add_simulate(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="write simulated movies with ground truth in the original data-set layout",
        description="Simulate confocal x-y-t movies of cardiomyocytes with sparks, puffs and waves, "
        "and write NN_video.tif, NN_class_label.tif, NN_event_label.tif and NN_events.csv per movie.",
    )
    p.add_argument("out_dir", type=_path, nargs="?", help="output folder (created)")
    p.add_argument("--movies", type=int, metavar="N",
                   help="number of movies (default 1, or what a data set's --preset file records)")
    p.add_argument("--seed", type=int, help="random seed; the same seed gives the same movies (default 0, or what a "
                                            "data set's --preset file records)")
    p.add_argument("--preset", default="default", help="parameter preset: a name (see --list-presets) or a YAML file "
                                                      "(a data set's simulation_FIRST-LAST.yaml makes it again)")
    p.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    p.add_argument("--frames", type=int, metavar="T", help="frames per movie (default: the preset's, 500 in default)")
    p.add_argument("--height", type=int, metavar="PX", help="frame height in px (default: the preset's, 64 in default)")
    p.add_argument("--width", type=int, metavar="PX", help="frame width in px (default: the preset's, 512 in default)")
    p.add_argument("--pixel-size", type=_positive_float, metavar="UM", help="pixel size in µm (default: the preset's, 0.2 in default)")
    p.add_argument("--frame-interval", type=_positive_float, metavar="MS", help="frame interval in ms (default: the preset's, 6.8 in default)")
    p.add_argument(
        "--set", dest="overrides", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="override any simulation parameter (see the parameter table in the docs); repeatable",
    )
    p.add_argument("--first-id", type=int, help="id of the first movie (default 1 → 01_video.tif, or what a data "
                                                 "set's --preset file records)")
    p.add_argument("--no-preview", action="store_true", help="do not write the PNG previews")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _common(p)
    p.set_defaults(handler=_run_simulate)


def _run_simulate(args) -> int:
    from .simulate import list_presets, load_simulation_config, simulate_dataset

    if args.list_presets:
        for name, description in list_presets().items():
            print(f"{name:12s} {description}")
        return 0
    if args.out_dir is None:
        raise CasparksError("no output folder given", fix="run: casparks simulate OUT_DIR [options]")
    overrides: dict[str, object] = dict(args.overrides)
    for flag, key in (("frames", "n_frames"), ("height", "height_px"), ("width", "width_px"),
                      ("pixel_size", "pixel_size_um"), ("frame_interval", "frame_interval_ms")):
        value = getattr(args, flag)
        if value is not None:
            if key in overrides and not _same_number(key, overrides[key], value):
                option = "--" + flag.replace("_", "-")
                raise CasparksError(f"{option} {value} and --set {key}={overrides[key]} disagree",
                                    fix="give one of them")
            overrides[key] = value
    config = load_simulation_config(args.preset, overrides)
    run = _simulation_run(args)
    if run["n_movies"] < 1:
        raise CasparksError(f"--movies must be at least 1, got {run['n_movies']}")
    args.movies = run["n_movies"]
    bar = _progress("simulating", args.movies)
    done = [0]

    def progress(n: int, total: int) -> None:
        done[0] = n
        if bar is not None:
            bar(n, total)

    try:
        with terminate_as_interrupt():
            paths = simulate_dataset(
                args.out_dir, n_movies=run["n_movies"], seed=run["seed"], config=config,
                first_id=run["first_id"], overwrite=args.overwrite, previews=not args.no_preview, progress=progress,
            )
    except KeyboardInterrupt as exc:
        return _interrupted(exc, f"{done[0]} of {args.movies} movie(s) are complete in {args.out_dir}, and nothing of "
                                 "the next one is left; the same command with --overwrite makes them all")
    print(f"wrote {len(paths)} movie(s) to {args.out_dir}")
    return 0


def _interrupted(exc: BaseException, message: str) -> int:
    """Say what an interruption left and how to go on (stderr, and --log-file's record), and the
    exit code: 130 for Ctrl-C, 143 for a SIGTERM. The commands that catch it themselves left the
    log without a word of it."""
    code = interrupted_exit_code(exc)
    print(f"interrupted: {message}", file=sys.stderr)
    log.debug("interrupted (exit %d): %s", code, message)
    return code


def _same_number(key: str, text: object, value: float) -> bool:
    """Whether a --set value (text) names the number a flag gave ("abc" is refused as no number,
    not said to disagree)."""
    try:
        return float(str(text)) == float(value)
    except ValueError:
        raise CasparksError(f"--set {key}={text} is not a number", fix="give a number, or leave out the --set") from None


def _simulation_run(args) -> dict[str, int]:
    """The seed, first id and number of movies: as given, else as the --preset file of a data set
    records them (so that it makes the same movies again), else 0, 1 and 1."""
    from .simulation_params import recorded_run

    given = {"seed": args.seed, "first_id": args.first_id, "n_movies": args.movies}
    recorded = {k: v for k, v in recorded_run(args.preset).items() if given[k] is None}
    if recorded:
        names = {"seed": "seed", "first_id": "first id", "n_movies": "movies"}
        log.info("%s: the %s it records are used (--seed, --first-id, --movies give others)", args.preset,
                 ", ".join(f"{names[k]} {v}" for k, v in recorded.items()))
    defaults = {"seed": 0, "first_id": 1, "n_movies": 1}
    return {k: v if v is not None else recorded.get(k, defaults[k]) for k, v in given.items()}


def _add_check(sub) -> None:
    p = sub.add_parser(
        "check",
        help="validate a data-set folder in the original layout",
        description="Check that every NN_video.tif has class and event labels of the same shape, that "
        "class codes are known (0-4), every event has one class, and ids fit their dtype.",
    )
    p.add_argument("folder", type=_path, help="data-set folder")
    _common(p)
    p.set_defaults(handler=_run_check)


def _run_check(args) -> int:
    from .dataset import check_dataset, list_samples

    n_samples = len(list_samples(args.folder, require=(), warn=False))  # check_dataset names duplicates
    problems = check_dataset(args.folder)
    for problem in problems:
        print(problem)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{n_samples} sample(s) checked: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def _add_prepare_labels(sub) -> None:
    p = sub.add_parser(
        "prepare-labels",
        help="turn raw annotations into training labels (ignore regions, spark peaks)",
        description="Read a data-set folder with raw annotations and write a training data set: "
        "the same movies and event labels, and class labels with ignore regions around events and, "
        "with --sparks-type peaks, sparks reduced to balls at their smoothed maxima. The movies are "
        "hard links to the originals where the file system allows (no second copy): a program that "
        "edits a movie of OUT_DIR in place edits the original too.",
    )
    p.add_argument("in_dir", type=_path, help="data-set folder with raw annotations")
    p.add_argument("--out", type=_path, required=True, help="output data-set folder")
    p.add_argument("--sparks-type", choices=("raw", "peaks"), default=None, help="spark labels (default raw)")
    p.add_argument("--ignore-width-um", type=float, default=None, metavar="UM",
                   help="width of the ignore shell around events in space (µm)")
    p.add_argument("--ignore-width-ms", type=float, default=None, metavar="MS",
                   help="width of the ignore shell around events in time (ms)")
    p.add_argument("--peak-radius-um", type=float, default=None, metavar="UM", help="radius of a spark peak ball (µm)")
    p.add_argument("--peak-radius-ms", type=float, default=None, metavar="MS",
                   help="half-duration of a spark peak ball (ms)")
    p.add_argument("--peak-min-distance-um", type=float, default=None, metavar="UM",
                   help="minimum distance between two spark peaks in space (µm)")
    p.add_argument("--peak-min-distance-ms", type=float, default=None, metavar="MS",
                   help="minimum distance between two spark peaks in time (ms)")
    p.add_argument("--only-sparks", action="store_true", help="mark puffs and waves as ignore (spark-only training)")
    _units(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--skip-existing", action="store_true",
                   help="continue an interrupted run: samples prepared before with the same settings are kept")
    _common(p)
    p.set_defaults(handler=_run_prepare_labels)


def _run_prepare_labels(args) -> int:
    from .labels import LabelConfig, prepare_dataset_labels

    options = {
        "sparks_type": args.sparks_type,
        "ignore_width_um": args.ignore_width_um,
        "ignore_width_ms": args.ignore_width_ms,
        "peak_radius_um": args.peak_radius_um,
        "peak_radius_ms": args.peak_radius_ms,
        "peak_min_distance_um": args.peak_min_distance_um,
        "peak_min_distance_ms": args.peak_min_distance_ms,
        "only_sparks": args.only_sparks or None,
    }
    config = LabelConfig(**{k: v for k, v in options.items() if v is not None})
    try:
        with terminate_as_interrupt():  # Python's own SIGTERM left hidden temporary files behind
            written = prepare_dataset_labels(
                args.in_dir, args.out, config, pixel_size_um=args.pixel_size,
                frame_interval_ms=args.frame_interval, overwrite=args.overwrite,
                progress=_progress("preparing labels"), skip_existing=args.skip_existing,
            )
    except KeyboardInterrupt as exc:
        return _interrupted(exc, f"the samples prepared so far are complete in {args.out}, nothing half-written is "
                                 "left; the same command with --skip-existing goes on")
    print(f"prepared labels of {len(written)} sample(s) in {args.out}")
    return 0


def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score predictions against annotations (reference and one-to-one metrics)",
        description="Pair prediction files with annotated movies by id and report the reference "
        "paper's event metrics (IoMin matching, many-to-many), strict one-to-one matching with a "
        "confusion matrix, and per-class voxel IoU outside ignore voxels.",
    )
    p.add_argument("--truth", type=_path, required=True, help="annotated data-set folder")
    p.add_argument("--pred", type=_path, required=True,
                   help="folder of predictions (NN_class_label.tif or <stem>_class_label.tif, optional event labels)")
    p.add_argument("--iomin", type=float, default=0.5, metavar="X", help="IoMin needed for a match, in the one-to-one and the reference metrics alike (default 0.5, the "
                        "paper's)")
    p.add_argument("--only-predicted", action="store_true",
                   help="score the annotated movies that have a prediction, leaving the others out (a subset)")
    p.add_argument("--pair", action="append", default=[], metavar="NAME=ID",
                   help="score prediction NAME (NAME_class_label.tif) against annotated movie ID: a movie "
                   "detected under another name (repeatable)")
    p.add_argument("--against", type=_path, metavar="PRED",
                   help="a second folder of predictions of the same movies (another model, other settings): "
                   "prints both one-to-one F1s and the 95 %% interval of their difference (paired bootstrap over movies)")
    p.add_argument("--json", type=_output_path, metavar="OUT", help="also write all scores as JSON (-: stdout)")
    p.add_argument("--pairs", type=_path, metavar="OUT.csv",
                   help="also write which annotated event was paired with which predicted one (one-to-one): a row "
                        "per annotated event and per unpaired prediction, with both event ids, classes, IoMin and "
                        "outcome; of --pred only, with --against")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json or --pairs file")
    _common(p)
    p.set_defaults(handler=_run_evaluate)


def _run_evaluate(args) -> int:
    from .evaluation import evaluate

    if not 0 < args.iomin <= 1:
        raise CasparksError(f"--iomin must lie in (0, 1], got {args.iomin}")
    pairs = {}
    for item in args.pair:
        name, sep, movie_id = item.partition("=")
        if not (sep and name.strip() and movie_id.strip()):
            raise CasparksError(f"--pair {item!r} is not NAME=ID", fix="write e.g. --pair cell3=07")
        pairs[name.strip()] = movie_id.strip()
    if args.json or args.pairs:  # before the work, not after it
        from .io import check_output_file, is_stream

        if args.pairs is not None and (str(args.pairs) == "-" or is_stream(args.pairs)):
            raise CasparksError(f"--pairs writes a CSV file, not to a stream ({args.pairs}: the table goes to stdout)",
                                fix="give a file name, e.g. --pairs pairs.csv")

        if args.json and args.pairs and not is_stream(args.json) and args.json.resolve() == args.pairs.resolve():
            raise CasparksError(f"--json and --pairs name one file, {args.pairs}", fix="give each its own file")
        for path in (args.json, args.pairs):
            if path:
                check_output_file(path, args.overwrite)
    result = evaluate(args.truth, args.pred, iomin_threshold=args.iomin, progress=_progress("evaluating"),
                      only_predicted=args.only_predicted, pairs=pairs)
    other = None
    if args.against:
        other = evaluate(args.truth, args.against, iomin_threshold=args.iomin, progress=_progress("evaluating"),
                         only_predicted=args.only_predicted, pairs=pairs, option="--against",
                         pairs_where_present=True)  # a pair names a file of --pred; --against may hold it too
        if args.only_predicted:  # each scored the movies it predicted: compare the ones both did
            from .evaluation import on_common_movies

            result, other = on_common_movies(result, other)
    pairs_table = result.pairs if args.pairs else None  # made before anything is written
    if args.json:  # written first: a closed pipe on the table below must not lose it
        from .io import write_json

        record = result.to_dict()
        if other is not None:
            record["against"] = result.comparison(other)
        write_json(args.json, record, overwrite=args.overwrite)
    if args.pairs:
        from .io import write_csv

        write_csv(args.pairs, pairs_table, overwrite=args.overwrite)
    comparison = result.format_comparison(other) if other is not None else None  # a mismatch: before any table
    shown = _beside_json(args.json)
    print(result.format_table(), file=shown)
    if comparison is not None:
        print(file=shown)
        print(comparison, file=shown)
    if args.json:
        print(f"scores written to {args.json}", file=shown)
    if args.pairs:
        print(f"pairs written to {args.pairs}", file=shown)
    return 0


def _beside_json(json_path: Path | None):
    """Where the human-readable lines go: stdout, or stderr where the JSON is written to a stream
    (``--json /dev/stdout | jq``: the table and the JSON would share the pipe)."""
    from .io import is_stream

    return sys.stderr if json_path is not None and is_stream(json_path) else sys.stdout


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the network on annotated movies (resume, fine-tune, validate, test)",
        description="Train a 3-D U-Net as a YAML config says (sections run, data, loss, network). "
        "The run folder <output_dir>/<run_name>/ receives config.yaml, checkpoints/, metrics.csv, "
        "logs/ (TensorBoard, train.log) and labels_cache/. Set run.load_run_name to resume a run "
        "(or fine-tune with run.load_mode=finetune).",
    )
    p.add_argument("config", type=_path, help="training configuration (YAML); see configs/ for examples")
    p.add_argument(
        "--set", dest="overrides", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="override a config value, e.g. --set train_epochs=100 --set data.data_dir=[sims]; repeatable",
    )
    _common(p)
    p.set_defaults(handler=_run_train)


def _run_train(args) -> int:
    from .config import load_config
    from .training import train

    config = load_config(args.config, args.overrides)
    result = train(config)
    print(f"run folder: {result.run_dir}")
    print(f"step {result.step}, checkpoint: {result.checkpoint}")
    if result.metrics:
        shown = {k: v for k, v in result.metrics.items() if k == "loss" or k.endswith("f1_reference")}
        # an undefined score (no event of that class) as the evaluation tables show it
        print("validation: " + ", ".join(f"{k} {v:.4g}" if v == v else f"{k} –" for k, v in shown.items()))
    if result.test_metrics:  # written to a file only, and said in train.log: the terminal showed none
        f1 = {name: scores["one_to_one"]["f1"] for name, scores in result.test_metrics["classes"].items()}
        print(f"test ({result.test_metrics['settings']['n_movies']} movie(s), one-to-one F1): "
              + ", ".join(f"{name} {v:.3f}" if v is not None and v == v else f"{name} –" for name, v in f1.items())
              + f"; test_metrics.json in {result.run_dir}")
    return 0


def _add_detect(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="find, separate, classify and measure the events of movies",
        description="Detect Ca²⁺ sparks, puffs and waves in each movie and write, per movie, "
        "<stem>_class_label.tif (0 background, 1 spark, 2 wave, 3 puff), <stem>_event_label.tif "
        "(one id per event), <stem>_events.csv (measurements, units in the column names) and "
        "<stem>_detection.json (model, settings, counts, frequencies, timings).",
    )
    p.add_argument("inputs", nargs="+", metavar="MOVIE_OR_GLOB",
                   help="TIFF or Zeiss LSM movies (T×Y×X), folders of them, or glob patterns such as 'data/*.tif'")
    p.add_argument("--out", type=_path, required=True, help="output folder (created)")
    p.add_argument("--model", default=None,
                   help="a bundled model (casparks models), a checkpoint file or a training run folder (default: the default model, marked by casparks models)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    _units(p)
    p.add_argument("--channel", type=int, metavar="C", help="the calcium channel of multi-channel stacks (0-based)")
    p.add_argument("--pipeline", action=argparse.BooleanOptionalAction, default=True,
                   help="post-process and write each movie in a second thread while the network reads the next "
                        "(default: on; 7-13 %% faster per movie in a folder on 2 cores; holds two movies' results, ~0.2 GB more)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write <stem>_probabilities.tif (float32, T frames × 4 channels: background, spark, wave, puff)")
    p.add_argument("--threshold", metavar="P|otsu",
                   help="threshold on the event probability (default: the model's calibrated value)")
    p.add_argument("--window", type=int, metavar="FRAMES", help="frames per inference window (default: the model's)")
    p.add_argument("--overlap", type=float, metavar="F", help="fraction of a window shared with the next (default: the model's)")
    p.add_argument("--tile", type=int, nargs=2, metavar=("Y", "X"),
                   help="largest field in pixels (at the model's sampling) run at once; larger frames are cut into "
                        "as few blended tiles as this size needs, each as small as that count allows (keep Y at "
                        "least 64; default: frames of up to 128 × 512 = 65536 px whole, whatever their shape, "
                        "larger ones in tiles of at most 128 512)")
    p.add_argument("--precision", choices=("auto", "bf16", "32"), default="auto",
                   help="auto: bfloat16 where the processor has it natively, else float32 (bf16 is refused where "
                        "it would be emulated: ~200x slower)")
    p.add_argument("--no-fine-averaging", action="store_true",
                   help="read a movie sampled finer than the model's training movies (sim-v3: under 0.1 µm or 2.5 ms) "
                        "without first averaging it to the finest of them (default: averaged; the "
                        "measurements always read the movie as it is)")
    p.add_argument("--offset", type=_offset, metavar="ADU|auto",
                   help="the detector's dark level, subtracted before ΔF/F0 (default auto: read from the movie's "
                        "photon noise, 0 where it cannot be; the summary JSON says which); 0 for offset-free movies")
    p.add_argument("--no-raster-scan", action="store_true",
                   help="frames taken whole (a camera, a spinning disk): each frame's time is its middle (default: "
                        "rows scanned one after another, as a point-scanning confocal, so a peak's time counts its row)")
    p.add_argument(
        "--set", dest="overrides", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="override a post-processing setting, e.g. --set spark_min_distance_um=1.5 (none: off); repeatable",
    )
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    existing.add_argument("--skip-existing", action="store_true",
                   help="continue an interrupted run: movies whose results in --out are complete are not detected "
                        "again (they must come from the same model and settings)")
    _common(p)
    p.set_defaults(handler=_run_detect)


def _run_detect(args) -> int:
    from .classes import format_counts
    from .config import read_numbers_yaml
    from .detection import DetectSettings, detect_files
    from .measure import MeasureConfig

    post: dict[str, object] = {}
    for key, value in args.overrides:  # none as calibrate's --grid writes it, or YAML's null
        post[key] = None if value.lower() == "none" else read_numbers_yaml(value)
    if args.threshold is not None:
        threshold = args.threshold if args.threshold == "otsu" else _probability(args.threshold)
        if "event_threshold" in post and str(post["event_threshold"]).lower() != str(threshold).lower():
            raise CasparksError(f"--threshold {args.threshold} and --set event_threshold={post['event_threshold']} "
                                "disagree", fix="give one of them")  # one had silently won
        post["event_threshold"] = threshold
    measure = MeasureConfig(**({"offset_adu": args.offset} if args.offset is not None else {}),
                            raster_scan=not args.no_raster_scan)
    settings = DetectSettings(window_frames=args.window, overlap=args.overlap, precision=args.precision,
                              tile_yx=tuple(args.tile) if args.tile else "auto", postprocess=post, measure=measure,
                              average_fine_sampling=not args.no_fine_averaging)
    finished: list[str] = []

    def report_movie(summary: dict) -> None:  # as each movie is written, not at the end
        if summary.get("skipped"):
            print(f"{summary['name']}: {format_counts(summary['counts'])} (done before, skipped)", flush=True)
            return
        finished.append(summary["name"])
        print(_movie_line(summary), flush=True)

    try:
        with terminate_as_interrupt():  # a scheduler's SIGTERM: handled as Ctrl-C (exit 143)
            detect_files(
                args.inputs, args.out, args.model, device=args.device, settings=settings,
                pixel_size_um=args.pixel_size, frame_interval_ms=args.frame_interval, channel=args.channel,
                save_probabilities=args.save_probabilities, overwrite=args.overwrite, skip_existing=args.skip_existing,
                pipeline=args.pipeline, on_result=report_movie,
            )
    except KeyboardInterrupt as exc:
        done = f"the results of {', '.join(finished)} are complete in {args.out}" if finished else "no movie was finished"
        # after --overwrite the movies not redone yet hold the results being replaced: redo them all
        rest = ("the same command redoes every movie" if args.overwrite
                else "the same command with --skip-existing detects the rest")
        return _interrupted(exc, f"{done}; nothing half-written is left; {rest}")
    print(f"results in {args.out}")
    return 0


def _movie_line(summary: dict) -> str:
    """A written movie's line: its counts and the sampling used, as convert shows it (a unit given
    or read wrongly is seen at once), and the time it took."""
    from .classes import format_counts

    return (f"{summary['name']}: {format_counts(summary['counts'])} ({summary['pixel_size_um']:.4g} µm, "
            f"{summary['frame_interval_ms']:.4g} ms; {summary['timings_s']['total']:.1f} s)")


def _add_measure(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="measure the events of annotated or corrected labels, as detect measures its own",
        description="Measure every event of labelled movies (an annotated data set: NN_video.tif with "
        "NN_class_label.tif and NN_event_label.tif; a detection corrected in napari and saved as a training "
        "sample) with detect's measurements, and write detect's files per movie: <stem>_class_label.tif, "
        "<stem>_event_label.tif, <stem>_events.csv and <stem>_detection.json (model 'labels'), which report, "
        "read_events and read_movies read. Events keep their annotated ids (the events table's id); event "
        "voxels without an id, or every event without NN_event_label.tif, get new ids by connected components "
        "per class; ignore voxels (4) are not measured. Nothing is written if an input is wrong or an output "
        "exists, unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", type=_path, metavar="DATASET_OR_VIDEO",
                   help="data-set folders in the original layout, or their NN_video.tif files")
    p.add_argument("--out", type=_path, required=True, help="output folder (created; not the data set's own)")
    _units(p)
    p.add_argument("--channel", type=int, metavar="C", help="the calcium channel of multi-channel movies (0-based)")
    p.add_argument("--offset", type=_offset, metavar="ADU|auto",
                   help="the detector's dark level, subtracted before ΔF/F0 (default auto: read from the movie's "
                        "photon noise, as detect reads it)")
    p.add_argument("--no-raster-scan", action="store_true",
                   help="frames taken whole (a camera, a spinning disk): each frame's time is its middle")
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    _common(p)
    p.set_defaults(handler=_run_measure)


def _run_measure(args) -> int:
    from .labelled import measure_files
    from .measure import MeasureConfig

    config = MeasureConfig(**({"offset_adu": args.offset} if args.offset is not None else {}),
                           raster_scan=not args.no_raster_scan)
    finished: list[str] = []

    def report_movie(summary: dict) -> None:
        finished.append(summary["name"])
        print(_movie_line(summary), flush=True)

    try:
        with terminate_as_interrupt():
            measure_files(args.inputs, args.out, pixel_size_um=args.pixel_size, frame_interval_ms=args.frame_interval,
                          channel=args.channel, config=config, overwrite=args.overwrite, on_result=report_movie)
    except KeyboardInterrupt as exc:
        done = f"the results of {', '.join(finished)} are complete in {args.out}" if finished else "no movie was finished"
        return _interrupted(exc, f"{done}; nothing half-written is left; the same command with --overwrite measures "
                                 "them all")
    print(f"results in {args.out}")
    return 0


def _add_convert(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="write the x-y-t movies of Leica LIF project files as TIFFs with their units",
        description="Write each x-y-t movie of Leica LIF project files as its own ImageJ TIFF, "
        "<project>_<image>.tif, with its pixel size (µm) and frame interval (ms), which every casparks "
        "command reads; channels are kept (detect --channel picks one). Line scans, z-stacks and "
        "snapshots are listed and left out. Nothing is written if an output exists, unless --overwrite.",
    )
    p.add_argument("inputs", nargs="+", type=_path, metavar="PROJECT", help=".lif files, or folders of them")
    p.add_argument("--out", required=True, type=_path, help="folder for the TIFF movies")
    p.add_argument("--overwrite", action="store_true", help="replace TIFFs that exist already")
    _common(p)
    p.set_defaults(handler=_run_convert)


def _run_convert(args) -> int:
    from .projects import iter_convert, plan

    pairs, skipped = plan(args.inputs, args.out, args.overwrite)
    for image in skipped:
        print(f"{image.project.name}: {image.path}: left out, {image.skipped}")
    written = 0
    try:
        with terminate_as_interrupt():  # Python's own SIGTERM left a movie's hidden .part file behind
            for done in iter_convert(pairs, args.overwrite):
                written += 1
                print(f"{done.image.project.name}: {done.image.path} -> {done.output} ({done.image.describe()})",
                      flush=True)
    except KeyboardInterrupt as exc:
        return _interrupted(exc, f"{written} of {len(pairs)} movie(s) are complete in {args.out}, nothing of the next "
                                 "one is left; the same command with --overwrite writes them all")
    print(f"{len(pairs)} movie(s) written to {args.out}" + (f", {len(skipped)} image(s) left out" if skipped else ""))
    return 0


def _add_report(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write an HTML report of a detection (figures, tables, overlay movie)",
        description="Turn a detection folder (casparks detect --out) into a self-contained HTML page per movie "
        "(max projection with event outlines, kymograph, ΔF/F0 traces per class, distributions of amplitude, "
        "FWHM, FDHM and duration, frequencies, summary table, settings and model), the figures as PNGs, and an "
        "overlay movie (RGB TIFF, and MP4 when imageio-ffmpeg is installed). A folder of several movies also "
        "gets a summary page. Default: DETECTION_DIR/report.html, files in DETECTION_DIR/report_files/.",
    )
    p.add_argument("detection", type=_path, metavar="DETECTION_DIR_OR_JSON",
                   help="a casparks detect output folder, or one <stem>_detection.json")
    p.add_argument("--out", type=_path, metavar="PATH",
                   help="the main page (.html), or a folder for report.html (default: inside the detection folder)")
    p.add_argument("--movie", type=_path, metavar="PATH",
                   help="the movie (one movie) or a folder holding the movies, if they moved since detection")
    p.add_argument("--channel", type=int, metavar="C", help="the calcium channel of multi-channel stacks (0-based)")
    p.add_argument("--kymograph-y", type=float, metavar="UM",
                   help="draw the kymograph along a line at this y (µm) instead of the maximum over y")
    p.add_argument("--no-video", dest="video", action="store_false", help="skip the overlay movies (TIFF and MP4)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing report")
    _common(p)
    p.set_defaults(handler=_run_report)


def _run_report(args) -> int:
    from .report import write_report

    try:
        with terminate_as_interrupt():
            report = write_report(args.detection, out=args.out, movie=args.movie, overwrite=args.overwrite,
                                  video=args.video, channel=args.channel, kymograph_y_um=args.kymograph_y,
                                  progress=_progress("report"))
    except KeyboardInterrupt as exc:  # the pages come last: what was written is figures no page shows yet
        return _interrupted(exc, "the report is not complete (its main page is written last); the same command "
                                 "with --overwrite writes it whole")
    print(f"report: {report.main} ({len(report.pages)} movie page(s), {len(report.files)} files)")
    return 0


def _threshold(text: str) -> float | None:
    """A probability, or ``none`` (the class uses the event threshold)."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability or none, got {text!r}") from None


def _grid(text: str) -> tuple[str, list]:
    from .calibration import parse_grid

    try:
        return parse_grid(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_calibrate(sub) -> None:
    from .calibration import DEFAULT_EVENT_THRESHOLDS, DEFAULT_PUFF_THRESHOLDS, DEFAULT_SPARK_THRESHOLDS

    def shown(values) -> str:
        return " ".join("none" if v is None else f"{v:g}" for v in values)

    p = sub.add_parser(
        "calibrate",
        help="choose a model's post-processing thresholds on annotated validation movies (and write its card)",
        description="Run the network once on each annotated movie of the --val folders, then post-process and "
        "score every combination of event, spark and puff thresholds (and of --grid values of other "
        "post-processing options); print one row per combination (one-to-one F1 per class, their mean, reference "
        "F1) and the best mean one-to-one F1. --write-card writes the best settings into a fine-tuned model's card.",
    )
    p.add_argument("model", help="a training run folder, a checkpoint file or a bundled model (casparks models)")
    p.add_argument("--val", type=_path, nargs="+", action="append", required=True, metavar="DIR",
                   help="folders of annotated movies (the data-set layout), scored together; give --val again for "
                        "another group (e.g. another microscope), scored apart: the best then has the highest mean "
                        "of the groups' mean F1")
    p.add_argument("--event-thresholds", type=float, nargs="+", default=list(DEFAULT_EVENT_THRESHOLDS), metavar="P",
                   help=f"event probability thresholds to try (default {shown(DEFAULT_EVENT_THRESHOLDS)} and the model's own)")
    p.add_argument("--spark-thresholds", type=_threshold, nargs="+", default=list(DEFAULT_SPARK_THRESHOLDS),
                   metavar="P|none", help=f"spark thresholds (none: the event threshold; default {shown(DEFAULT_SPARK_THRESHOLDS)} and the model's own)")
    p.add_argument("--puff-thresholds", type=_threshold, nargs="+", default=list(DEFAULT_PUFF_THRESHOLDS),
                   metavar="P|none", help=f"puff thresholds (none: the event threshold; default {shown(DEFAULT_PUFF_THRESHOLDS)} and the model's own)")
    p.add_argument("--grid", type=_grid, nargs="+", default=[], metavar="KEY=V1,V2",
                   help="also try these values of other post-processing options (e.g. spark_min_duration_ms=10,20; "
                        "none: the option off)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="combinations scored at once, in forked processes that share the movies (default 1)")
    p.add_argument("--window", type=int, metavar="FRAMES", help="frames per inference window (default: the model's)")
    p.add_argument("--overlap", type=float, metavar="F", help="fraction of a window shared with the next (default: the model's)")
    p.add_argument("--edge-frames", type=int, metavar="N",
                   help="mirrored frames before and after each movie (default: the model's ignore_frames_loss)")
    _units(p, "validation movies")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu or cuda")
    p.add_argument("--json", type=_output_path, metavar="OUT",
                   help="also write every row and the best settings as JSON (-: stdout)")
    p.add_argument("--probabilities", type=_path, metavar="DIR",
                   help="keep each movie's probabilities in DIR (float16, ~130 MB per 500 x 64 x 512 movie) and read "
                        "them back in later runs with the same model, network settings and movie: a new grid over "
                        "the same movies then runs no network; they are read from there as needed, so memory stays "
                        "flat (without it every movie's probabilities stay in memory, ~270 MB each)")
    p.add_argument("--write-card", action="store_true",
                   help="write the best settings into the model's card: a run's card.yaml (updated in place), or "
                        "X.yaml beside a checkpoint X.ckpt; never a bundled model's")
    p.add_argument("--overwrite", action="store_true", help="replace an existing JSON file, or X.yaml beside X.ckpt")
    _common(p)
    p.set_defaults(handler=_run_calibrate)


def _run_calibrate(args) -> int:
    from .calibration import calibrate, card_path, write_card
    from .io import check_output_file

    if args.json:  # before the work, not after it
        check_output_file(args.json, args.overwrite)
    if args.probabilities and not args.probabilities.exists():  # made now: a folder that cannot be, refused now
        check_output_file(args.probabilities)
    shown = _beside_json(args.json)
    if args.write_card:  # a bundled model, an existing X.yaml, a folder not writable: refused now
        check_output_file(card_path(args.model, overwrite=args.overwrite), overwrite=True)
    with terminate_as_interrupt():  # a SIGTERM stops the forked workers too (they ran on for 7 s)
        result = calibrate(args.model, args.val, event_thresholds=args.event_thresholds,
                           spark_thresholds=args.spark_thresholds, puff_thresholds=args.puff_thresholds,
                           grid=dict(args.grid), workers=args.workers, window_frames=args.window,
                           overlap=args.overlap, edge_frames=args.edge_frames, device=args.device,
                           pixel_size_um=args.pixel_size, frame_interval_ms=args.frame_interval,
                           progress=lambda line: print(line, flush=True, file=shown),
                           probabilities_dir=args.probabilities, for_card=args.write_card)
    if args.json:  # written before the last lines: a closed pipe must not lose it
        from .io import write_json

        write_json(args.json, result.to_dict(), overwrite=args.overwrite)
    if args.write_card:
        path = write_card(args.model, result, overwrite=args.overwrite)
    print("\n" + result.format_best().rstrip(), file=shown)
    if args.json:
        print(f"rows written to {args.json}", file=shown)
    if args.write_card:
        print(f"card written: {path} (postprocess and calibration updated)", file=shown)
    return 0


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CasparksError(f"--threshold must be a probability in (0, 1) or otsu, got {text!r}") from None
    if not 0 < value < 1:
        raise CasparksError(f"--threshold must lie in (0, 1), got {value}")
    return value


def _add_models(sub) -> None:
    p = sub.add_parser(
        "models", help="list the bundled models, or write a config that fine-tunes one",
        description="List the models shipped with casparks. With --config, write the training "
        "configuration that fine-tunes MODEL on your own annotated movies (its network, "
        "pre-processing and loss; you set the data folders).",
    )
    p.add_argument("model", nargs="?", help="with --config: a bundled model, a .ckpt file or a run folder (default: the default model)")
    p.add_argument("--config", type=_output_path, metavar="FILE.yaml",
                   help="write the fine-tuning configuration of MODEL here (-: stdout)")
    p.add_argument("--overwrite", action="store_true", help="replace FILE.yaml if it exists")
    _common(p)
    p.set_defaults(handler=_run_models)


def _run_models(args) -> int:
    from .models import DEFAULT_MODEL, list_models

    if args.config is not None:
        from .io import is_stream
        from .training import write_finetune_config

        path = write_finetune_config(args.model or DEFAULT_MODEL, args.config, overwrite=args.overwrite)
        # `--config - > ft.yaml`: the YAML alone on stdout, and no `casparks train /dev/stdout` to copy
        where, then = ("standard output", "the file you kept it in") if is_stream(path) else (path, path)
        print(f"wrote {where}: set data.data_dir and data.val_dir (or data.val_ids), then: casparks train {then}",
              file=_beside_json(args.config))
        return 0
    if args.model is not None:
        raise CasparksError(f"casparks models {args.model}: a model name needs --config FILE.yaml",
                            fix="run casparks models to list the models, or add --config")
    for info in list_models():
        default = " (default)" if info.name == DEFAULT_MODEL else ""
        print(f"{info.name}{default}: {info.description}")
        accuracy = info.card.get("accuracy", {}).get("one_to_one_f1")
        if accuracy:
            print("    held-out one-to-one F1: " + ", ".join(f"{k} {v}" for k, v in accuracy.items()))
    return 0


# ----------------------------------------------------------------------------------------------
# plumbing


def _progress(description: str, total: int | None = None) -> Callable[[int, int], None] | None:
    """A progress callback (done, total) drawing a tqdm bar on an interactive terminal."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=description, unit="movie", leave=False)

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


class _Parser(argparse.ArgumentParser):
    """argparse with mistakes in one line, as every other user error: the command's name, what
    is wrong, a close option name where there is one, and where the options are listed (not a
    usage block, and not the top-level usage for a sub-command's option)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        hint = _closest_option(self, message)
        help_cmd = f"{self.prog} --help"
        print(f"{self.prog}: error: {message}{hint}; see `{help_cmd}`", file=sys.stderr)
        log.debug("%s stopped with an error (exit %d): %s", self.prog, EXIT_USER_ERROR, message)  # --log-file has it
        raise SystemExit(EXIT_USER_ERROR)


class _LookAhead(argparse.ArgumentParser):
    """A parser that says nothing of a mistake: the full parse names it."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise argparse.ArgumentError(None, message)


def _log_file_ahead(words: Sequence[str]) -> Path | None:
    """--log-file, read before the rest of the command line is: a mistake there (an unknown
    option) stops the parse before logging starts, and a job's log was left without it. None
    where it is absent or given wrongly (the full parse says so), and where the command line asks
    for help or the version: those write no log (the file would be made for nothing)."""
    if any(word in ("-h", "--help", "--version") for word in words):
        return None
    ahead = _LookAhead(add_help=False, allow_abbrev=False)  # --l is no --log-file (nor --list-presets)
    ahead.add_argument("--log-file", type=_path)
    try:
        return ahead.parse_known_args(words)[0].log_file
    except argparse.ArgumentError:
        return None


def _closest_option(parser: argparse.ArgumentParser, message: str) -> str:
    """" (did you mean --x?)" for an unrecognised option close to one of ``parser``'s."""
    import difflib

    if not message.startswith("unrecognized arguments:"):
        return ""
    known = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
    for word in message.split(":", 1)[1].split():
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=", 1)[0], known, n=1, cutoff=0.7)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="casparks",
        description="Find, classify and measure Ca²⁺ sparks, puffs and waves in confocal x-y-t movies.",
    )
    parser.add_argument("--version", action="version", version=f"casparks {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in (_add_simulate, _add_check, _add_prepare_labels, _add_evaluate, _add_train, _add_detect, _add_measure,
                _add_convert, _add_report, _add_models, _add_calibrate):
        add(sub)
    for command in sub.choices.values():  # so that its own parser reports what it did not recognise
        command.set_defaults(command_parser=command)
    return parser


def _check_log_file(path: Path) -> None:
    """The log is appended to ``path``: refuse a folder, and a file that is not a log already (a
    movie given by mistake would grow a tail of log lines)."""
    import re

    from .io import check_output_file

    check_output_file(path, overwrite=True, append=True)  # a folder, or a file where its folder belongs
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            start = handle.read(11)
        if not re.fullmatch(rb"\d{4}-\d\d-\d\d ", start):
            raise CasparksError("--log-file exists and is not a casparks log, which would be appended to it",
                                path=path, fix="give a new file name, e.g. casparks.log")


def _setup_logging(verbose: int, log_file: Path | None) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    root = logging.getLogger("casparks")
    for handler in root.handlers:  # set up twice by main: the first log file is closed, not left open
        handler.close()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if log_file else level)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(level)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root.addHandler(console)
    if log_file:
        _check_log_file(log_file)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root.addHandler(handler)


def os_error_advice(exc: OSError) -> str:
    """What to do about a system error, by its kind: the same line had told a movie that could
    not be read (an input/output error on a failing share) to "check the free space"."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some space where the results go, or write them elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "check the permissions of that file and its folder"
    if exc.errno == errno.EROFS:
        return "that file system is read-only: write the results elsewhere"
    if exc.errno == errno.EIO:
        return ("the disk or network share failed to read or write it: check that disk, or work from a local disk "
                "(copy the movies there, or write the results there)")
    if exc.errno is None:  # NumPy's short write ("Not enough free space to write ...") has no number
        return "check the free space and the permissions where the results go"
    return "check that path"


class _ReaderMayLeave:
    """stdout that goes on when its reader leaves (`casparks detect d | head -1`): the lines are
    dropped and the work, whose results are files, runs to its end. A closed pipe had stopped a
    detection after its first movie and lost calibrate's --json, without a word."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.left = False

    def write(self, text: str) -> int:
        if not self.left:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.left:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self) -> None:
        import os

        self.left = True
        try:  # the interpreter's own flush at exit would fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    import os

    from .hardware import request_huge_pages

    request_huge_pages(os.environ)  # before PyTorch allocates anything (casparks.hardware)
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    try:  # before the parse, so that its mistakes reach --log-file too
        _setup_logging(0, _log_file_ahead(words))
    except (CasparksError, OSError):  # a --log-file refused: said after the parse, as every command's error
        _setup_logging(0, None)
    if words and words[0].split("=")[0] == "--log-file":  # its value was read as the command ("invalid choice")
        parser.error("--log-file is an option of each command: give it after the command, as in "
                     "`casparks check DIR --log-file LOG`")
    args, unknown = parser.parse_known_args(words)
    if unknown:  # reported by the command's own parser: its name, its options, its help
        command_parser = getattr(args, "command_parser", parser)
        known = [u for u in unknown if u.split("=")[0] in getattr(command_parser, "_option_string_actions", {})]
        hint = (f" ({known[0]} is an option of {command_parser.prog}: give it after the command, as in "
                f"`{command_parser.prog} {known[0]} ...`)" if known and command_parser is not parser else "")
        command_parser.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USER_ERROR
    stdout = sys.stdout
    sys.stdout = _ReaderMayLeave(stdout)  # `| head -1` no longer stops a detection after its first movie
    try:
        _setup_logging(args.verbose, args.log_file)
        return args.handler(args)
    except CasparksError as exc:
        print(f"casparks {args.command}: error: {exc}", file=sys.stderr)
        log.debug("%s stopped with an error (exit %d): %s", args.command, EXIT_USER_ERROR, exc)  # --log-file has it
        return EXIT_USER_ERROR
    except BrokenPipeError:  # a reader that left a stream other than stdout: not a failure to report
        return 141  # 128 + SIGPIPE, as a shell reports a writer whose pipe closed
    except OSError as exc:  # a full disk, a read-only or forbidden folder: one line, not a traceback
        log.debug("%s failed", args.command, exc_info=True)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"casparks {args.command}: error: {where}{exc.strerror or exc}; {os_error_advice(exc)}",
              file=sys.stderr)
        return EXIT_SYSTEM_ERROR
    except KeyboardInterrupt as exc:  # 130 for Ctrl-C, 143 for a scheduler's SIGTERM (128 + the signal)
        print("interrupted", file=sys.stderr)
        log.debug("%s interrupted (exit %d)", args.command, interrupted_exit_code(exc))
        return interrupted_exit_code(exc)
    finally:
        if isinstance(sys.stdout, _ReaderMayLeave):
            if sys.stdout.left:
                log.debug("%s: the reader of its output left; the work went on to its end", args.command)
            sys.stdout = stdout
