"""Movies with units: reading metadata (ImageJ, OME, tifffile JSON), overrides, errors, writers."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile

from casparks.errors import CasparksError
from casparks.io import (
    Movie,
    atomic_output,
    instance_dtype,
    read_label_stack,
    read_movie,
    read_probabilities,
    read_stack,
    read_units,
    stack_shape,
    write_class_label,
    write_event_label,
    write_movie,
    write_probabilities,
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


@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd", "packbits"])
def test_compressed_movie_is_read(tmp_path, movie_array, compression):
    """LZW (Zeiss ZEN, Photoshop and PIL exports) was refused as "damaged or truncated": tifffile
    decodes it with imagecodecs, which casparks now installs."""
    path = tmp_path / "c.tif"
    tifffile.imwrite(path, movie_array, compression=compression, imagej=False, metadata={"axes": "TYX"})
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


def test_an_ome_tiff_is_named_without_its_ome_suffix(tmp_path, movie_array):
    path = tmp_path / "cell 3.ome.tif"
    tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                                                           "TimeIncrement": 6.8, "TimeIncrementUnit": "ms"})
    assert read_movie(path).name == "cell 3"


def test_ome_frame_interval_from_the_planes_time_stamps(tmp_path, movie_array):
    """No TimeIncrement, but each plane's DeltaT (as many microscopes write): their step."""
    path = tmp_path / "planes.ome.tif"
    planes = {"DeltaT": [0.0068 * t for t in range(len(movie_array))], "DeltaTUnit": ["s"] * len(movie_array)}
    tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2,
                                                           "PhysicalSizeY": 0.2, "Plane": planes})
    assert read_units(path) == pytest.approx((0.2, 6.8))
    # in ms: the median step was 6.799999999999997, which --skip-existing then compared with 6.8
    long = np.repeat(movie_array, 25, axis=0)  # 300 frames: stamps up to 2033 ms
    planes = {"DeltaT": [6.8 * t for t in range(len(long))], "DeltaTUnit": ["ms"] * len(long)}
    tifffile.imwrite(path, long, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2,
                                                    "PhysicalSizeY": 0.2, "Plane": planes})
    assert read_units(path) == (0.2, 6.8)


def _rectangular_pixels(path, movie_array, writer: str, height_um: float):
    """A movie of pixels 0.2 µm wide and ``height_um`` high, in ImageJ's or OME's metadata."""
    if writer == "imagej":
        tifffile.imwrite(path, movie_array, imagej=True, resolution=(1 / 0.2, 1 / height_um),
                         metadata={"axes": "TYX", "unit": "micron", "finterval": 0.0068})
    else:
        tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2,
                                                               "PhysicalSizeY": height_um, "TimeIncrement": 6.8,
                                                               "TimeIncrementUnit": "ms"})
    return path


@pytest.mark.parametrize("writer", ["imagej", "ome"])
def test_pixels_that_are_not_square_are_refused(tmp_path, movie_array, writer):
    """Every measurement takes one pixel size: a 0.2 × 0.3 µm pixel read as 0.2 made y wrong."""
    path = _rectangular_pixels(tmp_path / "rect.tif", movie_array, writer, 0.3)
    with pytest.raises(CasparksError, match="0.2 µm wide and 0.3 µm high.*square") as info:
        read_movie(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("writer", ["imagej", "ome"])
def test_a_given_pixel_size_over_pixels_that_are_not_square_is_warned_about(tmp_path, movie_array, writer, caplog):
    """--pixel-size given for a folder passed a movie of 0.2 × 0.4 µm pixels without a word (y
    sizes halved); a given size still overrides the file's metadata, which may be the wrong part."""
    path = _rectangular_pixels(tmp_path / "rect.tif", movie_array, writer, 0.4)
    with caplog.at_level("WARNING", logger="casparks"):
        movie = read_movie(path, pixel_size_um=0.2)
        read_movie(path, pixel_size_um=0.2)  # a command reads a movie's metadata more than once: said once
    assert movie.pixel_size_um == 0.2
    told = [r.getMessage() for r in caplog.records]
    assert len(told) == 1 and str(path) in told[0] and "0.2 µm wide and 0.4 µm high" in told[0]
    assert "--pixel-size" in told[0]


@pytest.mark.parametrize("tunit, interval_ms", [("millisec", 6.8), ("msecs", 6.8), ("ms.", 6.8), ("Sec", 6800.0),
                                                ("usec", 0.0068)])
def test_imagej_time_units_as_microscopes_write_them(tmp_path, movie_array, tunit, interval_ms):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 6.8, "tunit": tunit})
    assert read_units(path) == pytest.approx((0.2, interval_ms))


