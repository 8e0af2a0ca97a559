"""Training data: splits, cached labels, chunks, augmentation, determinism, DataLoader workers."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch

import casparks.data as data_module
from casparks.classes import IGNORE, PUFF, SPARK, WAVE
from casparks.config import DataConfig
from casparks.data import (
    ChunkDataset,
    TrainingMovie,
    chunk_starts,
    label_config,
    load_movies,
    split_samples,
)
from casparks.dataset import list_samples
from casparks.errors import CasparksError
from casparks.io import write_class_label, write_event_label, write_stack
from casparks.preprocess import preprocess_frames

PX, DT = 0.2, 6.8
T, Y, X = 40, 16, 32

#: every augmentation off, small chunks, no ignore frames, no ignore shell
PLAIN = DataConfig(
    data_duration=16, data_step=8, ignore_frames_loss=0, flip_x=False, flip_y=False,
    intensity_scale=(1.0, 1.0), intensity_offset=0.0, noise_data_augmentation=False,
    time_rescale=(1.0, 1.0), ignore_width_um=0.0, ignore_width_ms=0.0, norm_video="movie",
)


def write_sample(folder, sample_id, n_frames=T, video=None, classes=None, events=None, units=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(sample_id)) % 2**32)
    if video is None:
        video = (rng.poisson(200.0, (n_frames, Y, X)) + 100).astype(np.uint16)
    if classes is None:
        classes = np.zeros(video.shape, np.uint8)
    px, dt = (PX, DT) if units else (None, None)
    write_stack(folder / f"{sample_id}_video.tif", video, px, dt)
    write_class_label(folder / f"{sample_id}_class_label.tif", classes, px, dt)
    if events is not None:
        write_event_label(folder / f"{sample_id}_event_label.tif", events, px, dt)
    return folder


def movies_of(folder, config=PLAIN, cache_dir=None):
    return load_movies(list_samples(folder, require=("video", "class_label")), config, cache_dir)


def spark_movie():
    """A movie with one bright spark and its (generous) raw annotation."""
    t, y, x = np.ogrid[:T, :Y, :X]
    blob = 800 * np.exp(-((t - 20) ** 2) / 8 - ((y - 8) ** 2 + (x - 16) ** 2) / 4)
    video = (200 + blob).astype(np.uint16)
    classes = np.zeros(video.shape, np.uint8)
    classes[14:27, 4:13, 11:22] = SPARK
    return video, classes, (classes > 0).astype(np.uint16)


# ----------------------------------------------------------------------------------------------
# splits


def config_for(**kw):
    return replace(PLAIN, **{k: tuple(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in kw.items()})


def test_split_by_val_ids_and_val_dir(tmp_path):
    for i in ("01", "02", "03"):
        write_sample(tmp_path / "a", i)
    write_sample(tmp_path / "v", "09")
    write_sample(tmp_path / "t", "07")
    train, val, test = split_samples(config_for(data_dir=[tmp_path / "a"], val_ids=["02"], test_dir=[tmp_path / "t"]))
    assert [s.id for s in train] == ["01", "03"] and [s.id for s in val] == ["02"] and [s.id for s in test] == ["07"]
    train, val, _ = split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v"]))
    assert [s.id for s in train] == ["01", "02", "03"] and [s.id for s in val] == ["09"]
    train, val, _ = split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v"], dataset_size="minimal"))
    assert len(train) == 2 and len(val) == 1


def test_val_id_written_as_a_number_matches_its_zero_padded_id(tmp_path):
    from casparks.config import TrainConfig, apply_overrides

    for i in ("01", "02", "03"):
        write_sample(tmp_path / "a", i)
    data = apply_overrides(TrainConfig(), [("data_dir", str(tmp_path / "a")), ("val_ids", "[02]")]).data
    assert data.val_ids == ("02",)  # as typed (YAML 1.1 made it the number 2; 010 octal 8)
    train, val, _ = split_samples(data)
    assert [s.id for s in val] == ["02"] and [s.id for s in train] == ["01", "03"]
    data = apply_overrides(TrainConfig(), [("data_dir", str(tmp_path / "a")), ("val_ids", "[2]")]).data
    assert data.val_ids == ("2",)  # a plain number still finds its zero-padded id
    assert [s.id for s in split_samples(data)[1]] == ["02"]


def test_split_errors(tmp_path):
    for i in ("01", "02"):
        write_sample(tmp_path / "a", i)
    write_sample(tmp_path / "v", "09")
    (tmp_path / "empty").mkdir()
    a, v = tmp_path / "a", tmp_path / "v"
    cases = {
        "data.data_dir is empty": config_for(val_ids=["01"]),
        "holds no movies": config_for(data_dir=[tmp_path / "empty"], val_ids=["01"]),
        # the folders it was looked for in are named (they were not)
        r"validation id 05 \(data.val_ids\) is in none of the data.data_dir folders \(.*/a\)":
            config_for(data_dir=[a], val_ids=["05"]),
        "no training movie left": config_for(data_dir=[a], val_ids=["01", "02"]),
        "no validation movie": config_for(data_dir=[a]),
        "both the validation and the test set": config_for(data_dir=[a], val_dir=[v], test_dir=[v]),
        "both in data.data_dir and data.test_dir": config_for(data_dir=[a], val_ids=["01"], test_dir=[a]),
        "listed twice": config_for(data_dir=[a, a], val_ids=["01"]),
    }
    for message, config in cases.items():
        with pytest.raises(CasparksError, match=message) as info:
            split_samples(config)
        assert "\n" not in str(info.value)


def test_duplicated_ids_across_folders_become_unique(tmp_path):
    write_sample(tmp_path / "a", "01")
    write_sample(tmp_path / "a", "02")
    other = (np.random.default_rng(7).poisson(200.0, (T, Y, X)) + 100).astype(np.uint16)
    write_sample(tmp_path / "b", "01", video=other)  # another movie under the same id (not a copy)
    config = config_for(data_dir=[tmp_path / "a", tmp_path / "b"], val_ids=["02"])
    train, val, _ = split_samples(config)
    assert sorted(s.id for s in train) == ["a/01", "b/01"] and [s.id for s in val] == ["02"]
    with pytest.raises(CasparksError, match="several data folders"):
        split_samples(replace(config, val_ids=("01",)))
    train, val, _ = split_samples(replace(config, val_ids=("b/01",)))
    assert [s.id for s in val] == ["b/01"]
    write_sample(tmp_path / "c" / "a", "01")
    with pytest.raises(CasparksError, match="two folders of the same name"):
        split_samples(config_for(data_dir=[tmp_path / "a", tmp_path / "b", tmp_path / "c" / "a"], val_ids=["02"]))
    # ids stay usable as cache file names
    movies = load_movies(train, config, tmp_path / "cache")
    assert len({m.labels_path for m in movies}) == 2


# ----------------------------------------------------------------------------------------------
# movies and labels


def test_units_from_metadata_or_config(tmp_path):
    write_sample(tmp_path / "a", "01", units=False)
    sample = list_samples(tmp_path / "a")[0]
    with pytest.raises(CasparksError, match="data.pixel_size_um") as info:
        TrainingMovie(sample, PLAIN)
    assert "01_video.tif" in str(info.value)
    movie = TrainingMovie(sample, replace(PLAIN, pixel_size_um=0.3, frame_interval_ms=5.0))
    assert (movie.pixel_size_um, movie.frame_interval_ms) == (0.3, 5.0)


def test_config_units_fill_in_and_a_movies_own_units_win_with_a_warning(tmp_path, caplog):
    write_sample(tmp_path / "a", "01")
    sample = list_samples(tmp_path / "a")[0]
    own = TrainingMovie(sample, PLAIN)
    with caplog.at_level("WARNING", logger="casparks"):
        movie = TrainingMovie(sample, replace(PLAIN, pixel_size_um=own.pixel_size_um * 2,
                                              frame_interval_ms=own.frame_interval_ms))
    # the config fills in for movies without units: a movie's own win, and the difference is named
    assert (movie.pixel_size_um, movie.frame_interval_ms) == (own.pixel_size_um, own.frame_interval_ms)
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    message = record.getMessage()
    assert "01_video.tif" in message and "data.pixel_size_um" in message
    assert f"{own.pixel_size_um * 2:g} µm" in message and f"{own.pixel_size_um:g} µm" in message


def test_label_shape_mismatch_names_both_files(tmp_path):
    write_sample(tmp_path / "a", "01", classes=np.zeros((T - 1, Y, X), np.uint8))
    with pytest.raises(CasparksError) as info:
        movies_of(tmp_path / "a")
    assert "01_class_label.tif" in str(info.value) and "01_video.tif" in str(info.value)


def test_an_rgb_class_label_export_is_named_as_labels_not_a_movie(tmp_path):
    """Training advised a movie's --channel (train has none) for an RGB export of the class labels."""
    write_sample(tmp_path / "a", "01")
    rgb = np.zeros((T, Y, X, 3), np.uint8)
    tifffile.imwrite(tmp_path / "a" / "01_class_label.tif", rgb, photometric="rgb")
    with pytest.raises(CasparksError, match="labels are one value per voxel") as info:
        movies_of(tmp_path / "a")
    assert "--channel" not in str(info.value)


