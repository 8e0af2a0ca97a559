"""Whole-movie prediction: windows, Gaussian blending without seams, padding, any length."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from casparks.config import NetworkConfig
from casparks.inference import _tile_size, blending_weights, edge_aware_weights, predict_movie, window_starts
from casparks.nn import build_network
from casparks.preprocess import Preprocessing, movie_stats

PX, DT = 0.2, 6.8


def movie(shape=(40, 12, 20), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.poisson(200, size=shape).astype(np.uint16)
    data[10:14, 3:7, 5:9] += 300
    return data


class Local(torch.nn.Module):
    """Output depends on a (kt, 3, 3) neighbourhood of each voxel: a local function of the input."""

    def __init__(self, kt: int = 1, ks: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(1, 4, (kt, ks, ks), padding=(kt // 2, ks // 2, ks // 2))

    def forward(self, x):
        return 5 * self.conv(x)


def predict(network, data, window, **kwargs):
    settings = Preprocessing(norm_video="movie")
    return predict_movie(network, data, settings, movie_stats(data), PX, DT, window, **kwargs)


def test_window_starts_cover_the_movie_and_end_on_its_last_frame():
    assert window_starts(100, 32, 0.5) == [0, 16, 32, 48, 64, 68]
    assert window_starts(32, 32, 0.5) == [0]
    assert window_starts(10, 16, 0.5) == [-3]  # centred, padded on both sides
    assert window_starts(33, 32, 0.0) == [0, 1]
    with pytest.raises(ValueError):
        window_starts(10, 8, 1.0)


def test_blending_weights_are_gaussian_and_positive():
    w = blending_weights(32)
    assert w.shape == (32,) and (w > 0).all()
    assert w.max() == pytest.approx(1.0)
    assert w[0] < 0.01 and np.allclose(w, w[::-1])


def test_edge_aware_weights_taper_only_inside_the_movie():
    inside = edge_aware_weights(16, 10, 100)
    assert np.allclose(inside, blending_weights(16))
    first, last, only = edge_aware_weights(16, 0, 100), edge_aware_weights(16, 84, 100), edge_aware_weights(16, 0, 16)
    assert (first[:8] == 1).all() and np.allclose(first[8:], inside[8:])
    assert (last[8:] == 1).all() and np.allclose(last[:8], inside[:8])
    assert (only == 1).all()


def test_probabilities_shape_dtype_and_sum():
    data = movie()
    probs = predict(Local(), data, 16)
    assert probs.shape == (4, *data.shape) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_no_seam_for_a_network_without_time_context():
    """A per-frame network: many overlapping windows give exactly the one-window result."""
    data = movie()
    network = Local(kt=1)
    whole = predict(network, data, 64)  # one window longer than the movie
    tiled = predict(network, data, 8, overlap=0.5)
    assert np.allclose(whole, tiled, atol=1e-5)
    tiled_no_overlap = predict(network, data, 8, overlap=0.0)
    assert np.allclose(whole, tiled_no_overlap, atol=1e-5)


def test_no_seam_for_a_network_with_time_context():
    """Frames at a window's edge lack context, but their Gaussian weight is tiny: interior frames
    match the one-window result within a small tolerance, with no jump at window borders."""
    data = movie()
    network = Local(kt=3)
    whole = predict(network, data, 64)
    tiled = predict(network, data, 16, overlap=0.5)
    interior = slice(1, data.shape[0] - 1)  # the movie's first/last frames have no true context
    assert np.abs(whole[:, interior] - tiled[:, interior]).max() < 2e-3


class EdgeBlind(torch.nn.Module):
    """A per-voxel network that, like one trained with ignore_frames_loss = k, says "spark" with
    certainty on the first and last k frames of every window it is given."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.local = Local(kt=1)

    def forward(self, x):
        out = self.local(x).clone()
        garbage = torch.tensor([0.0, 20.0, 0.0, 0.0]).view(1, 4, 1, 1, 1)
        out[:, :, : self.k] = garbage
        out[:, :, -self.k :] = garbage
        return out


def test_edge_frames_keep_the_movies_ends_off_the_windows_untrained_edges():
    data = movie(shape=(100, 12, 20))
    truth = predict(Local(kt=1), data, 32, overlap=0.5)  # a per-frame network: context never matters
    blind = EdgeBlind(k=2)
    plain = predict(blind, data, 32, overlap=0.5)
    # without edge frames the movie's first and last 2 frames are the window edges' garbage;
    # inside, the Gaussian blending all but hides the windows' edges
    assert plain[1, :2].min() > 0.99 and plain[1, -2:].min() > 0.99
    assert np.abs(plain[:, 2:-2] - truth[:, 2:-2]).max() < 5e-3
    shifted = predict(blind, data, 32, overlap=0.5, edge_frames=2)
    assert np.abs(shifted - truth).max() < 5e-3
    # a movie shorter than a window: centred in one window, padded by at least edge_frames
    short = data[:10]
    assert np.allclose(predict(blind, short, 32, edge_frames=2), predict(Local(kt=1), short, 32), atol=1e-6)
    with pytest.raises(ValueError, match="edge_frames"):
        predict(blind, data, 32, edge_frames=-1)