@pytest.mark.parametrize("unit, per_pixel", [("\\u03BCm", 0.2), ("\\u00B5", 0.2), ("micrometers", 0.2),
                                             ("Micrometres", 0.2), ("\\u00C5", 2000.0), ("inch", 0.2 / 25400)])
def test_imagej_length_units_as_imagej_escapes_and_spells_them(tmp_path, movie_array, unit, per_pixel):
    """ImageJ writes a non-ASCII unit escaped (Greek mu typed in Set Scale: \\u03BCm): read as missing."""
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(1 / per_pixel, 1 / per_pixel),
                     metadata={"axes": "TYX", "unit": unit, "finterval": 0.0068})
    assert read_units(path) == pytest.approx((0.2, 6.8))


@pytest.mark.parametrize("unit, size", [("Å", 2000.0), ("pm", 200000.0), ("in", 0.2 / 25400), ("nm", 200.0)])
def test_ome_length_units_of_the_ome_enumeration(tmp_path, movie_array, unit, size):
    path = tmp_path / "u.ome.tif"
    tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": size, "PhysicalSizeY": size,
                                                           "PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit,
                                                           "TimeIncrement": 6.8e6, "TimeIncrementUnit": "ns"})
    assert read_units(path) == (0.2, pytest.approx(6.8))


@pytest.mark.parametrize("writer", ["imagej", "ome"])
def test_an_unknown_length_unit_is_named_not_missing(tmp_path, movie_array, writer):
    """A unit casparks did not know was reported as "the pixel size is not in the file's metadata"."""
    path = tmp_path / "u.tif"
    if writer == "imagej":
        tifffile.imwrite(path, movie_array, imagej=True, resolution=(5.0, 5.0),
                         metadata={"axes": "TYX", "unit": "furlong", "finterval": 0.0068})
    else:
        tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2,
                                                               "PhysicalSizeXUnit": "furlong", "PhysicalSizeY": 0.2,
                                                               "PhysicalSizeYUnit": "furlong", "TimeIncrement": 0.0068})
    with pytest.raises(CasparksError) as info:
        read_movie(path)
    where = "ImageJ" if writer == "imagej" else "OME"
    assert str(info.value) == (f"{path}: the {where} length unit 'furlong' is not one casparks knows; "
                               "pass --pixel-size UM (Python: pixel_size_um=)")
    assert read_movie(path, pixel_size_um=0.2).pixel_size_um == 0.2
    # an image without a calibration has no pixel size, in no unit
    tifffile.imwrite(path, movie_array, imagej=True, metadata={"axes": "TYX", "unit": "pixel", "finterval": 0.0068})
    assert read_units(path) == (None, pytest.approx(6.8))


def test_an_unknown_time_unit_is_an_error_not_seconds(tmp_path, movie_array):
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 6.8, "tunit": "jiffies"})
    with pytest.raises(CasparksError, match="time unit 'jiffies'.*--frame-interval"):
        read_movie(path)
    assert read_movie(path, frame_interval_ms=6.8).frame_interval_ms == 6.8


def test_explicit_units_override_metadata(tmp_path, movie_array, caplog):
    path = write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    with caplog.at_level("WARNING", logger="casparks"):
        movie = read_movie(path, pixel_size_um=0.1, frame_interval_ms=2.0)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == (0.1, 2.0)
    # never silently: the movie and both values are named
    warned = [r.getMessage() for r in caplog.records]
    assert any(str(path) in m and "pixel size 0.1 µm (--pixel-size / pixel_size_um=)" in m and "0.2 µm" in m for m in warned)
    assert any("frame interval 2 ms (--frame-interval / frame_interval_ms=)" in m and "6.8 ms" in m for m in warned)
    caplog.clear()
    with caplog.at_level("WARNING", logger="casparks"):
        read_movie(path, pixel_size_um=0.2, frame_interval_ms=6.8)  # the same units: nothing to say
        read_movie(path, pixel_size_um=0.1, frame_interval_ms=2.0, warn=False)
    assert not caplog.records


def test_missing_units_error_says_how_to_pass_them(tmp_path, movie_array):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie_array)
    with pytest.raises(CasparksError) as info:
        read_movie(path)
    message = str(info.value)
    assert str(path) in message and "--pixel-size" in message and "--frame-interval" in message
    assert "frame interval are not in" in message
    assert "\n" not in message
    # one of them given: the error names only the other
    with pytest.raises(CasparksError, match="frame interval") as info:
        read_movie(path, pixel_size_um=0.2)
    assert "--pixel-size" not in str(info.value)
    assert read_movie(path, pixel_size_um=0.2, frame_interval_ms=6.8).shape == movie_array.shape