def test_labels_prepared_with_peaks_differ_from_raw(tmp_path):
    video, classes, events = spark_movie()
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    raw = movies_of(tmp_path / "a", replace(PLAIN, sparks_type="raw"))[0].labels
    peaks = movies_of(tmp_path / "a", replace(PLAIN, sparks_type="peaks"))[0].labels
    np.testing.assert_array_equal(raw, classes)
    assert peaks[20, 8, 16] == SPARK  # a ball at the maximum
    assert peaks[14, 4, 11] == IGNORE  # the rest of the raw spark
    assert np.count_nonzero(peaks == SPARK) < np.count_nonzero(raw == SPARK)
    assert label_config(replace(PLAIN, only_sparks=True)).only_sparks


def test_peak_labels_prepare_labels_wrote_are_not_prepared_as_peaks_again(tmp_path, caplog):
    """Training prepares labels itself: on a folder ``prepare-labels --sparks-type peaks`` wrote,
    ``sparks_type: peaks`` moved and shrank the balls again (1 225 voxels of one movie)."""
    from casparks.labels import PREPARED_RECORD, prepare_dataset_labels, prepared_sparks_type

    video, classes, events = spark_movie()
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    prepare_dataset_labels(tmp_path / "a", tmp_path / "p", label_config(replace(PLAIN, sparks_type="peaks")))
    assert prepared_sparks_type(tmp_path / "p" / "01_class_label.tif") == "peaks"
    assert prepared_sparks_type(tmp_path / "a" / "01_class_label.tif") is None
    written = np.asarray(tifffile.imread(tmp_path / "p" / "01_class_label.tif"))
    with caplog.at_level("WARNING", logger="casparks"):
        again = movies_of(tmp_path / "p", replace(PLAIN, sparks_type="peaks"))[0]
    np.testing.assert_array_equal(again.labels, written)
    assert again.label_config.sparks_type == "raw"
    assert any(PREPARED_RECORD in r.getMessage() and "not prepared as peaks again" in r.getMessage()
               for r in caplog.records)
    # an interrupted preparation leaves its record with the samples it wrote
    write_sample(tmp_path / "a", "02", video=video, classes=classes, events=events)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset_labels(tmp_path / "a", tmp_path / "cut", label_config(replace(PLAIN, sparks_type="peaks")),
                               progress=interrupt)
    assert prepared_sparks_type(tmp_path / "cut" / "01_class_label.tif") == "peaks"
    # a sample saved into the folder afterwards (napari's save widget) is not vouched for
    write_sample(tmp_path / "cut", "02", video=video, classes=classes, events=events)
    assert prepared_sparks_type(tmp_path / "cut" / "02_class_label.tif") is None
    # nor one replaced by a run that stopped before writing its own record line
    prepare_dataset_labels(tmp_path / "a", tmp_path / "r2", label_config(PLAIN))
    write_class_label(tmp_path / "r2" / "01_class_label.tif", classes, PX, DT, overwrite=True)
    assert prepared_sparks_type(tmp_path / "r2" / "01_class_label.tif") is None
    # labels prepared raw are prepared as the config asks
    prepare_dataset_labels(tmp_path / "a", tmp_path / "r", label_config(PLAIN))
    assert prepared_sparks_type(tmp_path / "r" / "01_class_label.tif") == "raw"
    assert movies_of(tmp_path / "r", replace(PLAIN, sparks_type="peaks"))[0].label_config.sparks_type == "peaks"


