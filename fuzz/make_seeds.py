#!/usr/bin/python3
"""Writes the fuzz seeds made in Python (fuzz/make_seeds.cpp makes the checkpoint and TFRecord
ones): small valid files and a few edge cases per harness, under fuzz/corpus/<harness>/.

Needs Debian's python3-torch (1.13) and python3-pil: run with /usr/bin/python3.
Usage: fuzz/make_seeds.py [corpus folder]   (default: fuzz/corpus next to this script)
"""
import gzip
import io
import json
import os
import struct
import sys
import zipfile
import zlib

import torch
from PIL import Image

root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")


def put(harness, name, data):
    folder = os.path.join(root, harness)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def idx(magic_type, shape, payload):
    header = struct.pack(">HBB", 0, magic_type, len(shape)) + b"".join(
        struct.pack(">I", d) for d in shape)
    return header + payload


# ---- IDX (fuzz_idx: the file as it is; fuzz_idx_gz: contents, gzip'd by the harness) ----
images = idx(0x08, [2, 28, 28], bytes((i * 7) % 256 for i in range(2 * 28 * 28)))
labels = idx(0x08, [3], bytes([0, 9, 4]))
small = idx(0x08, [1, 2, 3], bytes(range(6)))
for harness in ("idx", "idx_gz"):
    put(harness, "images", images)
    put(harness, "labels", labels)
    put(harness, "small", small)
    put(harness, "huge-claim", idx(0x08, [1000000, 1000000, 1], b""))  # 10^12 samples
    put(harness, "short", idx(0x08, [4], bytes([1, 2])))
    put(harness, "long", idx(0x08, [2], bytes([1, 2, 3])))
put("idx", "images.gz", gzip.compress(images, mtime=0))
put("idx", "labels.gz", gzip.compress(labels, mtime=0))
put("idx", "small.gz", gzip.compress(small, mtime=0))
put("idx", "cut.gz", gzip.compress(images, mtime=0)[:200])

# ---- images ----
def encode(img, fmt, **kw):
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


rgb = Image.new("RGB", (5, 4))
rgb.putdata([((x * 50) % 256, (y * 60) % 256, (x * y * 20) % 256) for y in range(4) for x in range(5)])
gray = rgb.convert("L")
put("jpeg", "rgb.jpg", encode(rgb, "JPEG", quality=90))
put("jpeg", "gray.jpg", encode(gray, "JPEG"))
put("jpeg", "progressive.jpg", encode(rgb.resize((17, 9)), "JPEG", progressive=True))
put("jpeg", "cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"))
put("jpeg", "subsampled.jpg", encode(rgb.resize((16, 16)), "JPEG", subsampling=2))
put("jpeg", "truncated.jpg", encode(rgb, "JPEG")[:-40])
put("png", "rgb.png", encode(rgb, "PNG"))
put("png", "gray.png", encode(gray, "PNG"))
put("png", "rgba.png", encode(rgb.convert("RGBA"), "PNG"))
put("png", "palette.png", encode(rgb.convert("P", palette=Image.ADAPTIVE, colors=4), "PNG"))
put("png", "gray1.png", encode(gray.convert("1"), "PNG"))
# PIL does not write interlaced PNGs: a 3x3 Adam7 one by hand (passes 1, 4, 5, 6, 7 are not empty).
def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
rows = [[(0, 0)], [(2, 0)], [(0, 2), (2, 2)], [(1, 0)], [(1, 2)], [(0, 1), (1, 1), (2, 1)]]
raw = b"".join(b"\0" + bytes(c for (x, y) in row for c in (x * 90, y * 90, 200)) for row in rows)
put("png", "interlaced.png", b"\x89PNG\r\n\x1a\n" +
    png_chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 3, 8, 2, 0, 0, 1)) +
    png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))
put("png", "gray16.png", encode(gray.convert("I;16"), "PNG"))
put("png", "la.png", encode(gray.convert("LA"), "PNG"))
put("png", "truncated.png", encode(rgb, "PNG")[:-20])

# ---- torch.save state dicts (zip format) and their data.pkl ----
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
dicts = {
    "linear-bn.pt": net.state_dict(),
    "mixed-dtypes.pt": {"a": torch.arange(3, dtype=torch.int64), "b": torch.ones(2, 2).half(),
                        "c": torch.tensor([True, False]), "d": torch.zeros(0, 3)},
    "shared-storage.pt": (lambda t: {"whole": t, "view": t[1:3], "strided": t.view(2, 3).t()})(
        torch.arange(6.0)),
    "parameter.pt": {"w": torch.nn.Parameter(torch.ones(2))},
}
for name, sd in dicts.items():
    out = io.BytesIO()
    torch.save(sd, out)
    data = out.getvalue()
    put("torch_state_dict", name, data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        put("torch_pickle", name.replace(".pt", ".pkl"), z.read(pkl))
legacy = io.BytesIO()
torch.save({"w": torch.ones(1)}, legacy, _use_new_zipfile_serialization=False)
put("torch_state_dict", "legacy.pt", legacy.getvalue())
whole = io.BytesIO()
torch.save(torch.nn.Linear(1, 1), whole)
put("torch_state_dict", "whole-model.pt", whole.getvalue())
# Pickles that refer to the harness's own storages (data/0: 16 bytes, data/1: 24 bytes), written
# by hand: protocol 2, an OrderedDict of two float tensors.
def storage(key, numel):
    return (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX" + struct.pack("<I", len(key)) +
            key.encode() + b"X\x03\x00\x00\x00cpuK" + bytes([numel]) + b"tQ")
def tensor(key, numel, size):
    return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage(key, numel) + b"K\x00K" +
            bytes([size]) + b"\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\x00R")