@pytest.mark.parametrize("per_unit, unit", [(1e4 / 0.2, "CENTIMETER"), (25400 / 0.2, "INCH")])
def test_a_plain_tiffs_resolution_tags_give_the_pixel_size(tmp_path, movie_array, per_unit, unit):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie_array, resolution=(per_unit, per_unit), resolutionunit=unit)
    assert read_units(path) == (pytest.approx(0.2), None)
    # the frame interval is still needed, and the error asks for it alone
    with pytest.raises(CasparksError, match="frame interval") as info:
        read_movie(path)
    assert "--pixel-size" not in str(info.value)
    movie = read_movie(path, frame_interval_ms=6.8)
    assert movie.pixel_size_um == pytest.approx(0.2) and movie.frame_interval_ms == 6.8


@pytest.mark.parametrize("dpi", [72, 96, 300, 2000])
def test_a_display_resolution_is_not_a_pixel_size(tmp_path, movie_array, dpi):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie_array, resolution=(dpi, dpi), resolutionunit="INCH")
    assert read_units(path) == (None, None)
    with pytest.raises(CasparksError, match="--pixel-size"):
        read_movie(path, frame_interval_ms=6.8)


def test_plain_resolution_tags_without_a_unit_are_not_read(tmp_path, movie_array):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, movie_array, resolution=(5.0, 5.0))  # ResolutionUnit NONE
    assert read_units(path) == (None, None)


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
    with pytest.raises(CasparksError, match="holds z-stacks over time .*casparks needs one z-plane"):
        read_stack(path, channel=0)
    path = tmp_path / "five.tif"
    tifffile.imwrite(path, np.zeros((3, 2, 2, 8, 16), np.uint16))  # axes unknown (QQQYX): no z named
    with pytest.raises(CasparksError, match="casparks needs one channel"):
        read_stack(path)


def test_singleton_axes_are_squeezed(tmp_path, movie_array):
    path = tmp_path / "single_channel.tif"
    tifffile.imwrite(path, movie_array[:, None], imagej=True, metadata={"axes": "TCYX"})
    assert read_stack(path).shape == movie_array.shape


@pytest.mark.parametrize("axes", ["TXY", "XYT", "XTY", "YTX", "YXT"])
def test_a_movie_saved_with_x_before_y_is_read_as_t_y_x(tmp_path, movie_array, axes):
    """TXY and XYT movies were read with time first but x and y swapped: a transposed movie."""
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, np.transpose(movie_array, ["TYX".index(a) for a in axes]), metadata={"axes": axes})
    data = read_stack(path)
    np.testing.assert_array_equal(data, movie_array)
    assert isinstance(data, np.memmap)  # a view of the map, not a copy
    assert stack_shape(path) == movie_array.shape  # from the header, as read (evaluate's shape messages)
    channels = tmp_path / "c.tif"
    two = np.stack([movie_array + 7, movie_array], axis=1)  # T×C×Y×X
    tifffile.imwrite(channels, np.transpose(two, ["TCYX".index(a) for a in axes.replace("T", "TC")]),
                     metadata={"axes": axes.replace("T", "TC")})
    np.testing.assert_array_equal(read_stack(channels, channel=1), movie_array)


def test_corrupt_and_missing_files(tmp_path, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(CasparksError, match="cannot be read as a TIFF"):
        read_stack(bad)
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"II*\x00\x00\x00\x00\x00")  # a TIFF header without pages
    with pytest.raises(CasparksError):
        read_stack(empty)
    assert "contains no pages" not in capsys.readouterr().err  # tifffile's own line stays out
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


@pytest.mark.parametrize("dtype", [bool, np.complex64, object])
def test_movie_rejects_what_is_no_image(dtype):
    """A Movie of a bool mask was detected (11 sparks and a wave), where the same array or TIFF
    is refused."""
    with pytest.raises(ValueError, match="integer or float image"):
        Movie(np.zeros((4, 4, 4), dtype=dtype), 0.2, 6.8)
    for ok in (np.uint8, np.int16, np.float16, np.float64):
        Movie(np.zeros((4, 4, 4), dtype=ok), 0.2, 6.8)


def test_tables_are_written_without_float_noise(tmp_path):
    import pandas as pd

    from casparks.io import write_csv

    table = pd.DataFrame({"start_ms": [18 * 6.8], "amplitude_dff": [1 / 3], "id": [7]})
    assert 18 * 6.8 == 122.39999999999999
    write_csv(tmp_path / "t.csv", table)
    assert (tmp_path / "t.csv").read_text().splitlines() == ["start_ms,amplitude_dff,id", "122.4,0.3333333333,7"]