def test_cache_is_reused_and_keyed_by_settings(tmp_path, monkeypatch):
    video, classes, events = spark_movie()
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    calls = {"labels": 0, "stats": 0}
    prepare, stats = data_module.prepare_labels, data_module.movie_stats

    def counting_prepare(*args, **kw):
        calls["labels"] += 1
        return prepare(*args, **kw)

    def counting_stats(*args, **kw):
        calls["stats"] += 1
        return stats(*args, **kw)

    monkeypatch.setattr(data_module, "prepare_labels", counting_prepare)
    monkeypatch.setattr(data_module, "movie_stats", counting_stats)
    cache = tmp_path / "run" / "labels_cache"
    config = replace(PLAIN, sparks_type="peaks")
    first = movies_of(tmp_path / "a", config, cache)[0]
    mtime = first.labels_path.stat().st_mtime_ns
    second = movies_of(tmp_path / "a", config, cache)[0]
    assert calls == {"labels": 1, "stats": 1}
    assert second.labels_path == first.labels_path and second.labels_path.stat().st_mtime_ns == mtime
    assert isinstance(second.labels, np.memmap)
    np.testing.assert_array_equal(second.labels, first.labels)
    np.testing.assert_array_equal(second.stats.mean_frame, first.stats.mean_frame)
    other = movies_of(tmp_path / "a", replace(config, ignore_width_um=0.4), cache)[0]
    assert calls["labels"] == 2 and other.labels_path != first.labels_path


def test_a_damaged_statistics_cache_is_recomputed_and_only_the_cache_is_blamed(tmp_path, monkeypatch, caplog):
    write_sample(tmp_path / "a", "01")
    cache = tmp_path / "cache"
    first = movies_of(tmp_path / "a", PLAIN, cache)[0]
    saved = next(cache.glob("01_stats_*.npz"))
    saved.write_bytes(b"cut short")
    again = movies_of(tmp_path / "a", PLAIN, cache)[0]
    np.testing.assert_array_equal(again.stats.mean_frame, first.stats.mean_frame)
    assert "unreadable statistics cache" in caplog.text
    caplog.clear()

    def fails(stats):  # reading the movie's own type failed, with a sound cache
        raise CasparksError("01_video.tif: cannot be read")

    monkeypatch.setattr(TrainingMovie, "_source_scale", lambda self, stats: fails(stats))
    with pytest.raises(CasparksError, match="cannot be read"):
        movies_of(tmp_path / "a", PLAIN, cache)
    assert "statistics cache" not in caplog.text  # it had blamed the cache before the real error


def test_movies_pickle_without_their_data(tmp_path):
    write_sample(tmp_path / "a", "01")
    movie = movies_of(tmp_path / "a", PLAIN, tmp_path / "cache")[0]
    _ = movie.data, movie.labels
    blob = pickle.dumps(movie)
    assert len(blob) < T * Y * X  # neither the movie nor the labels travel
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.data, movie.data)


# ----------------------------------------------------------------------------------------------
# chunks


def test_chunk_starts():
    assert chunk_starts(40, 16, 8) == [0, 8, 16, 24]
    assert chunk_starts(45, 16, 8) == [0, 8, 16, 24, 29]  # last one aligned to the end
    assert chunk_starts(16, 16, 8) == [0]
    assert chunk_starts(10, 16, 8) == [0]
    # with an edge of mirrored frames before and after the movie (as detection pads it)
    assert chunk_starts(40, 16, 8, edge=2) == [-2, 6, 14, 22, 26]
    assert chunk_starts(10, 16, 8, edge=2) == [-2]
    with pytest.raises(ValueError):
        chunk_starts(40, 16, 8, edge=-1)


def test_chunks_of_movies_of_any_length(tmp_path):
    write_sample(tmp_path / "a", "01", n_frames=40)
    write_sample(tmp_path / "a", "02", n_frames=45)
    write_sample(tmp_path / "a", "03", n_frames=10)
    ds = ChunkDataset(movies_of(tmp_path / "a"), PLAIN, train=False)
    items = [ds[i] for i in range(len(ds))]
    assert [(it["movie"], it["start"]) for it in items] == [
        ("01", 0), ("01", 8), ("01", 16), ("01", 24), ("02", 0), ("02", 8), ("02", 16), ("02", 24), ("02", 29), ("03", 0),
    ]
    for it in items:
        assert it["image"].shape == (1, 16, Y, X) and it["image"].dtype == torch.float32
        assert it["label"].shape == (16, Y, X) and it["label"].dtype == torch.uint8
    short = items[-1]["label"]
    assert (short[10:] == IGNORE).all() and (short[:10] == 0).all()  # padding is ignore
    assert torch.isfinite(items[-1]["image"]).all()