put("torch_pickle", "harness-storages.pkl",
    b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a" + tensor("0", 4, 4) +
    b"X\x01\x00\x00\x00b" + tensor("1", 6, 6) + b"u.")

# ---- safetensors ----
def safetensors(entries, data, metadata=None, pad=True):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data
put("safetensors", "two.safetensors", safetensors(
    {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
     "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}},
    bytes(24), {"format": "pt"}))
put("safetensors", "dtypes.safetensors", safetensors(
    {"h": {"dtype": "F16", "shape": [2], "data_offsets": [0, 4]},
     "z": {"dtype": "BF16", "shape": [1], "data_offsets": [4, 6]},
     "u": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]},
     "e": {"dtype": "BOOL", "shape": [0], "data_offsets": [8, 8]}}, bytes(8)))
put("safetensors", "empty.safetensors", safetensors({}, b""))
put("safetensors", "huge-shape.safetensors", safetensors(
    {"w": {"dtype": "F64", "shape": [1000000, 1000000], "data_offsets": [0, 8]}}, bytes(8)))
put("safetensors", "huge-header.safetensors", struct.pack("<Q", 10**12) + b"{}")

# ---- image lists (CSV) ----
put("image_list", "plain.csv", b"path,label\na/1.jpg,0\nb/2.png,1\n/abs/3.jpg,2\n")
put("image_list", "quoted.csv", b'"with ""quotes"", and comma.jpg",3\r\n"x.png","4"\r\n')
put("image_list", "bad.csv", b"a.jpg,-1\nb.jpg\n\"open,2\n")
put("image_list", "big-label.csv", b"a.jpg,99999999999999999999999\n")
# ---- packed caches (include/frugal/data/packed.h; src/data/packed.cpp, Note [Packed cache
# layout]): written here from the documented layout, independently of frugal's writer ----
def packed(samples, classes, storage, color=0):
    """samples: (payload bytes, label, height, width, channels, format) in order."""
    page = 4096
    out = bytearray(b"FRUGALPK" + struct.pack("<I", 1))
    out += bytes(page - len(out))
    entries = []
    for payload, label, h, w, c, fmt in samples:
        end = len(out)
        nxt = (end + page - 1) // page * page
        at = nxt if len(payload) > page or (end // page != (end + len(payload) - 1) // page) else end
        out += bytes(at - end)
        entries.append(struct.pack("<QQqIIIHBB", at, len(payload), label, h, w,
                                   zlib.crc32(payload), c, fmt, 0))
        out += payload
    data_size = len(out) - page
    out += bytes((len(out) + 7) // 8 * 8 - len(out))
    table = b"".join(entries)
    strings = b"".join(struct.pack("<I", len(n)) + n for n in
                       [c.encode() for c in classes] + [b"s/%d" % i for i in range(len(samples))])
    table_offset = len(out)
    out += table + strings
    head = struct.pack("<8sIIQQQQQQQIIBBHIQQ20x", b"FRUGALPK", 1, page,
                       len(out) + 128, len(samples), len(classes), table_offset, len(table),
                       table_offset + len(table), len(strings), zlib.crc32(table),
                       zlib.crc32(strings), storage, color, 90, 0, page, data_size)
    out += head + struct.pack("<I", zlib.crc32(head))
    return bytes(out)


tiny = rgb.resize((6, 5))
put("packed", "raw.fpk", packed([(tiny.tobytes(), 0, 5, 6, 3, 0),
                                 (rgb.resize((3, 2)).tobytes(), 1, 2, 3, 3, 0)],
                                ["a", "b"], storage=2))
put("packed", "gray.fpk", packed([(tiny.convert("L").tobytes(), 1, 5, 6, 1, 0)], ["x", "y"],
                                 storage=2, color=1))
put("packed", "jpeg.fpk", packed([(encode(tiny, "JPEG"), 0, 5, 6, 3, 1),
                                  (encode(gray.resize((4, 4)), "JPEG"), 0, 4, 4, 3, 1)],
                                 ["only"], storage=1))
print("seeds written under", root)