def _ome_with_an_image_first(path, image, axes, movie_array, **image_metadata):
    """An OME file of two series: ``image`` (``axes``), then the movie at 0.15 µm / 4 ms."""
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(image, metadata={"axes": axes, **image_metadata})
        tif.write(movie_array, metadata={"axes": "TYX", "PhysicalSizeX": 0.15, "PhysicalSizeY": 0.15,
                                         "TimeIncrement": 4.0, "TimeIncrementUnit": "ms"})
    return path


def test_a_multi_series_ome_file_gives_its_movie_not_its_thumbnail(tmp_path, movie_array):
    path = _ome_with_an_image_first(tmp_path / "acq.ome.tif", np.zeros((10, 10), np.uint8), "YX", movie_array)
    movie = read_movie(path)
    np.testing.assert_array_equal(np.asarray(movie.data), movie_array)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.15, 4.0))
    two = tmp_path / "two.ome.tif"
    with tifffile.TiffWriter(two, ome=True) as tif:
        for _ in range(2):
            tif.write(movie_array, metadata={"axes": "TYX"})
    with pytest.raises(CasparksError, match="holds 2 movies"):
        read_stack(two)


def test_a_snapshot_or_preview_series_is_an_image_not_a_second_movie(tmp_path, movie_array):
    """A CYX reference snapshot before the movie of an OME file, or an RGB preview before it, was
    counted as a second movie ("holds 2 movies")."""
    path = _ome_with_an_image_first(tmp_path / "ref.ome.tif", np.stack([movie_array[0]] * 3), "CYX", movie_array,
                                    PhysicalSizeX=0.1, PhysicalSizeY=0.1)  # the snapshot's units are not the movie's
    movie = read_movie(path)
    np.testing.assert_array_equal(np.asarray(movie.data), movie_array)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.15, 4.0))
    rgb = tmp_path / "rgb.tif"
    with tifffile.TiffWriter(rgb) as tif:  # tifffile's own series description
        tif.write(np.zeros((4, 8, 3), np.uint8), photometric="rgb")
        tif.write(movie_array, metadata={"axes": "TYX"})
    np.testing.assert_array_equal(read_stack(rgb), movie_array)


def test_a_z_stack_series_beside_the_movie_is_left_out_with_a_warning(tmp_path, movie_array, caplog):
    """A recording saved with a reference z-stack of the cell (z, no time) was "2 movies"."""
    z_stack = np.stack([movie_array[0]] * 5)
    path = _ome_with_an_image_first(tmp_path / "z.ome.tif", z_stack, "ZYX", movie_array, PhysicalSizeX=0.1,
                                    PhysicalSizeY=0.1, PhysicalSizeZ=0.5)
    with caplog.at_level("WARNING"):
        movie = read_movie(path)
    np.testing.assert_array_equal(np.asarray(movie.data), movie_array)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.15, 4.0))
    assert "the z-stack series (5, 8, 16) (ZYX) beside it is left out" in caplog.text
    assert stack_shape(path) == movie_array.shape
    two = tmp_path / "two_z.ome.tif"  # two movies over time beside it are still two movies
    with tifffile.TiffWriter(two, ome=True) as tif:
        tif.write(z_stack, metadata={"axes": "ZYX"})
        for _ in range(2):
            tif.write(movie_array, metadata={"axes": "TYX"})
    with pytest.raises(CasparksError, match="holds 3 movies"):
        read_stack(two)


def test_frames_written_one_call_each_are_a_movie(tmp_path, movie_array):
    """tifffile's usual loop (`for frame in movie: writer.write(frame)`) makes each page a series
    of its own: the movie was read as its first frame, "a single 2-D image, not a movie"."""
    path = tmp_path / "loop.tif"
    with tifffile.TiffWriter(path) as writer:
        for frame in movie_array:
            writer.write(frame)
    np.testing.assert_array_equal(read_stack(path), movie_array)
    assert stack_shape(path) == movie_array.shape
    movie = read_movie(path, 0.2, 6.8)
    assert movie.shape == movie_array.shape and movie.frame_interval_ms == 6.8
    with tifffile.TiffWriter(path) as writer:  # units in each frame's header are still read
        for frame in movie_array:
            writer.write(frame, metadata={"axes": "YX", "pixel_size_um": 0.15, "frame_interval_ms": 4.0})
    assert read_units(path) == pytest.approx((0.15, 4.0))