def test_chunks_longer_than_every_training_movie_are_warned_about(tmp_path, caplog):
    """data_duration 512 on 120-frame movies trained in silence at 4× the time and 2.6× the memory
    per step: every chunk was mostly ignored padding."""
    write_sample(tmp_path / "a", "01", n_frames=10)
    write_sample(tmp_path / "a", "02", n_frames=12)
    movies = movies_of(tmp_path / "a")
    caplog.clear()  # what loading the movies said (at INFO, where an earlier test left the logger there)
    with caplog.at_level("WARNING", logger="casparks"):
        ChunkDataset(movies, PLAIN, train=False)  # validation chunks: whole movies, nothing to say
        assert not caplog.text
        ChunkDataset(movies, PLAIN, train=True)
    assert "data.data_duration (16 frames) is longer than every training movie (the longest spans 12" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        ChunkDataset(movies, replace(PLAIN, data_duration=12), train=True)
    assert not caplog.text


def test_ignore_frames_at_chunk_ends(tmp_path):
    classes = np.full((T, Y, X), WAVE, np.uint8)
    write_sample(tmp_path / "a", "01", classes=classes)
    config = replace(PLAIN, ignore_frames_loss=3)
    item = ChunkDataset(movies_of(tmp_path / "a", config), config, train=False)[1]
    label = item["label"]
    assert (label[:3] == IGNORE).all() and (label[-3:] == IGNORE).all() and (label[3:-3] == WAVE).all()


def test_the_loss_sees_the_movies_first_and_last_frames_through_mirrored_margins(tmp_path):
    # without a margin the first/last ignore_frames_loss frames of a movie are never in the loss;
    # with it they are, after as many mirrored frames (labelled ignore), as detection runs them
    classes = np.full((T, Y, X), WAVE, np.uint8)
    write_sample(tmp_path / "a", "01", classes=classes)
    config = replace(PLAIN, ignore_frames_loss=3)
    ds = ChunkDataset(movies_of(tmp_path / "a", config), config, train=False)
    starts = [ds[i]["start"] for i in range(len(ds))]
    assert starts[0] == -3 and starts[-1] + 16 == T + 3
    first, last = ds[0], ds[len(ds) - 1]
    assert (first["label"][:3] == IGNORE).all() and (first["label"][3:-3] == WAVE).all()
    assert (last["label"][-3:] == IGNORE).all() and (last["label"][3:-3] == WAVE).all()
    whole = ds.movies[0]
    expected = preprocess_frames(whole.data, -3, 13, whole.stats, PX, DT, ds.preprocessing)
    np.testing.assert_array_equal(first["image"][0].numpy(), expected)
    np.testing.assert_array_equal(expected[:3], expected[3:6][::-1])  # frames -3..-1 are frames 2, 1, 0
    covered = np.zeros(T, bool)
    for i in range(len(ds)):
        item = ds[i]
        inside = np.flatnonzero((item["label"] != IGNORE).numpy().any(axis=(1, 2))) + item["start"]
        covered[inside] = True
    assert covered.all()  # every frame of the movie is in some chunk's loss


def test_class_counts(tmp_path):
    video, classes, events = spark_movie()
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    write_sample(tmp_path / "a", "02")
    movies = movies_of(tmp_path / "a", PLAIN, tmp_path / "cache")
    counts = ChunkDataset(movies, PLAIN, train=True).class_counts()
    expected = np.bincount(np.concatenate([np.asarray(m.labels).ravel() for m in movies]), minlength=5)[:4]
    np.testing.assert_array_equal(counts, expected)
    assert counts.dtype == np.int64 and counts[SPARK] == np.count_nonzero(classes)


def test_items_follow_the_preprocessing(tmp_path):
    write_sample(tmp_path / "a", "01")
    movie = movies_of(tmp_path / "a")[0]
    from casparks.preprocess import Preprocessing, preprocess_frames

    config = replace(PLAIN, norm_video="zscore", remove_background="average")
    item = ChunkDataset([movie], config, train=False)[2]
    want = preprocess_frames(movie.data, 16, 32, movie.stats, PX, DT, Preprocessing.from_data_config(config))
    np.testing.assert_allclose(item["image"][0].numpy(), want)


# ----------------------------------------------------------------------------------------------
# augmentation


def ramp_folder(tmp_path):
    """A rising ramp in time plus a spatial gradient; one labelled voxel."""
    t, y, x = np.ogrid[:T, :Y, :X]
    video = (1000 + 20 * t + 3 * y + x + 0 * t).astype(np.uint16)
    classes = np.zeros(video.shape, np.uint8)
    classes[:, 2, 3] = SPARK
    return write_sample(tmp_path / "a", "01", video=video, classes=classes)


def items(ds, n=8):
    return [ds[i] for i in range(n)]


def same(a, b):
    return torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_all_augmentations_off_change_nothing(tmp_path):
    movies = movies_of(ramp_folder(tmp_path))
    train, val = ChunkDataset(movies, PLAIN, train=True), ChunkDataset(movies, PLAIN, train=False)
    assert all(same(a, b) for a, b in zip(items(train), items(val)))


@pytest.mark.parametrize(
    "option",
    [dict(flip_x=True), dict(flip_y=True), dict(intensity_scale=(0.5, 2.0)), dict(intensity_offset=0.2),
     dict(noise_data_augmentation=True), dict(time_rescale=(0.7, 1.4)), dict(crop_size_um=(8 * PX, 16 * PX))],
)
def test_each_augmentation_changes_the_data_in_training_only(tmp_path, option):
    movies = movies_of(ramp_folder(tmp_path))
    config = replace(PLAIN, **option)
    plain = items(ChunkDataset(movies, PLAIN, train=False), 4)
    augmented = items(ChunkDataset(movies, config, train=True), 4)
    assert not all(same(a, b) for a, b in zip(plain, augmented))
    validation = items(ChunkDataset(movies, config, train=False), 4)
    assert all(same(a, b) for a, b in zip(plain, validation))