class Recorder(Local):
    """A local network that records the shape of every input it is given."""

    def __init__(self):
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return super().forward(x)


def test_a_window_longer_than_the_movie_is_capped_to_what_it_needs(caplog):
    """--window 5000 on a short movie read 5000 frames of mirrored padding per window."""
    data = movie(shape=(10, 12, 20))
    network = Recorder()
    with caplog.at_level("INFO", logger="casparks.inference"):
        long = predict(network, data, 5000, edge_frames=2, input_multiple=(4, 1, 1), least_window=8)
    assert [s[2] for s in network.shapes] == [16]  # 10 + 2 × 2 frames, rounded up to the multiple of 4
    assert "capped to 16" in caplog.text
    assert np.allclose(long, predict(Local(), data, 16, edge_frames=2, input_multiple=(4, 1, 1)), atol=1e-6)
    network.shapes.clear()
    predict(network, movie(shape=(40, 12, 20)), 16, overlap=0.5, input_multiple=(4, 1, 1), least_window=8)
    assert {s[2] for s in network.shapes} == {16}  # a window the movie fills is not changed
    network.shapes.clear()
    # never below the model's own window (a short movie's probabilities moved with it), nor capped without one
    predict(network, data, 5000, edge_frames=2, input_multiple=(4, 1, 1), least_window=24)
    predict(network, data, 32, edge_frames=2, input_multiple=(4, 1, 1))
    assert [s[2] for s in network.shapes] == [24, 32]


def test_short_movie_odd_frame_size_and_unet_multiples():
    config = NetworkConfig(unet_steps=2, first_layer_channels=4, batch_normalization="none")
    network = build_network(config)
    data = movie(shape=(5, 10, 30))  # shorter than a window; 10 × 30 not multiples of 4
    probs = predict(network, data, 16)
    assert probs.shape == (4, 5, 10, 30)
    assert np.isfinite(probs).all()
    assert np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)


def test_batches_of_windows_give_the_same_result_and_mode_is_restored():
    data = movie()
    network = Local(kt=3)
    network.train()
    one = predict(network, data, 8, batch_size=1)
    many = predict(network, data, 8, batch_size=3)
    assert np.allclose(one, many, atol=1e-6)
    assert network.training


def test_spatial_tiles_give_the_whole_frame_result():
    """A per-pixel network: tiles in y and x give exactly the whole-frame result."""
    data = movie(shape=(40, 30, 50))
    network = Local(kt=3, ks=1)
    whole = predict(network, data, 16, overlap=0.5)
    tiled = predict(network, data, 16, overlap=0.5, tile_yx=(16, 24), tile_overlap=0.25)
    assert np.allclose(whole, tiled, atol=1e-5)


def test_no_seam_between_spatial_tiles_for_a_network_with_spatial_context():
    """Pixels at a tile's inner edge lack context but get a tiny weight where tiles overlap; at
    the frame's border every tile lacks context alike and the frame-border tile keeps its weight."""
    data = movie(shape=(24, 30, 50))
    network = Local(kt=3, ks=3)
    whole = predict(network, data, 32)
    tiled = predict(network, data, 32, tile_yx=(16, 24), tile_overlap=0.5)
    assert np.abs(whole - tiled).max() < 1e-3
    assert np.allclose(tiled.sum(axis=0), 1.0, atol=1e-5)


def test_tiles_respect_the_network_input_multiple():
    config = NetworkConfig(unet_steps=2, first_layer_channels=4, batch_normalization="none")
    network = build_network(config)
    data = movie(shape=(12, 20, 45))  # padded to 20 × 48; tiles of 10 × 18 round down to 8 × 16
    probs = predict(network, data, 16, tile_yx=(10, 18))
    assert probs.shape == (4, 12, 20, 45) and np.allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="tile_overlap"):
        predict(network, data, 16, tile_yx=(8, 16), tile_overlap=1.0)