def test_a_plain_tiffs_pages_of_another_size_are_refused_or_a_leading_preview_named(tmp_path, movie_array, caplog):
    """A first page of another size was left out in silence: 11 frames, each one frame early."""
    def plain(name, pages):
        with tifffile.TiffWriter(tmp_path / name) as tif:
            for page in pages:
                tif.write(page, metadata=None, photometric="rgb" if page.ndim == 3 else "minisblack")
        return tmp_path / name

    frames, odd = list(movie_array), movie_array[0, :, :15]
    for pages, listed in (([odd, *frames[1:]], "1 of 8×15 uint16, 11 of 8×16 uint16"),
                          ([*frames[:5], odd, *frames[6:]], "11 of 8×16 uint16, 1 of 8×15 uint16"),  # a traceback
                          ([*frames[:11], odd], "11 of 8×16 uint16, 1 of 8×15 uint16")):
        with pytest.raises(CasparksError) as info:
            read_stack(plain("odd.tif", pages))
        assert str(info.value) == (f"{tmp_path / 'odd.tif'}: its 12 pages are not one size ({listed}); each page "
                                   "of a plain TIFF stack is a frame; save all frames at one size as one T×Y×X "
                                   "stack (a page left out would shift every later frame in time)")
    preview = plain("preview.tif", [np.zeros((4, 8, 3), np.uint8), *frames])
    with caplog.at_level("WARNING", logger="casparks"):
        np.testing.assert_array_equal(read_stack(preview), movie_array)
    assert "its first page (4×8 RGB uint8) is not a frame of the movie (12 pages of 8×16 uint16)" in caplog.text


def test_a_leading_preview_pages_resolution_is_not_the_movies(tmp_path, movie_array):
    """The pixel size was read from the file's first page, the preview left out of the movie: a
    72-dpi thumbnail before frames tagged 0.2 µm was "the pixel size is not in the file's metadata"."""
    def with_preview(name, preview_per_cm, movie_per_cm):
        with tifffile.TiffWriter(tmp_path / name) as tif:
            tif.write(np.zeros((4, 8, 3), np.uint8), photometric="rgb", metadata=None,
                      resolution=(preview_per_cm, preview_per_cm), resolutionunit="CENTIMETER")
            tif.write(movie_array, metadata=None, resolution=(movie_per_cm, movie_per_cm), resolutionunit="CENTIMETER")
        return tmp_path / name

    path = with_preview("tagged.tif", 72 / 2.54, 1e4 / 0.2)
    assert read_units(path) == (pytest.approx(0.2), None)
    movie = read_movie(path, frame_interval_ms=6.8)
    assert movie.pixel_size_um == pytest.approx(0.2) and movie.shape == movie_array.shape
    # nor is a preview's microscope-like resolution the movie's
    assert read_units(with_preview("untagged.tif", 1e4 / 0.2, 72 / 2.54)) == (None, None)


@pytest.mark.parametrize("finterval", ["0,005", "None"])
def test_a_malformed_imagej_finterval_is_missing_not_a_traceback(tmp_path, movie_array, finterval, caplog):
    path = tmp_path / "07_video.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(1 / 0.15, 1 / 0.15),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": finterval, "tunit": "sec"})
    with caplog.at_level("WARNING", logger="casparks"):
        movie = read_movie(path, frame_interval_ms=5.0)  # the given interval applies
        read_movie(path, frame_interval_ms=5.0)  # a command reads a movie's metadata more than once: said once
    assert movie.frame_interval_ms == 5.0 and movie.pixel_size_um == pytest.approx(0.15)
    assert sum(str(path) in r.getMessage() and repr(finterval) in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(CasparksError, match="frame interval is not in the file's metadata") as info:
        read_movie(path)
    assert "--frame-interval" in str(info.value) and "\n" not in str(info.value)
    assert read_units(path) == (pytest.approx(0.15), None)


@pytest.mark.parametrize("fps", [7.0, 30.0])
def test_imagejs_animation_speed_is_no_frame_interval(tmp_path, movie_array, fps):
    """ImageJ's "fps" is its animation speed (7 by default), saved apart from the frame interval
    ("finterval"): it was read as 1000 / fps ms (142.9 or 33.3 ms for a 6.8 ms recording)."""
    path = tmp_path / "07_video.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "unit": "micron", "fps": fps})
    assert tifffile.TiffFile(path).imagej_metadata["fps"] == fps
    assert read_units(path) == (pytest.approx(0.2), None)
    with pytest.raises(CasparksError, match="frame interval is not in the file's metadata") as info:
        read_movie(path)
    # the error names the fps it did not use, and the interval it would mean (a user who sees
    # "30 fps" in Fiji must learn why it was not read, and what to pass if it is the real rate)
    assert f"ImageJ fps {fps:g} is the animation speed" in str(info.value)
    assert f"--frame-interval {1000 / fps:.4g}" in str(info.value) and "\n" not in str(info.value)
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "unit": "micron", "fps": fps, "finterval": 0.0068})
    assert read_movie(path).frame_interval_ms == pytest.approx(6.8)