def test_flips_move_image_and_label_together(tmp_path):
    movies = movies_of(ramp_folder(tmp_path))
    ds = ChunkDataset(movies, replace(PLAIN, flip_x=True, flip_y=True), train=True)
    seen = set()
    for i in range(16):
        params, label = ds.draw(i), ds[i]["label"]
        y = Y - 1 - 2 if params["flip_y"] else 2
        x = X - 1 - 3 if params["flip_x"] else 3
        assert (label[:, y, x] == SPARK).all() and int((label == SPARK).sum()) == 16
        image = ds[i]["image"][0]
        # the spatial gradient (3 per row, 1 per column) follows the flips
        assert (float(image[0, -1, 0] - image[0, 0, 0]) > 0) != params["flip_y"]
        assert (float(image[0, 0, -1] - image[0, 0, 0]) > 0) != params["flip_x"]
        seen.add((params["flip_y"], params["flip_x"]))
    assert len(seen) == 4


def test_crops_cut_image_and_label_together_anywhere_in_the_frame(tmp_path):
    movies = movies_of(ramp_folder(tmp_path))
    ds = ChunkDataset(movies, replace(PLAIN, crop_size_um=(8 * PX, 16 * PX)), train=True)  # 8 × 16 px
    whole = ChunkDataset(movies, PLAIN, train=False)
    firsts = set()
    for i in range(40):
        item, params = ds[i], ds.draw(i)
        y0, x0 = int(params["crop_y"] * (Y - 8 + 1)), int(params["crop_x"] * (X - 16 + 1))
        assert item["image"].shape == (1, 16, 8, 16) and item["label"].shape == (16, 8, 16)
        reference = whole[i % len(whole)]
        assert torch.equal(item["image"], reference["image"][:, :, y0 : y0 + 8, x0 : x0 + 16])
        assert torch.equal(item["label"], reference["label"][:, y0 : y0 + 8, x0 : x0 + 16])
        firsts.add((y0, x0))
    ys, xs = {y for y, _ in firsts}, {x for _, x in firsts}
    assert min(ys) <= 1 and max(ys) >= Y - 8 - 1 and min(xs) <= 2 and max(xs) >= X - 16 - 2  # the whole frame
    # validation sees whole frames; a crop larger than the frame keeps it whole
    assert ChunkDataset(movies, replace(PLAIN, crop_size_um=(8 * PX, 16 * PX)), train=False)[0]["label"].shape == (16, Y, X)
    big = ChunkDataset(movies, replace(PLAIN, crop_size_um=(100.0, 8 * PX)), train=True)[0]
    assert big["label"].shape == (16, Y, 8)


def test_a_crop_changes_nothing_else_of_a_chunk(tmp_path):
    """The crop's position is drawn after every other parameter, so adding a crop to a recipe
    leaves its noise, intensity and flips as they were: each cropped chunk is a window of the
    uncropped one (mirrored where the chunk was flipped)."""
    movies = movies_of(ramp_folder(tmp_path))
    config = replace(PLAIN, flip_x=True, flip_y=True, intensity_scale=(0.8, 1.25), noise_data_augmentation=True)
    plain = ChunkDataset(movies, config, train=True)
    cropped = ChunkDataset(movies, replace(config, crop_size_um=(8 * PX, 16 * PX)), train=True)
    for i in range(8):
        params = cropped.draw(i)
        y0, x0 = int(params["crop_y"] * (Y - 8 + 1)), int(params["crop_x"] * (X - 16 + 1))
        if params["flip_y"]:
            y0 = Y - 8 - y0
        if params["flip_x"]:
            x0 = X - 16 - x0
        a, b = plain[i], cropped[i]
        assert torch.allclose(b["image"], a["image"][:, :, y0 : y0 + 8, x0 : x0 + 16], atol=1e-6)
        assert torch.equal(b["label"], a["label"][:, y0 : y0 + 8, x0 : x0 + 16])


def puff_folder(tmp_path):
    """One movie whose only event is a small puff in the bottom-right corner (frames 10-14)."""
    video = (np.random.default_rng(3).poisson(200.0, (T, Y, X)) + 100).astype(np.uint16)
    classes = np.zeros(video.shape, np.uint8)
    classes[10:15, Y - 3 :, X - 3 :] = PUFF
    return write_sample(tmp_path / "puff", "01", video=video, classes=classes)


def test_class_centred_crops_bring_a_rare_class_into_every_crop(tmp_path):
    """crop_class_ratios: a crop centred on a drawn class's voxel holds it, where uniform crops
    mostly miss a small corner event. The crop is a window of the whole chunk, the same for the
    same item; the chunks without a puff (frames 16-39) are still cropped (uniform position)."""
    movies = movies_of(puff_folder(tmp_path))
    crop = replace(PLAIN, crop_size_um=(8 * PX, 8 * PX))
    centred = ChunkDataset(movies, replace(crop, crop_class_ratios=(0.0, 0.0, 0.0, 1.0)), train=True)
    uniform = ChunkDataset(movies, crop, train=True)
    whole = ChunkDataset(movies, PLAIN, train=False)
    with_puff = [i for i in range(len(whole)) if (whole[i]["label"] == PUFF).any()]
    assert with_puff and len(with_puff) < len(whole)
    hits_centred = hits_uniform = 0
    for i in range(40):
        item = centred[i]
        assert item["label"].shape == (16, 8, 8)
        reference = whole[i % len(whole)]
        # a window of the whole chunk, image and label together
        found = [(y0, x0) for y0 in range(Y - 7) for x0 in range(X - 7)
                 if torch.equal(item["label"], reference["label"][:, y0 : y0 + 8, x0 : x0 + 8])
                 and torch.equal(item["image"], reference["image"][:, :, y0 : y0 + 8, x0 : x0 + 8])]
        assert found
        assert torch.equal(centred[i]["image"], item["image"])  # the same item, the same crop
        if i % len(whole) in with_puff:
            hits_centred += bool((item["label"] == PUFF).any())
            hits_uniform += bool((uniform[i]["label"] == PUFF).any())
    n = sum(i % len(whole) in with_puff for i in range(40))
    assert hits_centred == n
    assert hits_uniform <= n // 2


