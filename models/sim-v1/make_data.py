"""Simulate the training, validation and test sets of a bundled model from its data recipe.

    python models/sim-v1/make_data.py --out data/sim-v1 [--recipe models/sim-v1/data.yaml]
                                      [--sets train val test] [--workers 16]

Writes ``OUT/<set>/NN_video.tif`` etc. (the original layout), one movie per task so that the
movies are simulated in parallel; each movie depends only on its entry's seed and its id. An
entry may override simulation parameters with ``set: {pixel_size_um: 0.3, ...}`` (any
parameter of ``casparks simulate --set``), e.g. to simulate other microscopes' sampling.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

from casparks.simulate import load_simulation_config, simulate_dataset

HERE = Path(__file__).resolve().parent


def tasks(recipe: dict, sets: list[str], out: Path) -> list[tuple[Path, str, int, int, dict]]:
    """(folder, preset, seed, movie id, overrides) for every movie; ids run on across the entries of a set."""
    found = []
    for name in sets:
        movie_id = 1
        for entry in recipe[name]:
            for _ in range(int(entry["movies"])):
                found.append((out / name, str(entry["preset"]), int(entry["seed"]), movie_id, dict(entry.get("set") or {})))
                movie_id += 1
    return found


def simulate_one(task: tuple[Path, str, int, int, dict]) -> Path:
    folder, preset, seed, movie_id, overrides = task
    config = load_simulation_config(preset, overrides)
    return simulate_dataset(folder, 1, seed=seed, config=config, first_id=movie_id, previews=False)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipe", type=Path, default=HERE / "data.yaml")
    parser.add_argument("--sets", nargs="+", default=["train", "val", "test"])
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    recipe = yaml.safe_load(args.recipe.read_text())
    todo = tasks(recipe, args.sets, args.out)
    for folder in sorted({task[0] for task in todo}):
        if any(folder.glob("*_video.tif")):  # one clear line instead of a worker's traceback
            raise SystemExit(f"make_data.py: {folder} holds movies already; delete it or choose another --out")
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        for done, path in enumerate(pool.map(simulate_one, todo), start=1):
            if done % 16 == 0 or done == len(todo):
                print(f"{done}/{len(todo)} movies ({time.perf_counter() - start:.0f} s): {path}", flush=True)


if __name__ == "__main__":
    main()