def test_a_malformed_ome_time_increment_is_missing(tmp_path, movie_array):
    path = tmp_path / "m.ome.tif"
    tifffile.imwrite(path, movie_array, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                                                             "TimeIncrement": "n/a"})
    assert read_units(path) == (pytest.approx(0.2), None)
    assert read_movie(path, frame_interval_ms=5.0).frame_interval_ms == 5.0


def test_read_movie_expands_the_home_folder(tmp_path, movie_array, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_stack(tmp_path / "m.tif", movie_array, 0.2, 6.8)
    movie = read_movie("~/m.tif")
    assert movie.source == tmp_path / "m.tif" and movie.shape == movie_array.shape
    assert read_units("~/m.tif") == (pytest.approx(0.2), pytest.approx(6.8))


def test_a_zeiss_lsm_movie_is_read_with_its_units_not_as_two_movies(tmp_path, movie_array):
    """An LSM file stores a thumbnail after every frame: tifffile gives them as a second series of
    T frames, which read_stack took for a second movie ("holds 2 movies")."""
    from zeiss_lsm import write_lsm

    path = write_lsm(tmp_path / "cell 3.lsm", movie_array, voxel_size_m=(0.138e-6, 0.138e-6), time_interval_s=0.00384)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_lsm and len(tif.series) == 2  # the file is what Zeiss writes, as tifffile reads it
    movie = read_movie(path)
    np.testing.assert_array_equal(np.asarray(movie.data), movie_array)
    assert (movie.pixel_size_um, movie.frame_interval_ms, movie.name) == (0.138, 3.84, "cell 3")


def test_an_lsms_frame_interval_is_its_frames_time_stamps_step(tmp_path, movie_array, caplog):
    from zeiss_lsm import write_lsm

    stamps = 1234.5 + np.arange(len(movie_array)) * 0.0052  # seconds since an epoch
    path = write_lsm(tmp_path / "fast.lsm", movie_array, time_interval_s=0.0, time_stamps_s=stamps)
    assert read_units(path) == (0.2, pytest.approx(5.2))
    # a set interval that the acquisition did not keep: the time stamps win, and both are named
    both = write_lsm(tmp_path / "both.lsm", movie_array, time_interval_s=0.0068, time_stamps_s=stamps)
    with caplog.at_level("WARNING", logger="casparks"):
        assert read_units(both) == (0.2, pytest.approx(5.2))
    assert "time stamps are 5.2 ms apart, its set time interval is 6.8 ms" in caplog.text
    bare = write_lsm(tmp_path / "bare.lsm", movie_array, voxel_size_m=(0.0, 0.0), time_interval_s=0.0)
    assert read_units(bare) == (None, None)
    with pytest.raises(CasparksError, match="pixel size and the frame interval are not in"):
        read_movie(bare)


def test_the_channel_of_a_multi_channel_lsm_is_chosen(tmp_path, movie_array):
    from zeiss_lsm import write_lsm

    channels = np.stack([movie_array, movie_array // 2, movie_array + 7], axis=1)  # T×C×Y×X
    path = write_lsm(tmp_path / "three.lsm", channels)
    with pytest.raises(CasparksError, match="has 3 channels"):
        read_movie(path)
    np.testing.assert_array_equal(np.asarray(read_movie(path, channel=2).data), movie_array + 7)


def test_a_zeiss_line_scan_is_named_as_one(tmp_path):
    from zeiss_lsm import write_lsm

    lines = np.random.default_rng(1).integers(0, 4000, size=(200, 1, 512), dtype=np.uint16)  # 200 lines of x
    path = write_lsm(tmp_path / "linescan.lsm", lines, scan_type=2)
    with pytest.raises(CasparksError, match="is a line scan \\(x-t\\), not an x-y-t movie"):
        read_movie(path, 0.2, 1.0)


def test_an_ome_time_increment_of_zero_falls_back_to_the_planes_delta_t(tmp_path):
    """TimeIncrement="0" (not recorded) was read as a frame interval of 0 and refused."""
    data = np.ones((6, 8, 16), np.uint16)
    path = tmp_path / "ti0.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2,
                                                     "TimeIncrement": 0, "Plane": {"DeltaT": [i * 0.0068 for i in range(6)]}})
    movie = read_movie(path)
    assert (movie.pixel_size_um, movie.frame_interval_ms) == pytest.approx((0.2, 6.8))


def test_probabilities_are_t_frames_of_4_channels_with_the_movies_units(tmp_path):
    """They were 4T frames at a quarter of the frame interval: ImageJ and read_movie took them for a
    movie four times as long and as fast. Files written so are still read."""
    rng = np.random.default_rng(0)
    probabilities = rng.random((4, 6, 8, 16)).astype(np.float32)
    path = write_probabilities(tmp_path / "cell_probabilities.tif", probabilities, 0.2, 6.8)
    np.testing.assert_array_equal(read_probabilities(path), probabilities)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TCYX" and tif.series[0].shape == (6, 4, 8, 16)
        assert tif.imagej_metadata["finterval"] == pytest.approx(0.0068)
    assert read_units(path) == pytest.approx((0.2, 6.8))
    legacy = tmp_path / "old_probabilities.tif"
    write_stack(legacy, np.ascontiguousarray(probabilities.transpose(1, 0, 2, 3)).reshape(-1, 8, 16), 0.2, 6.8 / 4)
    np.testing.assert_array_equal(read_probabilities(legacy), probabilities)
    with pytest.raises(CasparksError, match="holds no class probabilities"):
        read_probabilities(write_stack(tmp_path / "x.tif", probabilities[0, :5], 0.2, 6.8))



def test_an_rgb_movie_is_refused_as_a_rendering_not_offered_as_channels(tmp_path, movie_array):
    """An RGB export was offered as '3 channels, say which one' and its green measured with ΔF/F0
    +41 % (a stretched display range); casparks' own overlay TIFF likewise."""
    path = tmp_path / "cell_rgb.tif"
    rgb = np.stack([np.zeros_like(movie_array, np.uint8), (movie_array % 256).astype(np.uint8),
                    np.zeros_like(movie_array, np.uint8)], axis=-1)
    tifffile.imwrite(path, rgb, imagej=True, photometric="rgb", resolution=(5.0, 5.0),
                     metadata={"axes": "TYXS", "unit": "micron", "finterval": 0.0068})
    for channel in (None, 1):
        with pytest.raises(CasparksError, match="is an RGB colour image") as info:
            read_movie(path, channel=channel)
        assert "--channel" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CasparksError, match="labels are one value per voxel"):
        read_label_stack(path)
    # 16-bit samples are channels, not a rendering (tifffile writes a plain (T, Y, X, 3) uint16 array as RGB)
    deep = tmp_path / "three.tif"
    tifffile.imwrite(deep, np.stack([movie_array] * 3, axis=-1).astype(np.uint16))
    np.testing.assert_array_equal(read_stack(deep, channel=1), movie_array)


