"""Movies with units: reading metadata (ImageJ, OME, tifffile JSON), overrides, errors, writers."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import tifffile

from casparks.errors import CasparksError
from casparks.io import (
    Movie,
    atomic_output,
    instance_dtype,
    read_movie,
    read_stack,
    read_units,
    write_class_label,
    write_event_label,
    write_movie,
    write_stack,
)


@pytest.fixture
def movie_array():
    rng = np.random.default_rng(0)
    return rng.integers(100, 4000, size=(12, 8, 16), dtype=np.uint16)


def test_imagej_roundtrip_keeps_units_and_data(tmp_path, movie_array):
    path = write_stack(tmp_path / "01_video.tif", movie_array, 0.2, 6.8)
    movie = read_movie(path)
    assert movie.pixel_size_um == pytest.approx(0.2)
    assert movie.frame_interval_ms == pytest.approx(6.8)
    assert movie.name == "01_video"
    np.testing.assert_array_equal(movie.data, movie_array)
    assert movie.duration_ms == pytest.approx(12 * 6.8)
    assert movie.size_um == pytest.approx((8 * 0.2, 16 * 0.2))
    # ImageJ itself can open it: the description is an ImageJ hyperstack with frames
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.imagej_metadata["frames"] == 12


def test_uncompressed_movie_is_memory_mapped(tmp_path, movie_array):
    path = write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    assert isinstance(read_movie(path).data, np.memmap)


def test_compressed_movie_is_read(tmp_path, movie_array):
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, movie_array, compression="zlib", imagej=False, metadata={"axes": "TYX"})
    np.testing.assert_array_equal(read_stack(path), movie_array)


def test_imagej_units_in_other_length_and_time_units(tmp_path, movie_array):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(
        path, movie_array, imagej=True, resolution=(1 / 150.0, 1 / 150.0),
        metadata={"axes": "TYX", "unit": "nm", "finterval": 3.5, "tunit": "ms"},
    )
    assert read_units(path) == pytest.approx((0.15, 3.5))


def test_ome_units(tmp_path, movie_array):
    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(
        path, movie_array, ome=True,
        metadata={"axes": "TYX", "PhysicalSizeX": 0.25, "PhysicalSizeXUnit": "µm",
                  "PhysicalSizeY": 0.25, "TimeIncrement": 0.005, "TimeIncrementUnit": "s"},
    )
    movie = read_movie(path)
    assert movie.pixel_size_um == pytest.approx(0.25)
    assert movie.frame_interval_ms == pytest.approx(5.0)


def test_explicit_units_override_metadata(tmp_path, movie_array):
    path = write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    movie = read_movie(path, pixel_size_um=0.1, frame_interval_ms=2.0)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == (0.1, 2.0)


def test_missing_units_error_says_how_to_pass_them(tmp_path, movie_array):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie_array)
    with pytest.raises(CasparksError) as info:
        read_movie(path)
    message = str(info.value)
    assert str(path) in message and "--pixel-size" in message and "--frame-interval" in message
    assert "\n" not in message
    # one of them given: the error names only the other
    with pytest.raises(CasparksError, match="frame interval") as info:
        read_movie(path, pixel_size_um=0.2)
    assert "--pixel-size" not in str(info.value)
    assert read_movie(path, pixel_size_um=0.2, frame_interval_ms=6.8).shape == movie_array.shape


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_units_rejected(tmp_path, movie_array, value):
    path = write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    with pytest.raises(CasparksError, match="pixel size"):
        read_movie(path, pixel_size_um=value)


def test_two_d_image_is_a_clear_error(tmp_path):
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, np.zeros((8, 16), np.uint16))
    with pytest.raises(CasparksError, match="single 2-D image"):
        read_stack(path)


def test_four_d_stack_is_a_clear_error(tmp_path):
    path = tmp_path / "channels.tif"
    data = np.arange(4 * 2 * 8 * 16, dtype=np.uint16).reshape(4, 2, 8, 16)
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TCYX"})
    with pytest.raises(CasparksError, match=r"has 2 channels.*--channel 0\.\.1"):
        read_stack(path)
    np.testing.assert_array_equal(read_stack(path, channel=1), data[:, 1])
    with pytest.raises(CasparksError, match="channel 2 does not exist"):
        read_stack(path, channel=2)


def test_five_d_stack_is_a_clear_error(tmp_path):
    path = tmp_path / "zstack.tif"
    tifffile.imwrite(path, np.zeros((3, 2, 2, 8, 16), np.uint16), imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(CasparksError, match="casparks needs one channel"):
        read_stack(path, channel=0)


def test_singleton_axes_are_squeezed(tmp_path, movie_array):
    path = tmp_path / "single_channel.tif"
    tifffile.imwrite(path, movie_array[:, None], imagej=True, metadata={"axes": "TCYX"})
    assert read_stack(path).shape == movie_array.shape


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(CasparksError, match="cannot be read as a TIFF"):
        read_stack(bad)
    with pytest.raises(CasparksError, match="not found"):
        read_stack(tmp_path / "nope.tif")
    with pytest.raises(CasparksError, match="folder"):
        read_stack(tmp_path)


def test_instance_dtype_never_overflows():
    assert instance_dtype(0) == np.uint16
    assert instance_dtype(65535) == np.uint16
    assert instance_dtype(65536) == np.uint32
    with pytest.raises(ValueError):
        instance_dtype(2**32)


def test_event_labels_beyond_uint16_roundtrip_with_units(tmp_path):
    ids = np.zeros((3, 4, 5), np.int64)
    ids[0, 0, 0] = 70000
    ids[2, 3, 4] = 300
    path = write_event_label(tmp_path / "e.tif", ids, 0.2, 6.8)
    back = read_stack(path)
    assert back.dtype == np.uint32
    assert back[0, 0, 0] == 70000 and back[2, 3, 4] == 300
    assert read_units(path) == pytest.approx((0.2, 6.8))
    small = read_stack(write_event_label(tmp_path / "s.tif", ids.clip(0, 300), 0.2, 6.8))
    assert small.dtype == np.uint16


def test_class_label_is_uint8(tmp_path):
    codes = np.array([[[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]] * 2)
    back = read_stack(write_class_label(tmp_path / "c.tif", codes, 0.2, 6.8))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, codes)


def test_writers_refuse_to_overwrite_and_leave_nothing_behind(tmp_path, movie_array):
    path = write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    before = path.read_bytes()
    with pytest.raises(CasparksError, match="--overwrite"):
        write_stack(path, movie_array[:2], 0.2, 6.8)
    assert path.read_bytes() == before
    write_stack(path, movie_array[:2], 0.2, 6.8, overwrite=True)
    assert read_stack(path).shape[0] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]


def test_atomic_output_gives_normal_file_permissions(tmp_path):
    target = tmp_path / "shared.csv"
    with atomic_output(target) as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask


def test_atomic_output_removes_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_write_movie_roundtrip(tmp_path, movie_array):
    movie = Movie(movie_array, 0.2, 6.8, name="x")
    back = read_movie(write_movie(tmp_path / "x.tif", movie))
    assert (back.pixel_size_um, back.frame_interval_ms) == pytest.approx((0.2, 6.8))
    np.testing.assert_array_equal(back.data, movie_array)


def test_movie_rejects_non_3d():
    with pytest.raises(ValueError):
        Movie(np.zeros((4, 4)), 0.2, 6.8)
