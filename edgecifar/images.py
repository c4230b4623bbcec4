"""Photos as the models' 32x32 RGB pixels: decoded safely, upright, 8-bit, center-cropped, BOX-resized.

Preprocessing, the way CIFAR-10's 32x32 images were made from larger photos:

1. the picture is turned upright as its EXIF orientation says (phones store photos sideways and say so);
2. it becomes 8-bit RGB with every sample's meaning kept: 16-bit samples are scaled to 8 bits (not clipped
   at 255, which turned a 16-bit greyscale PNG white), greyscale and palettes are expanded, CMYK and Lab are
   converted, and transparent pixels are shown over white, as an image viewer shows them. Pixels with no
   standard white level (32-bit integer or float) are refused in one line;
3. it is center-cropped to its largest square (objects keep their proportions) and resized to 32x32 (or
   to another size: the crop is then the largest box of that shape) with
   Pillow's **BOX** filter: every output pixel is the plain average of the source pixels it covers (an
   area downscale, no sharpening), in one step. Images already 32x32 pass through unchanged; an image
   smaller than 32x32 is upscaled, with a warning (its class then says little).

Images are untrusted input, decoded with bounded memory: only regular files are opened (a FIFO would block
forever), a JPEG is decoded at the smallest of 1/2, 1/4 or 1/8 scale that keeps 32x32 (libjpeg's DCT
scaling averages each block, as BOX would), and at most :data:`MAX_PIXELS` are decoded. Pillow decodes
damaged PNG and JPEG data without a word; the structure it skips (PNG checksums, JPEG markers) is checked
here and a damaged file is classified with a warning. Pillow's own warnings become warning lines naming
the file.

Pillow and numpy only (no TensorFlow, no runtime): ``edgecifar predict`` uses it on a device.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from edgecifar import INPUT_SHAPE
from edgecifar.errors import EdgeCifarError, one_line
from edgecifar.fdcapture import Captured

#: Pillow modes of 16-bit samples (PNG, TIFF): scaled to 8 bits, 65535 -> 255.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Formats whose 32-bit integer mode "I" holds 16-bit samples: Pillow scales a PGM's maxval to 65535
#: (and Pillow before 10 opened 16-bit greyscale PNGs as "I").
SIXTEEN_BIT_AS_I = frozenset({"PPM", "PNG"})
#: Formats Pillow registers but only identifies (its stub plugins, and MPEG's header): not photos. And EPS, which
#: Pillow renders by running Ghostscript in a subprocess when it is installed: an input must never run a program.
NOT_PHOTOS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG", "WMF", "EPS"})
#: What a transparent pixel is shown over.
BACKGROUND = (255, 255, 255)
#: The most pixels decoded from one image (after JPEG draft decoding). Turning the largest into 8-bit RGB
#: (an RGBA copy, the background, the composite...) takes about 15 bytes a pixel: this keeps predict under
#: 512 MiB. Pillow's own limit (89 megapixels, a warning only) is far above it.
MAX_PIXELS = 24_000_000
#: File types that are not image data: refused before they are opened (reading a FIFO blocks forever).
NOT_REGULAR = {stat.S_IFIFO: "a FIFO, not an image file", stat.S_IFCHR: "a character device, not an image file",
               stat.S_IFBLK: "a block device, not an image file", stat.S_IFSOCK: "a socket, not an image file",
               stat.S_IFDIR: "a folder, not an image"}


class ImageError(EdgeCifarError):
    """An image file that cannot be read."""


@contextlib.contextmanager
def open_regular(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file; an ImageError naming what it is otherwise.

    Opened without blocking and checked on the open descriptor, so a FIFO (whose open and read wait for a
    writer) is refused at once, and nothing can swap the file between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: a folder, not an image") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open ({exc.strerror or exc})") from None
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise ImageError(f"{path}: {NOT_REGULAR.get(kind, 'not a regular file')}")
    with os.fdopen(fd, "rb") as fp:
        yield fp


# --------------------------------------------------------------------------- damaged files Pillow decodes

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_BLOCK = 1 << 20


def _chunk_name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalpha() else "a"


def png_defect(fp: BinaryIO) -> str | None:
    """The first structural defect of a PNG file, or None: each chunk's checksum (CRC) and the IEND chunk.

    Pillow checks neither when it decodes: a flipped bit in a chunk decodes to a damaged picture, and a
    file cut inside its last chunk decodes as if whole. Reads in blocks (a chunk may be large)."""
    fp.seek(0)
    if fp.read(8) != PNG_SIGNATURE:
        return "no PNG signature"
    while len(head := fp.read(8)) == 8:
        length, kind = struct.unpack(">I4s", head)
        crc, left = zlib.crc32(kind), length
        while left and (block := fp.read(min(left, _BLOCK))):
            crc, left = zlib.crc32(block, crc), left - len(block)
        stored = fp.read(4)
        if left or len(stored) < 4:
            return f"cut short inside {_chunk_name(kind)} chunk"
        if struct.unpack(">I", stored)[0] != crc:
            return f"{_chunk_name(kind)} chunk's checksum (CRC) does not match its data"
        if kind == b"IEND":
            return None
    return "cut short: no IEND chunk"


class _Reader:
    """Bytes of a file read forward in blocks, for the JPEG marker walk (bounded memory on any file size)."""

    def __init__(self, fp: BinaryIO):
        self.fp, self.buf, self.pos, self.dropped = fp, b"", 0, 0

    def tell(self) -> int:
        return self.dropped + self.pos

    def available(self, n: int) -> bool:
        """True when ``n`` bytes can be read from the current position (reading a block more if needed)."""
        while len(self.buf) - self.pos < n:
            block = self.fp.read(_BLOCK)
            if not block:
                return False
            self.dropped += self.pos
            self.buf = self.buf[self.pos:] + block
            self.pos = 0
        return True

    def byte(self) -> int | None:
        if not self.available(1):
            return None
        self.pos += 1
        return self.buf[self.pos - 1]

    def take(self, n: int) -> bytes | None:
        if not self.available(n):
            return None
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def next_ff(self) -> bool:
        """Move just past the next 0xFF byte; False at the end of the file."""
        while (i := self.buf.find(b"\xff", self.pos)) < 0:
            self.pos = len(self.buf)
            if not self.available(1):
                return False
        self.pos = i + 1
        return True


def _marker(reader: _Reader) -> int | str:
    """The code of the marker that must start here (after any 0xFF fill bytes), or the defect found."""
    first = reader.byte()
    if first is not None and first != 0xFF:
        return f"stray byte 0x{first:02X} where a marker belongs"
    code = reader.byte()
    while code == 0xFF:
        code = reader.byte()
    return "cut short: no end-of-image marker" if code is None else code


def _scan_end(reader: _Reader) -> int | str:
    """Walk a scan's entropy-coded data to the marker that ends it: that marker's code, or the defect found
    (a 0xFF that is neither stuffed nor a marker, restart markers out of sequence, the end of the file)."""
    expected = 0
    while reader.next_ff():
        code = reader.byte()
        while code == 0xFF:              # fill bytes before a marker
            code = reader.byte()
        if code is None:
            break
        if code == 0x00:                 # a stuffed 0xFF data byte
            continue
        if 0xD0 <= code <= 0xD7:
            if code - 0xD0 != expected:
                return f"restart marker RST{code - 0xD0} where RST{expected} belongs"
            expected = (expected + 1) % 8
            continue
        return code
    return "cut short inside the image data: no end-of-image marker"


#: Markers that start a segment with a length, as libjpeg reads them: SOFn, DHT and DAC (0xC0-0xCF), SOS,
#: DQT, DNL, DRI, APPn and COM. Any other code where a marker belongs is damage (libjpeg: "unknown marker").
JPEG_SEGMENTS = frozenset([*range(0xC0, 0xD0), 0xDA, 0xDB, 0xDC, 0xDD, *range(0xE0, 0xF0), 0xFE])
#: Frame headers (SOFn) of Huffman-coded frames -> the fewest bits each 8x8 block takes in the image data:
#: a DC code and an end-of-block code in a sequential frame; the first progressive scan's DC code.
MIN_BITS_PER_BLOCK = {0xC0: 2, 0xC1: 2, 0xC2: 1}


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _short_of_data(frame: tuple[int, bytes] | None, data_bytes: int) -> str | None:
    """The defect of a frame whose image data is too short for the size its header claims (libjpeg fills
    the missing blocks with grey: a 3 KB file claiming 13300x13300 pixels decodes without an error), or None."""
    if frame is None or frame[0] not in MIN_BITS_PER_BLOCK or len(frame[1]) < 6:
        return None
    height, width, count = struct.unpack(">HHB", frame[1][1:6])
    factors = [(b >> 4, b & 15) for b in frame[1][7:6 + 3 * count:3]]
    if not height or not factors or min(min(f) for f in factors) == 0:
        return None
    hmax, vmax = max(h for h, _ in factors), max(v for _, v in factors)
    blocks = sum(_ceil_div(_ceil_div(width * h, hmax), 8) * _ceil_div(_ceil_div(height * v, vmax), 8)
                 for h, v in factors)
    needed = blocks * MIN_BITS_PER_BLOCK[frame[0]] // 8
    if data_bytes >= needed:
        return None
    return (f"{width}x{height} pixels claimed with {data_bytes:,} bytes of image data, less than the {needed:,} "
            "they take at least: the rest decodes as filler")


def jpeg_defect(fp: BinaryIO) -> str | None:
    """The first structural defect of a JPEG file up to its end-of-image marker, or None.

    libjpeg reports damaged data as warnings, and Pillow drops them: it decodes what it can. Checked here:
    the start marker, each segment's marker and length, nothing between segments, the markers inside the
    entropy-coded data, the end-of-image marker (data after it, a second picture or a maker's trailer, is
    allowed), and enough image data for the size the frame header claims. A flipped bit inside the
    entropy-coded data that breaks none of these shows in the picture only: no structural check sees it."""
    fp.seek(0)
    reader = _Reader(fp)
    if reader.take(2) != b"\xff\xd8":
        return "no start-of-image marker"
    frame, data_bytes, code = None, 0, _marker(reader)
    while not isinstance(code, str):
        if code == 0xD9:
            return _short_of_data(frame, data_bytes)
        if code not in JPEG_SEGMENTS:
            return f"marker 0x{code:02X} out of place"
        size = reader.take(2)
        length = struct.unpack(">H", size)[0] if size else 0
        payload = reader.take(length - 2) if length >= 2 else None
        if payload is None:
            return f"cut short inside a segment (marker 0x{code:02X})"
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):   # a frame header, not DHT/JPG/DAC
            frame = (code, payload)
        if code != 0xDA:
            code = _marker(reader)
            continue
        start = reader.tell()                # start of scan: entropy-coded data up to the next marker
        code = _scan_end(reader)
        data_bytes += reader.tell() - start
    return code


#: Pillow format -> the structural check of files Pillow decodes without checking (MPO: JPEG with more
#: pictures after the first).
DEFECT_CHECKS: dict[str, Callable[[BinaryIO], str | None]] = {"PNG": png_defect, "JPEG": jpeg_defect,
                                                              "MPO": jpeg_defect}


def eight_bit(samples: np.ndarray) -> np.ndarray:
    """16-bit samples scaled to 8 bits, 65535 -> 255, rounding to nearest: ``(x + 128) // 257`` equals
    ``rint(x / 257)`` for every x in 0..65535, in integers (4 bytes a pixel, not float64's 8). Values
    outside 0..65535 (32-bit mode "I") are clipped first."""
    if samples.dtype.kind != "u" or samples.dtype.itemsize > 2:
        samples = np.clip(samples, 0, 65535)
    wide = samples.astype(np.uint32)
    wide += 128
    wide //= 257
    return wide.astype(np.uint8)


def to_rgb(img, fmt: str | None, path: Path):
    """A Pillow image of any mode as 8-bit RGB with the same picture (see the module doc, step 2)."""
    from PIL import Image

    mode = img.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and fmt in SIXTEEN_BIT_AS_I):
        return Image.fromarray(eight_bit(np.asarray(img))).convert("RGB")
    if mode in ("I", "F"):
        kind = "32-bit integer" if mode == "I" else "floating-point"
        raise ImageError(f"{path}: {kind} pixels have no standard white level; save it with 8 or 16 bits per channel")
    if "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info:
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", img.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: str | Path, size: int | tuple[int, int] = INPUT_SHAPE[0],
               warn: Callable[[str], None] | None = None) -> np.ndarray:
    """One image file (PNG, JPEG, anything Pillow reads) as uint8 [height, width, 3]; see the module doc.

    ``size`` is the side of the square output, or (height, width): the largest centered box of that shape is
    cropped (the largest square for a square output). ``warn`` receives one-line warnings naming the file: an
    image smaller than the output, damaged data Pillow decoded anyway, and Pillow's own warnings (corrupt EXIF
    data...)."""
    from PIL import Image

    path = Path(path)
    height, width = (size, size) if isinstance(size, int) else size
    with open_regular(path) as fp, warnings.catch_warnings(record=True) as caught, Captured(2) as native:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # moot: MAX_PIXELS refuses far less
        rgb, defect = _decode(fp, path, max(height, width))
    notes = [f"{path}: {' '.join(str(w.message).split())}" for w in caught]
    if native.text.strip():  # libtiff and other decoders write their warnings straight to file descriptor 2
        notes.append(f"{path}: {native_summary(native.text)}")
    if defect:
        notes.append(f"{path}: damaged file ({defect}): classified as decoded, the picture may be wrong")
    w, h = rgb.size
    if min(w, h) < 1:
        raise ImageError(f"{path}: empty image ({w}x{h})")
    box = center_box(w, h, width, height)
    if box[2] - box[0] < width or box[3] - box[1] < height:
        notes.append(f"{path}: {w}x{h} pixels, smaller than {width}x{height}: upscaled, so its class says little")
    for note in notes if warn else ():
        warn(note)
    if (w, h) != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BOX, box=box)
    return np.asarray(rgb, dtype=np.uint8)


def center_box(w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The largest centered (left, top, right, bottom) box of a w x h picture with the output's proportions
    (width x height), in whole pixels: the largest square for a square output."""
    if w * height <= h * width:
        cw, ch = w, max(1, w * height // width)
    else:
        cw, ch = max(1, h * width // height), h
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def native_summary(text: str, most: int = 3) -> str:
    """What a native decoder wrote, as one line: its distinct lines in order (libtiff repeats one per strip)."""
    distinct = list(dict.fromkeys(" ".join(line.split()) for line in text.splitlines() if line.strip()))
    more = f" (and {len(distinct) - most} more)" if len(distinct) > most else ""
    return "; ".join(distinct[:most]) + more


def _decode(fp: BinaryIO, path: Path, size: int):
    """(8-bit RGB picture, upright, before cropping; the structural defect of its file or None). ``size``: the
    output's longest side (a JPEG's draft keeps both sides at least that long, whichever way EXIF turns it)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(fp, formats=photo_formats()) as img:
            claimed = img.size
            img.draft(None, (size, size))   # JPEG: decode at 1/2..1/8 scale, still at least size x size
            _check_pixels(img, claimed, path)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            rgb = to_rgb(img, img.format, path)
            check = DEFECT_CHECKS.get(img.format or "")
        return rgb, check(fp) if check else None
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: too many pixels to decode ({one_line(exc)})") from None
    except Image.UnidentifiedImageError:  # Pillow's message names the open file object, not the file
        raise ImageError(f"{path}: not a readable image (no image format Pillow knows)") from None
    except Exception as exc:  # OSError, SyntaxError...; on hostile files, anything
        detail = str(exc).splitlines()[0] if str(exc) else ""
        raise ImageError(f"{path}: not a readable image ({type(exc).__name__}: {detail})") from None


def _check_pixels(img, claimed: tuple[int, int], path: Path) -> None:
    """Refuse, before decoding, an image with more than :data:`MAX_PIXELS` pixels to decode."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        scaled = f" (still {w}x{h} at the smallest JPEG scale)" if (w, h) != claimed else ""
        raise ImageError(f"{path}: {claimed[0]}x{claimed[1]} pixels{scaled}, more than predict decodes "
                         f"({MAX_PIXELS / 1e6:g} megapixels); scale it down first")


def photo_formats() -> list[str]:
    """The Pillow formats an image may be opened as, whatever its name says: never one of NOT_PHOTOS."""
    from PIL import Image

    Image.init()
    return [fmt for fmt in Image.OPEN if fmt not in NOT_PHOTOS]


def photo_suffixes() -> frozenset[str]:
    """File suffixes of the image formats Pillow can open (what a folder argument is searched for)."""
    from PIL import Image

    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN and fmt not in NOT_PHOTOS)