def test_casparks_units_come_from_the_movies_own_series_not_a_thumbnail_before_it(tmp_path, movie_array):
    """tifffile's JSON header of series 0 (an 8 × 32 thumbnail at 0.8 µm) gave the movie of series 1
    its pixel size (1528 sparks were found), and a thumbnail without units hid the movie's."""
    for thumb_units, name in (({"pixel_size_um": 0.8}, "a.tif"), ({}, "b.tif")):
        path = tmp_path / name
        with tifffile.TiffWriter(path) as tif:
            tif.write(np.zeros((8, 32), np.uint16), metadata=thumb_units)
            tif.write(movie_array, metadata={"pixel_size_um": 0.2, "frame_interval_ms": 6.8})
        assert read_units(path) == (pytest.approx(0.2), pytest.approx(6.8))
        movie = read_movie(path)
        assert movie.shape == movie_array.shape and movie.pixel_size_um == pytest.approx(0.2)


def test_imagejs_signed_16_bit_movies_are_read_as_stored_with_a_warning_about_the_offset(tmp_path, movie_array,
                                                                                         caplog):
    """ImageJ stores a signed 16-bit movie as unsigned + 32768 with cf=0, c0=-32768, c1=1, and shows
    the signed values: a dark level given as ImageJ shows it (178 for 32946 stored) measured ΔF/F0
    0.009 for 0.855 without a word. The values are read as stored (memory-mapped; ΔF/F0 is the
    same, and earlier detections' fingerprints hold), and a warning says how to give the offset."""
    import logging

    signed = movie_array.astype(np.int32) - 300
    path = tmp_path / "s16.tif"
    tifffile.imwrite(path, (signed + 32768).astype(np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "cf": 0, "c0": -32768.0, "c1": 1.0, "vunit": "Gray Value",
                               "unit": "micron", "finterval": 0.0068})
    with caplog.at_level(logging.WARNING, logger="casparks"):
        movie = read_movie(path)
    np.testing.assert_array_equal(movie.data, signed + 32768)
    assert sum("ImageJ's value + 32768" in r.getMessage() and "s16.tif" in r.getMessage()
               for r in caplog.records) == 1
    caplog.clear()
    # another calibration (a straight line of other coefficients) says nothing
    tifffile.imwrite(path, (signed + 32768).astype(np.uint16), imagej=True, resolution=(5.0, 5.0),
                     metadata={"axes": "TYX", "cf": 0, "c0": 0.0, "c1": 2.0, "unit": "micron", "finterval": 0.0068})
    with caplog.at_level(logging.WARNING, logger="casparks"):
        read_movie(path)
    assert not any("32768" in r.getMessage() for r in caplog.records)