def test_class_centred_crops_weigh_the_classes_and_skip_absent_ones():
    label = np.zeros((20, 64, 512), np.uint8)
    label[8:12, 30:34, 400:404] = PUFF
    label[8:12, 10:12, 20:22] = SPARK
    label[0:3, 5, 300] = WAVE  # only in the edge frames the loss ignores: absent
    firsts = [data_module.class_centred_crop(label, [64, 128], [0, 1, 1, 1], seed, edge=6) for seed in range(200)]
    near_puff = sum(f[1] <= 400 < f[1] + 128 for f in firsts)
    near_spark = sum(f[1] <= 20 < f[1] + 128 for f in firsts)
    assert near_puff + near_spark == 200 and 70 < near_puff < 130  # 1:1, the wave never drawn
    assert all(f[0] == 0 and 0 <= f[1] <= 512 - 128 for f in firsts)  # centres near a border move inwards
    assert data_module.class_centred_crop(label, [64, 128], [0, 0, 1, 0], 0, edge=6) is None


def test_never_time_reversal(tmp_path):
    movies = movies_of(ramp_folder(tmp_path))
    config = replace(PLAIN, flip_x=True, flip_y=True, intensity_scale=(0.8, 1.25), intensity_offset=0.1,
                     time_rescale=(0.8, 1.25))
    ds = ChunkDataset(movies, config, train=True)
    for i in range(20):
        profile = ds[i]["image"][0].mean(dim=(1, 2))
        assert (torch.diff(profile) > 0).all(), i


def test_time_rescale_keeps_the_length_and_the_codes(tmp_path):
    classes = np.zeros((T, Y, X), np.uint8)
    classes[10:20] = WAVE
    write_sample(tmp_path / "a", "01", classes=classes)
    movies = movies_of(tmp_path / "a")
    ds = ChunkDataset(movies, replace(PLAIN, time_rescale=(0.5, 0.5)), train=True)  # slow motion ×2
    item = ds[1]  # start 8: source frames 8 .. 15.5
    assert item["image"].shape == (1, 16, Y, X)
    wave_frames = (item["label"] == WAVE).all(dim=(1, 2)).nonzero().ravel().tolist()
    assert wave_frames == list(range(3, 16))  # source times 9.5 (nearest 10) .. 15.5 → output 3..15
    fast = ChunkDataset(movies, replace(PLAIN, time_rescale=(2.0, 2.0)), train=True)[3]
    assert fast["start"] == 8  # frames 24..55 would leave the movie: moved back to end with it
    wave_frames = (fast["label"] == WAVE).all(dim=(1, 2)).nonzero().ravel().tolist()
    assert wave_frames == [1, 2, 3, 4, 5]  # source frames 10, 12, .., 18
    assert IGNORE not in fast["label"]


def test_time_rescale_pads_short_movies_with_ignore(tmp_path):
    write_sample(tmp_path / "a", "01", n_frames=10)
    ds = ChunkDataset(movies_of(tmp_path / "a"), replace(PLAIN, time_rescale=(2.0, 2.0)), train=True)
    label = ds[0]["label"]
    assert (label[5:] == IGNORE).all() and (label[:5] == 0).all()  # source frames 0, 2, .., 8 exist


