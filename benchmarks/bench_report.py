"""Time and peak memory of `casparks report` for one full-size (500 × 64 × 512) movie.

    python benchmarks/bench_report.py [--repeats 3] [--frames 500 --height 64 --width 512]

The detection is the simulator's truth (default preset, seed 0) measured and written with
`write_detection`, so the numbers are those of the report alone. Each report runs in a fresh
process (peak RSS of that process, imports included); the stages are then timed in this process.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time
start = time.perf_counter()
from casparks.report import write_report
report = write_report(sys.argv[1], out=sys.argv[2], overwrite=True, video=sys.argv[3] == "1")
print(json.dumps({"seconds": time.perf_counter() - start,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes": {p.name: p.stat().st_size for p in report.files}}))
"""


def make_detection(folder: Path, frames: int, height: int, width: int) -> Path:
    from casparks.detection import Detection, write_detection
    from casparks.io import write_movie
    from casparks.measure import MeasureConfig, event_frequency, measure_events
    from casparks.simulate import load_simulation_config, simulate_movie

    sim = simulate_movie(load_simulation_config("default", {"n_frames": frames, "height_px": height,
                                                             "width_px": width}), seed=0)
    movie = sim.movie
    path = folder / "01_video.tif"
    write_movie(path, movie)
    px, dt = movie.pixel_size_um, movie.frame_interval_ms
    events = measure_events(movie.data, sim.class_label, sim.event_label, px, dt)
    detection = Detection(name="01_video", source=path, pixel_size_um=px, frame_interval_ms=dt,
                          class_label=sim.class_label, event_label=sim.event_label.astype(np.uint16), events=events,
                          frequency=event_frequency(events, movie.shape, px, dt), event_threshold=0.5, model="truth",
                          settings={"measure": MeasureConfig().to_dict()}, timings_s={})
    write_detection(detection, folder / "det")
    print(f"movie {movie.shape}, {len(events)} events {detection.counts}")
    return folder / "det"


def stages(det: Path, out: Path) -> dict[str, float]:
    """Seconds per stage of one movie's report, in this process."""
    from casparks import figures
    from casparks.detection import find_detections, read_detection
    from casparks.io import read_movie
    from casparks.overlay import write_overlay_mp4, write_overlay_tiff

    times: dict[str, float] = {}
    mark = time.perf_counter()
    detection = read_detection(find_detections(det)[0])
    movie = read_movie(detection.source)
    times["read detection and movie"] = time.perf_counter() - mark
    mark = time.perf_counter()
    dff = figures.detection_dff(movie, detection, lazy=True)
    times["F0 (LazyDff: ΔF/F0 computed where read)"] = time.perf_counter() - mark
    mark = time.perf_counter()
    projection, kymograph = figures.display_projections(dff, detection.pixel_size_um, detection.frame_interval_ms)
    times["smoothed projection and kymograph (blocks)"] = time.perf_counter() - mark
    px, dt, events = detection.pixel_size_um, detection.frame_interval_ms, detection.events
    makers = {
        "projection": lambda: figures.projection_figure(projection, detection.class_label, px, events),
        "kymograph": lambda: figures.kymograph_figure(kymograph, detection.class_label, px, dt, events),
        "traces": lambda: figures.trace_gallery_figure(dff, detection.event_label, events, px, dt),
        "distributions": lambda: figures.distributions_figure(events),
        "frequency": lambda: figures.frequency_figure(detection.frequency),
    }
    for name, make in makers.items():
        mark = time.perf_counter()
        figures.figure_png(make(), dpi=120)
        times[f"figure {name} (PNG, 120 dpi)"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_overlay_tiff(out / "o.tif", movie.data, detection.class_label, px, dt, overwrite=True)
    times["overlay RGB TIFF"] = time.perf_counter() - mark
    mark = time.perf_counter()
    write_overlay_mp4(out / "o.mp4", movie.data, detection.class_label, dt, overwrite=True)
    times["overlay MP4"] = time.perf_counter() - mark
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--make-detection", nargs=4, metavar=("FOLDER", "T", "Y", "X"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_detection:
        folder, *size = args.make_detection
        make_detection(Path(folder), *map(int, size))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # made in a child process: on Linux a child's ru_maxrss starts at its parent's resident size
        # when it forks, so a parent grown by simulating and measuring would inflate every report's peak
        made = subprocess.run([sys.executable, __file__, "--make-detection", str(folder), str(args.frames),
                               str(args.height), str(args.width)], capture_output=True, text=True, check=True)
        print(made.stdout.strip())
        det = folder / "det"
        print("| report | median s | runs (s) | peak RSS (MB) |\n|---|---|---|---|")
        sizes = {}
        for video in (True, False):
            runs = []
            for _ in range(args.repeats):
                result = subprocess.run([sys.executable, "-c", CHILD, str(det), str(folder / "out" / "report.html"),
                                         "1" if video else "0"], capture_output=True, text=True, check=True)
                runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
            seconds = [r["seconds"] for r in runs]
            label = "with overlay TIFF + MP4" if video else "--no-video"
            print(f"| {label} | {statistics.median(seconds):.2f} | {', '.join(f'{s:.2f}' for s in seconds)} "
                  f"| {max(r['peak_mb'] for r in runs):.0f} |")
            if video:
                sizes = runs[0]["bytes"]
        print("\n| file | size (MB) |\n|---|---|")
        for name, size in sizes.items():
            print(f"| {name} | {size / 1e6:.2f} |")
        print("\n| stage | s |\n|---|---|")
        for name, seconds in stages(det, folder).items():
            print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