def test_an_output_in_a_folder_one_may_not_write_is_refused_before_the_work(tmp_path, monkeypatch):
    """calibrate ran its whole grid and then failed on '.mine.yaml.iho7xfzl.part: Permission
    denied', naming a hidden file and losing the work; the check before the work now sees it."""
    import casparks.io as io_module
    from casparks.io import check_output_file

    folder = tmp_path / "ro"
    folder.mkdir()
    real_access = os.access
    monkeypatch.setattr(io_module.os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode))
    with pytest.raises(CasparksError, match=r"cal.json: cannot be written: .*ro is not writable; choose a folder"):
        check_output_file(folder / "cal.json")
    with pytest.raises(CasparksError, match="is not writable"):
        check_output_file(folder / "new" / "cal.json")  # a folder to be made in it


def test_a_failed_temporary_file_names_the_output_not_its_hidden_name(tmp_path, monkeypatch):
    import tempfile as tempfile_module

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.json.abc123.part"))

    monkeypatch.setattr(tempfile_module, "mkstemp", refuse)
    with pytest.raises(OSError) as info:
        with atomic_output(tmp_path / "x.json") as tmp:
            tmp.write_text("{}")
    assert info.value.filename == str(tmp_path / "x.json") and info.value.errno == 13
    # NumPy's short write on a full disk names no file and no errno
    from casparks.io import named_os_error

    named = named_os_error(OSError("3276800 requested and 2096768 written"), tmp_path / "m.tif")
    assert named.errno == errno.ENOSPC and "No space left on device" in str(named) and named.filename.endswith("m.tif")


def test_an_imagej_file_without_a_unit_takes_its_pixel_size_from_the_tiff_resolution(tmp_path, movie_array):
    """An ImageJ file with a finterval and no unit, its XResolution in pixels per cm, was refused
    as having no pixel size: the ImageJ reader's frame interval ended the search."""
    path = tmp_path / "cm.tif"
    tifffile.imwrite(path, movie_array, imagej=True, resolution=(50000.0, 50000.0), resolutionunit="CENTIMETER",
                     metadata={"axes": "TYX", "finterval": 0.0068})
    assert "unit" not in tifffile.TiffFile(path).imagej_metadata
    assert read_units(path) == (pytest.approx(0.2), pytest.approx(6.8))


def test_a_log_appended_to_needs_itself_writable_not_its_folder(tmp_path, monkeypatch):
    import casparks.io as io_module
    from casparks.io import check_output_file

    log_file = tmp_path / "lab.log"
    log_file.write_text("casparks log\n")
    real_access = os.access
    monkeypatch.setattr(io_module.os, "access",
                        lambda p, mode: False if Path(p) == tmp_path else real_access(p, mode))
    assert check_output_file(log_file, overwrite=True, append=True) == log_file
    with pytest.raises(CasparksError, match="is not writable"):
        check_output_file(log_file, overwrite=True)  # replaced through a file in the folder


def test_a_movie_s_repr_is_one_line_not_its_pixels(tmp_path, movie_array):
    """A notebook printed 49 lines of pixel values for a Movie."""
    movie = Movie(movie_array, 0.2, 6.8, name="cell3")
    assert repr(movie) == "Movie('cell3', 12×8×16 at 0.2 µm, 6.8 ms, uint16)"
    read = read_movie(write_movie(tmp_path / "cell3.tif", movie))
    assert repr(read) == f"Movie('cell3', 12×8×16 at 0.2 µm, 6.8 ms, uint16, source={str(tmp_path / 'cell3.tif')!r})"


def test_a_movie_of_nested_lists_and_write_movie_s_wrong_arguments(tmp_path, movie_array):
    """Movie(list) and write_movie(path, array) or write_movie(movie, path) were AttributeErrors."""
    movie = Movie(movie_array.tolist(), 0.2, 6.8)
    assert isinstance(movie.data, np.ndarray) and np.array_equal(movie.data, movie_array)
    with pytest.raises(ValueError, match="a Movie is T×Y×X"):
        Movie([[1, 2], [3, 4]], 0.2, 6.8)
    with pytest.raises(CasparksError, match=r"write_movie writes a Movie .*got an array; pass casparks.Movie\(array, "):
        write_movie(tmp_path / "x.tif", movie_array)
    with pytest.raises(CasparksError, match=r"takes the path first, then the Movie; call write_movie\(path, movie\)"):
        write_movie(Movie(movie_array, 0.2, 6.8), tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()