def test_noise_follows_the_shot_noise_model(tmp_path):
    video = np.full((T, Y, X), 200, np.uint16)
    video[:, :, X // 2 :] = 3000
    write_sample(tmp_path / "a", "01", video=video)
    movies = movies_of(tmp_path / "a")
    config = replace(PLAIN, noise_data_augmentation=True, norm_video="none")
    ds = ChunkDataset(movies, config, train=True)
    item = ds[0]["image"][0]
    level = ds.draw(0)["noise_level"]
    gain, offset = movies[0].stats.noise_gain, movies[0].stats.noise_offset
    dark, bright = item[..., : X // 2], item[..., X // 2 :]
    assert float(dark.std()) < float(bright.std())
    expected = np.sqrt(level * gain * (3000 - offset))
    assert float(bright.std()) == pytest.approx(expected, rel=0.1)
    assert float(bright.mean()) == pytest.approx(3000, abs=3 * expected / np.sqrt(bright.numel()) + 1)


# ----------------------------------------------------------------------------------------------
# reproducibility and workers


AUGMENTED = replace(PLAIN, flip_x=True, flip_y=True, intensity_scale=(0.8, 1.25), intensity_offset=0.05,
                    noise_data_augmentation=True, time_rescale=(0.9, 1.1))


def test_deterministic_for_a_seed(tmp_path):
    movies = movies_of(ramp_folder(tmp_path))
    a, b = ChunkDataset(movies, AUGMENTED, True, seed=3), ChunkDataset(movies, AUGMENTED, True, seed=3)
    assert all(same(x, y) for x, y in zip(items(a, 4), items(b, 4)))
    other = ChunkDataset(movies, AUGMENTED, True, seed=4)
    assert not all(same(x, y) for x, y in zip(items(a, 4), items(other, 4)))
    b.set_epoch(1)
    assert not all(same(x, y) for x, y in zip(items(a, 4), items(b, 4)))
    # indices past the end are the same chunks with fresh draws
    assert a[len(a)]["start"] == a[0]["start"] and not same(a[len(a)], a[0])


def test_dataloader_with_two_workers(tmp_path):
    write_sample(tmp_path / "a", "01")
    write_sample(tmp_path / "a", "02", n_frames=30)
    movies = movies_of(tmp_path / "a", AUGMENTED, tmp_path / "cache")
    ds = ChunkDataset(movies, AUGMENTED, train=True, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False)
    batches = list(loader)
    assert sum(len(b["movie"]) for b in batches) == len(ds)
    images = torch.cat([b["image"] for b in batches])
    labels = torch.cat([b["label"] for b in batches])
    for i in range(len(ds)):
        item = ds[i]
        assert torch.equal(images[i], item["image"]) and torch.equal(labels[i], item["label"])


# ----------------------------------------------------------------------------------------------
# training at one sampling (data.resample_to)


def test_resample_to_trains_on_the_movie_as_detection_resamples_it(tmp_path):
    from casparks.preprocess import resample_movie

    video, classes, events = spark_movie()
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    config = replace(PLAIN, resample_to=(PX / 2, DT / 2))  # twice the samples in t, y and x
    cache = tmp_path / "cache"
    movie = movies_of(tmp_path / "a", config, cache)[0]
    assert movie.factors == pytest.approx((2.0, 2.0, 2.0))
    assert movie.shape == (2 * T, 2 * Y, 2 * X) == movie.labels.shape
    assert (movie.pixel_size_um, movie.frame_interval_ms) == (PX / 2, DT / 2)
    assert movie.source_units == (PX, DT) and movie.source_shape == (T, Y, X)
    np.testing.assert_allclose(np.asarray(movie.data), resample_movie(video, (2.0, 2.0, 2.0)))
    # labels by nearest neighbour: the same classes, 8× the voxels, where the spark is
    assert set(np.unique(movie.labels)) == {0, SPARK}
    assert np.count_nonzero(movie.labels == SPARK) == 8 * np.count_nonzero(classes == SPARK)
    assert movie.labels[40, 16, 32] == SPARK and movie.labels[0, 0, 0] == 0
    # the resampled movie is cached with the new units and reused; chunks come out at its size
    cached = sorted(p.name for p in cache.iterdir())
    assert any("_video_" in name for name in cached)
    video_file = next(cache.glob("01_video_*.tif"))
    from casparks.io import read_units

    assert read_units(video_file) == pytest.approx((PX / 2, DT / 2))
    stamp = video_file.stat().st_mtime_ns
    again = movies_of(tmp_path / "a", config, cache)[0]
    assert video_file.stat().st_mtime_ns == stamp and again.shape == movie.shape
    item = ChunkDataset([again], config, train=True)[0]
    assert item["image"].shape == (1, 16, 2 * Y, 2 * X)
    assert pickle.loads(pickle.dumps(again)).data.shape == movie.shape
    # without a cache it is resampled in memory (and survives pickling for workers)
    in_memory = movies_of(tmp_path / "a", config)[0]
    assert in_memory.video_path is None and pickle.loads(pickle.dumps(in_memory)).data.shape == movie.shape
    # 'abs_max' keeps the source's scale (the float32 resampled movie's own maximum was 150× smaller)
    assert video.dtype == np.uint16
    assert movie.stats.full_scale == again.stats.full_scale == in_memory.stats.full_scale == 65535.0


def test_a_training_movie_far_off_resample_to_is_refused_and_1_um_is_named(tmp_path, caplog):
    """A movie tagged 2 µm per pixel for data.resample_to 0.2 µm was enlarged 10× without a word,
    and the run's card then claimed a sampling its own detection refuses; one at exactly 1 µm
    (what a file without a calibration reports) got no hint, unlike in detection."""
    write_sample(tmp_path / "a", "01")
    with pytest.raises(CasparksError, match=r"its pixel size of 0.2 µm is 10 times data.resample_to's 0.02 µm: "
                                            r"the units are most likely wrong"):
        movies_of(tmp_path / "a", replace(PLAIN, resample_to=(PX / 10, DT)))
    with pytest.raises(CasparksError, match="its frame interval of"):
        movies_of(tmp_path / "a", replace(PLAIN, resample_to=(PX, DT * 9)))
    write_sample(tmp_path / "b", "01", units=False)  # 1 µm from the config, as an uncalibrated file's
    with caplog.at_level("WARNING", logger="casparks"):
        movie = movies_of(tmp_path / "b", replace(PLAIN, pixel_size_um=1.0, frame_interval_ms=DT,
                                                  resample_to=(0.25, DT)))[0]
    assert movie.factors is not None and "its pixel size is exactly 1 µm, what a file without a calibration" in caplog.text


def test_movies_at_the_target_sampling_are_used_as_they_are(tmp_path):
    write_sample(tmp_path / "a", "01")
    movie = movies_of(tmp_path / "a", replace(PLAIN, resample_to=(PX * 1.01, DT)), tmp_path / "cache")[0]
    assert movie.factors is None and movie.video_path == movie.sample.video and movie.shape == (T, Y, X)


def test_noise_augmentation_works_on_float32_movies(tmp_path):
    """float32 movies are memory-mapped read-only: augmentation must not write into them."""
    video = np.random.default_rng(0).poisson(200.0, (T, Y, X)).astype(np.float32) + 100
    write_sample(tmp_path / "a", "01", video=video)
    ds = ChunkDataset(movies_of(tmp_path / "a"), replace(PLAIN, noise_data_augmentation=True), train=True)
    first = ds[0]["image"]
    assert torch.isfinite(first).all()
    np.testing.assert_array_equal(np.asarray(ds.movies[0].data), video)  # the movie is untouched


def test_chunks_of_movies_of_different_frame_sizes_batch_together(tmp_path):
    from casparks.data import collate_chunks

    write_sample(tmp_path / "a", "01")
    write_sample(tmp_path / "a", "02", video=np.full((T, Y + 4, X - 8), 300, np.uint16))
    ds = ChunkDataset(movies_of(tmp_path / "a"), PLAIN, train=False)
    small, large = ds[0], ds[len(ds) - 1]
    assert small["image"].shape[-2:] != large["image"].shape[-2:]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_chunks, sampler=[0, len(ds) - 1])
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 1, 16, Y + 4, X) and batch["label"].shape == (2, 16, Y + 4, X)
    assert torch.equal(batch["image"][0, :, :, :Y, :X], small["image"])
    assert torch.equal(batch["label"][0, :, :Y, :X], small["label"])
    assert (batch["label"][0, :, Y:, :] == IGNORE).all() and (batch["label"][1, :, :, X - 8:] == IGNORE).all()
    # the image is reflect-padded, as detection pads a narrow frame: no black band
    padded = np.pad(small["image"][0].numpy(), ((0, 0), (0, 4), (0, 0)), mode="reflect")
    np.testing.assert_array_equal(batch["image"][0, 0].numpy(), padded)
    assert batch["movie"] == ["01", "02"] and batch["start"].tolist() == [small["start"], large["start"]]


