"""Write Leica LIF files for tests, in the layout of LAS X's (liffile reads them; nothing writes them).

A LIF file is a UTF-16 XML header that describes a tree of elements (a project holding images),
followed by one memory block per element: a block's id ties it to an element's ``<Memory>``.
Each image lists its dimensions (DimID 1 x, 2 y, 3 z, 4 t; length from the first to the last
pixel or frame, in m or s; BytesInc its stride) and its channels (one ChannelDescription each,
BytesInc the channel's offset in bytes). Channels are planes between y and the next dimension,
as LAS X stores them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

#: DimID of each axis letter (Leica's codes)
DIM_IDS = {"X": 1, "Y": 2, "Z": 3, "T": 4}


@dataclass
class LifImage:
    """One image: ``data`` with axes ``axes`` (slowest first, e.g. "TCYX", "TYX", "TX", "ZYX");
    ``lengths``: axis letter → (length from first to last element, unit) as LAS X writes it
    (x and y in m, t in s); ``folder``: the collection it sits in (path within the project)."""

    name: str
    data: np.ndarray
    axes: str
    lengths: dict[str, tuple[float, str]] = field(default_factory=dict)
    folder: str = ""


def _dimensions_xml(image: LifImage) -> tuple[str, str]:
    data = image.data
    itemsize = data.dtype.itemsize
    sizes = dict(zip(image.axes, data.shape))
    n_channels = sizes.get("C", 1)
    stride = itemsize
    dims = []
    channel_bytes = None
    for axis in reversed(image.axes):  # fastest first
        if axis == "C":
            channel_bytes = stride
            stride *= n_channels
            continue
        length, unit = image.lengths.get(axis, (0.0, "m" if axis != "T" else "s"))
        dims.append(f'<DimensionDescription DimID="{DIM_IDS[axis]}" NumberOfElements="{sizes[axis]}" Origin="0" '
                    f'Length="{length!r}" Unit="{unit}" BitInc="0" BytesInc="{stride}"/>')
        stride *= sizes[axis]
    resolution = 8 * itemsize
    data_type = 1 if data.dtype.kind == "f" else 0
    channels = [f'<ChannelDescription DataType="{data_type}" ChannelTag="0" Resolution="{resolution}" '
                f'NameOfMeasuredQuantity="" Min="0" Max="{2**resolution - 1}" Unit="" LUTName="Green" '
                f'IsLUTInverted="0" BytesInc="{c * (channel_bytes or 0)}" BitInc="0"/>' for c in range(n_channels)]
    return "".join(channels), "".join(dims)


def _image_element(image: LifImage, block: str) -> str:
    channels, dims = _dimensions_xml(image)
    return (f'<Element Name={quoteattr(image.name)} Visibility="1" CopyOption="1" UniqueID="{block}">'
            f'<Data><Image TextDescription=""><ImageDescription><Channels>{channels}</Channels>'
            f'<Dimensions>{dims}</Dimensions></ImageDescription></Image></Data>'
            f'<Memory Size="{image.data.nbytes}" MemoryBlockID="{block}"/><Children/></Element>')


def write_lif(path: str | Path, images: list[LifImage], project: str = "project") -> Path:
    """Write ``images`` as one LIF project (version 2 memory blocks); folders become collections."""
    blocks = [("MemBlock_0", b"")]
    folders: dict[str, list[str]] = {}
    for k, image in enumerate(images, 1):
        block = f"MemBlock_{k}"
        blocks.append((block, np.ascontiguousarray(image.data).astype(image.data.dtype.newbyteorder("<")).tobytes()))
        folders.setdefault(image.folder, []).append(_image_element(image, block))
    children = "".join(folders.pop("", []))
    for k, (folder, elements) in enumerate(folders.items(), len(images) + 1):
        block = f"MemBlock_{k}"
        blocks.append((block, b""))
        children += (f'<Element Name={quoteattr(folder)} Visibility="1" CopyOption="1" UniqueID="{block}">'
                     f'<Data><Collection ChildTypeTest="AcceptAll"/></Data>'
                     f'<Memory Size="0" MemoryBlockID="{block}"/><Children>{"".join(elements)}</Children></Element>')
    xml = (f'<LMSDataContainerHeader Version="2"><Element Name={quoteattr(project)} Visibility="1" CopyOption="1">'
           f'<Data><Experiment Path="C:\\data\\{project}.lif"/></Data><Memory Size="0" MemoryBlockID="MemBlock_0"/>'
           f'<Children>{children}</Children></Element></LMSDataContainerHeader>')
    text = xml.encode("utf-16-le")
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IIBI", 0x70, len(text) + 5, 0x2A, len(xml)))
        fh.write(text)
        for name, payload in blocks:
            label = name.encode("utf-16-le")
            fh.write(struct.pack("<IIBQBI", 0x70, 0, 0x2A, len(payload), 0x2A, len(name)))
            fh.write(label)
            fh.write(payload)
    return Path(path)