def test_an_axis_a_little_longer_than_a_tile_is_cut_into_balanced_tiles():
    """A 160-row frame in two tiles of the largest 128 rows would run 256 rows; two of 96 cover
    it with at least the requested overlap, and the tile count never grows."""
    assert _tile_size((128, 512), (160, 512), (16, 16), 0.25) == (96, 512)
    assert _tile_size((128, 512), (64, 512), (16, 16), 0.25) is None
    assert _tile_size((128, 512), (128, 1024), (16, 16), 0.25) == (128, 416)
    assert _tile_size((64, 512), (80, 512), (16, 16), 0.25) == (64, 512)  # 48 would do, but not below 64
    assert _tile_size((32, 512), (80, 512), (16, 16), 0.25) == (32, 512)  # unless the largest tile is
    for size in range(144, 1200, 16):
        tile = _tile_size((128, 128), (size, 64), (16, 16), 0.25)[0]
        starts = window_starts(size, tile, 0.25)
        assert tile % 16 == 0 and 64 <= tile <= 128
        assert len(starts) == len(window_starts(size, 128, 0.25))
        assert starts[0] == 0 and starts[-1] + tile == size
        assert all(tile - (b - a) >= 0.25 * tile for a, b in zip(starts, starts[1:]))


def test_auto_tiles_keep_a_field_of_the_reference_pixels_whole_whatever_its_shape():
    """A 256 × 256 px field (as many pixels as 128 × 512) was cut into three 112-row tiles by the
    128 × 512 default: no tile held the whole cell and part of a wave became a false puff."""
    assert _tile_size("auto", (256, 256), (16, 16)) is None
    assert _tile_size("auto", (64, 1024), (16, 16)) is None
    assert _tile_size("auto", (128, 512), (16, 16)) is None
    assert _tile_size("auto", (160, 512), (16, 16)) == _tile_size((128, 512), (160, 512), (16, 16)) == (96, 512)
    assert _tile_size("auto", (256, 1024), (16, 16)) == _tile_size((128, 512), (256, 1024), (16, 16))
    assert _tile_size((128, 512), (256, 256), (16, 16)) == (112, 256)  # an explicit tile still tiles
    network = Recorder()
    predict(network, movie(shape=(8, 256, 256)), 8, tile_yx="auto")
    assert [s[3:] for s in network.shapes] == [(256, 256)]


class ShapeRecorder(Local):
    """A local network that records the (y, x) size of every input it is given."""

    def __init__(self):
        super().__init__(kt=1, ks=1)
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return super().forward(x)


def test_a_frame_narrower_than_the_training_crops_is_padded_to_them_and_cropped_back(monkeypatch):
    """A 6.4 µm-high fast scan is 32 rows at 0.2 µm: the network sees it reflect-padded to 64 rows
    (MIN_FRAME_PX), as it never saw fewer in training; a per-pixel network gives the same
    probabilities either way."""
    from casparks.inference import MIN_FRAME_PX

    network = ShapeRecorder()
    narrow = movie(shape=(24, 32, 100))
    probs = predict(network, narrow, 16)
    assert probs.shape == (4, 24, 32, 100)
    assert set(network.sizes) == {(MIN_FRAME_PX, 100)}
    wide = movie(shape=(24, 80, 100))
    network.sizes.clear()
    reference = predict(network, wide, 16)
    assert set(network.sizes) == {(80, 100)}  # large enough: not padded
    # a per-pixel network gives the movie's own rows the same values without the padding: the
    # padded rows are added below and cut off again, nothing is shifted
    import casparks.inference

    monkeypatch.setattr(casparks.inference, "MIN_FRAME_PX", 1)
    network.sizes.clear()
    unpadded = predict(network, narrow, 16)
    assert set(network.sizes) == {(32, 100)}
    assert np.allclose(unpadded, probs, atol=1e-6) and np.isfinite(reference).all()


def test_channels_last_layout_gives_the_same_probabilities():
    config = NetworkConfig(unet_steps=2, first_layer_channels=4, batch_normalization="batch")
    network = build_network(config).eval()
    data = movie(shape=(24, 16, 40))
    plain = predict(network, data, 16, overlap=0.25)
    plain_tiles = predict(network, data, 16, overlap=0.25, tile_yx=(16, 24))
    network = network.to(memory_format=torch.channels_last_3d)
    assert np.allclose(predict(network, data, 16, overlap=0.25, channels_last=True), plain, atol=1e-5)
    assert np.allclose(predict(network, data, 16, overlap=0.25, channels_last=True, tile_yx=(16, 24)), plain_tiles,
                       atol=1e-5)


def test_a_plain_array_without_statistics_is_read_as_the_movie():
    """``getattr(array, "data")`` is the array's memory buffer, not the movie: this crashed."""
    network, data = Local(), movie()
    expected = predict(network, data, 16)
    got = predict_movie(network, data, Preprocessing(norm_video="movie"), None, PX, DT, 16)
    np.testing.assert_allclose(got, expected, atol=1e-6)