def test_every_unusable_movie_of_a_folder_is_named_at_once(tmp_path):
    """A training folder with two bad movies of three: both named in one error (it stopped at the first)."""
    write_sample(tmp_path / "a", "01")
    write_sample(tmp_path / "a", "02", classes=np.zeros((T, Y + 1, X), np.uint8))  # labels of another shape
    write_sample(tmp_path / "a", "03", units=False)  # no units
    with pytest.raises(CasparksError, match="2 of 3 movies cannot be used") as info:
        movies_of(tmp_path / "a")
    lines = str(info.value).splitlines()
    assert any("02_class_label.tif" in line for line in lines) and any("03_video.tif" in line for line in lines)


def test_every_movie_without_units_is_named_across_the_training_and_validation_sets(tmp_path):
    """Training loads the validation movies before the training movies: a validation movie
    without units was named alone, the training movies without units only after it was fixed."""
    write_sample(tmp_path / "a", "01")
    write_sample(tmp_path / "a", "03", units=False)
    write_sample(tmp_path / "a", "04", units=False)
    write_sample(tmp_path / "v", "06", units=False)
    with pytest.raises(CasparksError, match="3 of 4 movies cannot be used") as info:
        split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v"]))
    text = str(info.value)
    assert all(f"{i}_video.tif: the pixel size and the frame interval are not" in text for i in ("03", "04", "06"))
    assert "prepare-labels --pixel-size" in text
    train, val, _ = split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v"],
                                             pixel_size_um=PX, frame_interval_ms=DT))  # the config fills in
    assert [s.id for s in train] == ["01", "03", "04"] and [s.id for s in val] == ["06"]


def test_an_event_of_two_classes_is_refused_for_training(tmp_path):
    """`check` and `evaluate` refuse an event id on spark and puff voxels; training learnt it silently."""
    video, classes, events = spark_movie()
    classes[14:20][classes[14:20] == SPARK] = WAVE  # the spark's first frames painted wave, one id
    write_sample(tmp_path / "a", "01", video=video, classes=classes, events=events)
    write_sample(tmp_path / "a", "02")
    with pytest.raises(CasparksError, match=r"01_event_label.tif: 1 event\(s\) carry more than one class: 1 \(spark/wave\)"):
        movies_of(tmp_path / "a", cache_dir=tmp_path / "cache")


def test_a_copy_of_a_training_movie_in_another_set_is_refused(tmp_path, caplog):
    video = (np.random.default_rng(3).poisson(200.0, (T, Y, X)) + 100).astype(np.uint16)
    write_sample(tmp_path / "a", "01", video=video)
    write_sample(tmp_path / "a", "02")
    write_sample(tmp_path / "v", "05", video=video)  # movie 01 copied under another id
    with pytest.raises(CasparksError, match=r"05_video.tif: is the same movie as .*a/01_video.tif \(training, "
                                            r"data.data_dir\), under another name, in the validation set"):
        split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v"]))
    write_sample(tmp_path / "t", "07", video=video.astype(np.float32))  # a re-export as float is the same movie
    write_sample(tmp_path / "v2", "09")
    with pytest.raises(CasparksError, match="07_video.tif: is the same movie as .* take it out of data.test_dir"):
        split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v2"], test_dir=[tmp_path / "t"]))
    # within one set it counts twice: a warning
    write_sample(tmp_path / "a", "03", video=video)
    with caplog.at_level("WARNING"):
        train, _, _ = split_samples(config_for(data_dir=[tmp_path / "a"], val_dir=[tmp_path / "v2"]))
    assert len(train) == 3 and "the same movie as" in caplog.text and "counts twice" in caplog.text
    # a copy in data_dir taken out for validation by data.val_ids is a copy in another set (a sample
    # saved twice from napari validated at F1 0.89 on its own training movie, with "counts twice")
    with pytest.raises(CasparksError, match=r"03_video.tif: is the same movie as .*01_video.tif \(training, "
                                            r"data.data_dir\), under another name, in the validation set"):
        split_samples(config_for(data_dir=[tmp_path / "a"], val_ids=["03"]))


def test_a_detection_folder_as_training_data_is_named_as_one(detection_output):
    """Its labels without movies were "sample(s) 01 have no video file", as calibrate's --val was."""
    det = detection_output
    with pytest.raises(CasparksError, match="det: holds the output of `casparks detect`, not annotated movies") as err:
        split_samples(config_for(data_dir=[det]))
    assert "data.data_dir" in err.value.fix
