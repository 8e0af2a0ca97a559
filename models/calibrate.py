"""Calibrate a model's post-processing thresholds on annotated validation movies (for its card).

    python models/calibrate.py --model runs/sim-v2 --val data/sim-v2/val [data/sim-v2/val-other ...]
                               [--event-thresholds 0.9 0.95 0.97 0.975 0.98 0.985]
                               [--puff-thresholds none 0.9 0.95] [--spark-thresholds none 0.9]
                               [--grid spark_min_diameter_um=0.6,1.2 puff_min_mean_probability=0,0.45 ...]
                               [--json OUT.json] [--workers N]

A thin wrapper kept for the scripts that call it: the work is ``casparks.calibrate``
(src/casparks/calibration.py), and ``casparks calibrate MODEL --val DIR ... [--write-card]`` is
the command (it also writes the best settings into a fine-tuned run's card). Prints one row per
combination (one-to-one F1 per class and their mean; reference F1 beside) and the best mean
one-to-one F1, as the card's ``postprocess:`` lines; ``--json`` replaces OUT.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from casparks.calibration import (DEFAULT_EVENT_THRESHOLDS, DEFAULT_PUFF_THRESHOLDS, DEFAULT_SPARK_THRESHOLDS,
                                      calibrate, parse_grid, parse_value)
    from casparks.errors import CasparksError
    from casparks.io import write_json

    def grid_option(text: str):
        try:
            return parse_grid(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a bundled model, a .ckpt file or a run folder")
    parser.add_argument("--val", type=Path, nargs="+", required=True,
                        help="folders of annotated movies (the original layout), scored together")
    parser.add_argument("--event-thresholds", type=float, nargs="+", default=list(DEFAULT_EVENT_THRESHOLDS))
    parser.add_argument("--puff-thresholds", type=parse_value, nargs="+", default=list(DEFAULT_PUFF_THRESHOLDS),
                        help="'none': the event threshold")
    parser.add_argument("--spark-thresholds", type=parse_value, nargs="+", default=list(DEFAULT_SPARK_THRESHOLDS),
                        help="'none': the event threshold")
    parser.add_argument("--edge-frames", type=int, default=None,
                        help="mirrored frames before and after each movie (default: the model's ignore_frames_loss)")
    parser.add_argument("--window", type=int, default=None, help="frames per inference window (default: the card's)")
    parser.add_argument("--overlap", type=float, default=None, help="window overlap (default: the card's)")
    parser.add_argument("--grid", type=grid_option, nargs="+", default=[], metavar="KEY=V1,V2",
                        help="also try these values of other post-processing options (e.g. spark_min_duration_ms=10,20)")
    parser.add_argument("--json", type=Path, help="write every row here")
    parser.add_argument("--workers", type=int, default=1,
                        help="combinations post-processed and scored at once, in forked processes (default 1)")
    args = parser.parse_args()
    try:
        result = calibrate(args.model, args.val, event_thresholds=args.event_thresholds,
                           spark_thresholds=args.spark_thresholds, puff_thresholds=args.puff_thresholds,
                           grid=dict(args.grid), workers=args.workers, window_frames=args.window,
                           overlap=args.overlap, edge_frames=args.edge_frames, progress=lambda line: print(line, flush=True))
    except CasparksError as exc:
        parser.error(str(exc))
    print("\n" + result.format_best())
    if args.json:
        write_json(args.json, result.to_dict(), overwrite=True)


if __name__ == "__main__":
    main()
