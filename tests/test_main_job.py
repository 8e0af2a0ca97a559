"""The README's main job, end to end on the full-size bundled example: simulate it, detect with
the bundled model from the command line, score, and check the numbers a physiologist would read
(counts, one-to-one scores, the dark level, spark amplitudes against the simulator's truth)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from casparks.cli import main
from casparks.io import read_stack
from casparks.simulate import load_simulation_config, simulate_movie


@pytest.mark.slow
def test_the_readme_main_job_on_the_bundled_example(tmp_path, capsys):
    example, results = tmp_path / "example", tmp_path / "results"
    assert main(["simulate", str(example), "--movies", "1", "--seed", "0"]) == 0
    assert main(["detect", str(example / "01_video.tif"), "--out", str(results), "--device", "cpu"]) == 0
    assert main(["evaluate", "--truth", str(example), "--pred", str(results), "--json", str(tmp_path / "scores.json")]) == 0
    capsys.readouterr()

    for suffix in ("_class_label.tif", "_event_label.tif", "_events.csv", "_detection.json"):
        assert (results / f"01_video{suffix}").is_file()
    scores = json.loads((tmp_path / "scores.json").read_text())["classes"]
    # sim-v3 on this movie (2026-12-05): sparks 11 of 16 found, none false; the wave; 6 of 14 puffs
    assert scores["spark"]["one_to_one"]["precision"] >= 0.9 and scores["spark"]["one_to_one"]["f1"] >= 0.7
    assert scores["wave"]["one_to_one"]["f1"] == 1.0
    assert scores["puff"]["one_to_one"]["precision"] >= 0.8

    # the dark level read from the movie's noise is the simulator's (184.9 ADU; read 184.8 ± 0.1)
    summary = json.loads((results / "01_video_detection.json").read_text())
    true_offset = simulate_movie(load_simulation_config("default"), seed=[0, 1]).offset_adu
    assert summary["dark_level"]["adu"] == pytest.approx(true_offset, abs=2.0)

    # spark amplitudes against the simulator's noise-free truth (the peak's noise bias: +10-20 %)
    truth_ids = np.asarray(read_stack(example / "01_event_label.tif"))
    found_ids = np.asarray(read_stack(results / "01_video_event_label.tif"))
    truth = pd.read_csv(example / "01_events.csv").set_index("event_id")
    found = pd.read_csv(results / "01_video_events.csv").set_index("id")
    errors = []
    for eid, row in found[found["class"] == "spark"].iterrows():
        inside = found_ids == eid
        ids, overlap = np.unique(truth_ids[inside], return_counts=True)
        keep = ids > 0
        if not keep.any():
            continue
        best = ids[keep][np.argmax(overlap[keep])]
        iomin = overlap[keep].max() / min(inside.sum(), (truth_ids == best).sum())
        if iomin >= 0.5 and truth.loc[best, "class"] == "spark":
            errors.append(row["amplitude_dff"] / truth.loc[best, "amplitude_dff0"] - 1.0)
    assert len(errors) >= 8
    assert -0.1 < np.median(errors) < 0.35
