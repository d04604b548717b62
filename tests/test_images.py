"""desktop.images: decoding real and generated files, orientation by pixels, the guards.

Generated files are written to tmp_path; the real-file tests read ../shared/data and skip
with a reason when it is absent (a fresh clone has no ../shared).
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct
import time
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, JpegImagePlugin
from reliability_helpers import UNDO

from desktop import images
from desktop.images import ImageError, ImageMeta

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"
needs_shared = pytest.mark.skipif(
    not (DATA / "awkward").is_dir() or not (DATA / "photos").is_dir(),
    reason=f"real test images not found at {DATA} (../shared is absent in a fresh clone)",
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)
# UNDO: the Pillow transposes that undo each EXIF orientation, written out in the test
# helpers independently of desktop.images.
# ...and what a camera stores so that undoing gives the upright picture (6 and 8 swap).
DO = {**UNDO, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


# --- helpers ------------------------------------------------------------------------------


def quadrants(w: int = 64, h: int = 48) -> Image.Image:
    """Upright test card: red top-left, green top-right, blue bottom-left, white bottom-right."""
    im = Image.new("RGB", (w, h), WHITE)
    im.paste(RED, (0, 0, w // 2, h // 2))
    im.paste(GREEN, (w // 2, 0, w, h // 2))
    im.paste(BLUE, (0, h // 2, w // 2, h))
    return im


def assert_quadrants(im: Image.Image, tol: int = 40) -> None:
    w, h = im.size
    for (x, y), want in zip([(1, 1), (3, 1), (1, 3), (3, 3)], [RED, GREEN, BLUE, WHITE], strict=True):
        got = im.getpixel((x * w // 4, y * h // 4))
        assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= tol, (x, y, got, want)


def save_jpeg(path: Path, im: Image.Image, quality: int = 95, **exif_tags: object) -> Path:
    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    for name, value in exif_tags.items():
        tag = getattr(ExifTags.Base, name)
        (sub if tag >= 0x8000 else exif)[tag] = value
    im.save(path, "JPEG", quality=quality, exif=exif.tobytes())
    return path


def mad(a: Image.Image, b: Image.Image) -> float:
    if a.size != b.size:
        return float("inf")
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def assert_same_picture(ref: Image.Image, got: Image.Image, name: str, close: float | None = None) -> None:
    """`got` must match `ref` better than any other rotation/flip of `ref` does."""
    ref = ref.convert("RGB")
    got = got.resize(ref.size, Image.Resampling.BILINEAR) if got.size != ref.size else got
    scores = {k: mad(got, ref if t is None else ref.transpose(t)) for k, t in UNDO.items()}
    best = min(scores, key=scores.__getitem__)
    assert best == 1, f"{name}: looks like the reference turned by orientation {best}: {scores}"
    if close is not None:
        assert scores[1] < close, f"{name}: differs from the reference by {scores[1]:.1f}"


# --- generated files ----------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_by_pixels(tmp_path: Path, orientation: int) -> None:
    stored = quadrants() if DO[orientation] is None else quadrants().transpose(DO[orientation])
    path = save_jpeg(tmp_path / f"o{orientation}.jpg", stored, Orientation=orientation)

    im, meta = images.open_image(path)
    assert im.mode == "RGB" and im.size == (64, 48)
    assert_quadrants(im)
    assert (meta.width, meta.height, meta.orientation) == (64, 48, orientation)
    assert images.read_meta(path) == meta

    thumb = images.make_thumbnail(path, 32)
    assert thumb.size == (32, 24)
    assert_quadrants(thumb)


def test_read_meta_exif_fields(tmp_path: Path) -> None:
    path = save_jpeg(
        tmp_path / "a.jpg",
        quadrants(),
        Make="Canon\x00",
        Model="  Canon EOS 40D\x00 ",
        DateTimeOriginal="2008:05:30 15:56:01",
        OffsetTimeOriginal="+02:00",
        DateTime="2009:01:01 00:00:00",
    )
    meta = images.read_meta(path)
    assert meta == ImageMeta(64, 48, "JPEG", "2008-05-30T15:56:01+02:00", "Canon EOS 40D", None, 1)

    path = save_jpeg(
        tmp_path / "b.jpg", quadrants(), Make="NIKON CORPORATION", Model="NIKON D70",
        DateTimeOriginal="0000:00:00 00:00:00", DateTime="2007:01:02 03:04:05",
    )  # fmt: skip
    meta = images.read_meta(path)
    assert (meta.camera, meta.taken_at) == ("NIKON D70", "2007-01-02T03:04:05")

    path = save_jpeg(tmp_path / "c.jpg", quadrants(), Make="Apple", Model="iPhone 13", DateTime="garbage")
    meta = images.read_meta(path)
    assert (meta.camera, meta.taken_at, meta.orientation) == ("Apple iPhone 13", None, None)

    path = save_jpeg(tmp_path / "d.jpg", quadrants(), Orientation=0, DateTimeOriginal="2010:02:30 10:00:00")
    meta = images.read_meta(path)
    assert (meta.orientation, meta.taken_at, meta.camera) == (None, None, None)  # 30 February


@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
def test_broken_exif_never_raises(tmp_path: Path) -> None:
    path = tmp_path / "broken_exif.jpg"
    quadrants().save(path, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00\x01" * 40)
    meta = images.read_meta(path)
    assert (meta.width, meta.height, meta.camera, meta.taken_at) == (64, 48, None, None)
    im, _ = images.open_image(path)
    assert_quadrants(im)


def test_draft_decodes_large_jpeg_small_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = np.linspace(0, 255, 3000, dtype=np.float32)
    y = np.linspace(0, 255, 2000, dtype=np.float32)[:, None]
    arr = np.stack([np.broadcast_to(x, (2000, 3000)), np.broadcast_to(y, (2000, 3000)), (x + y) % 256], -1)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=90)

    drafted: list[tuple[int, int]] = []
    original_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int] | None) -> object:
        result = original_draft(self, mode, size)
        drafted.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    im, meta = images.open_image(path, max_side=256)
    assert drafted == [(375, 250)]  # libjpeg decoded at 1/8 scale, still >= the target
    assert im.size == (256, 171) and (meta.width, meta.height) == (3000, 2000)
    assert images.make_thumbnail(path, 100).size == (100, 67)
    enc = images.load_for_encoding(path, 256)
    assert enc.size == (384, 256)  # the short side is what encoders crop from
    monkeypatch.undo()

    def best_of_3(max_side: int | None) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            images.open_image(path, max_side=max_side)
            times.append(time.perf_counter() - t)
        return min(times)

    # Huffman decoding is not scaled, so the gain is ~1.5-3x, not 64x; without draft it would be slower.
    assert best_of_3(256) < best_of_3(None)


def test_load_for_encoding_keeps_short_side_and_caps_panoramas(tmp_path: Path) -> None:
    Image.new("RGB", (1000, 1500), "gray").save(tmp_path / "portrait.png")
    Image.new("RGB", (6000, 300), "gray").save(tmp_path / "pano.png")
    Image.new("RGB", (100, 80), "gray").save(tmp_path / "small.png")
    assert images.load_for_encoding(tmp_path / "portrait.png", 224).size == (224, 336)
    assert images.load_for_encoding(tmp_path / "pano.png", 100).size == (800, 40)  # capped at 8x
    assert images.load_for_encoding(tmp_path / "small.png", 256).size == (100, 80)  # never upscaled
    assert images.make_thumbnail(tmp_path / "small.png", 256).size == (100, 80)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    im, meta = images.open_image(tmp_path / "cmyk.jpg")
    assert im.mode == "RGB"
    r, g, b = im.getpixel((16, 16))
    assert r > 220 and g < 40 and b < 40


def test_16bit_png_keeps_its_tones(tmp_path: Path) -> None:
    arr = np.full((16, 32), 32768, np.uint16)
    arr[:, :8], arr[:, -8:] = 0, 65535
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    im, _ = images.open_image(tmp_path / "g16.png")
    px = np.asarray(im)
    assert im.mode == "RGB"
    assert px[:, 8:-8].min() >= 127 and px[:, 8:-8].max() <= 128  # mid-grey, not clipped to white
    assert px[:, :8].max() == 0 and px[:, -8:].min() == 255


def test_32bit_float_tiff_is_stretched(tmp_path: Path) -> None:
    arr = np.linspace(-3.0, 3.0, 64 * 8, dtype=np.float32).reshape(8, 64)
    Image.fromarray(arr, "F").save(tmp_path / "f.tif")
    px = np.asarray(images.open_image(tmp_path / "f.tif")[0])
    assert px.min() == 0 and px.max() == 255


def test_palette_with_transparency_and_rgba_composite_on_white(tmp_path: Path) -> None:
    pal = Image.new("P", (32, 16), 0)
    pal.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    pal.paste(1, (16, 0, 32, 16))
    pal.save(tmp_path / "p.png", transparency=0)
    pal.save(tmp_path / "p.gif", transparency=0)
    for name in ("p.png", "p.gif"):
        im, _ = images.open_image(tmp_path / name)
        assert im.mode == "RGB"
        assert im.getpixel((4, 8)) == WHITE, name  # transparent blue -> white, not blue or black
        assert im.getpixel((24, 8)) == RED, name

    rgba = Image.new("RGBA", (32, 16), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 128), (16, 0, 32, 16))
    rgba.save(tmp_path / "rgba.png")
    im, _ = images.open_image(tmp_path / "rgba.png")
    assert im.getpixel((4, 8)) == WHITE
    assert all(125 <= c <= 129 for c in im.getpixel((24, 8)))  # 50% black over white

    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png")
    assert images.open_image(tmp_path / "la.png")[0].getpixel((4, 4)) == WHITE


def test_animated_gif_gives_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in (RED, GREEN, BLUE)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    im, meta = images.open_image(tmp_path / "anim.gif")
    assert meta.frames == 3 and meta.format == "GIF"
    assert im.getpixel((10, 5)) == RED


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am not a JPEG\n"), "not an image (no decoder recognises it)"),
        (lambda p: p.write_bytes(_jpeg_bytes()[:3000]), "truncated file"),
        (lambda p: None, "file vanished"),
        (lambda p: p.mkdir(), "not a regular file"),
    ],
    ids=["empty", "text", "truncated", "missing", "directory"],
)
def test_bad_files_raise_image_error(tmp_path: Path, make: Callable[[Path], object], reason: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)
    calls = [images.open_image, images.load_for_encoding, images.make_thumbnail]
    if reason != "truncated file":  # read_meta reads the header only, by design
        calls.append(images.read_meta)
    for call in calls:
        with pytest.raises(ImageError) as info:
            call(path, 64) if call is images.make_thumbnail else call(path)
        assert info.value.reason == reason
        assert info.value.path == str(path) and str(path) in str(info.value) and reason in str(info.value)


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_decompression_bomb_header(tmp_path: Path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)  # claims 1e10 RGB pixels
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    for call in (images.open_image, images.read_meta):
        with pytest.raises(ImageError, match="decompression bomb: 1.0e10 pixels"):
            call(path)


def test_pixel_limit_is_ours(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quadrants().save(tmp_path / "q.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match=r"decompression bomb: 3\.1e3 pixels"):
        images.open_image(tmp_path / "q.png")
    assert Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS >= 250_000_000  # 100 MP cameras exist


def test_content_hash(tmp_path: Path) -> None:
    data = _jpeg_bytes()
    (tmp_path / "a.jpg").write_bytes(data)
    (tmp_path / "b.jpg").write_bytes(data)
    (tmp_path / "c.jpg").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    h = images.content_hash(tmp_path / "a.jpg")
    assert h == hashlib.blake2b(data, digest_size=16).hexdigest() and len(h) == 32
    assert images.content_hash(str(tmp_path / "b.jpg"), chunk=1000) == h
    assert images.content_hash(tmp_path / "c.jpg") != h
    with pytest.raises(ImageError) as info:
        images.content_hash(tmp_path / "gone.jpg")
    assert info.value.reason == "file vanished"


def test_is_image_path() -> None:
    for name in ("a.jpg", "B.JPEG", "c.HEIC", "d.heif", "e.avif", "f.Tiff", "g.png", "h.webp", "i.gif"):
        assert images.is_image_path(name) and images.is_image_path(Path("/x") / name), name
    for name in ("README", "a.txt", "MANIFEST.json", "raw.dng", "._IMG_0001.jpg", "jpg", "dump"):
        assert not images.is_image_path(name), name
    assert all(e.startswith(".") and e == e.lower() for e in images.IMAGE_EXTENSIONS)


def test_image_error_pickles() -> None:
    err = pickle.loads(pickle.dumps(ImageError("/p/x.jpg", "truncated file")))
    assert (err.path, err.reason, str(err)) == ("/p/x.jpg", "truncated file", "/p/x.jpg: truncated file")


# --- real files from ../shared --------------------------------------------------------------


def _check_opens_or_explains(path: Path, reasons: Counter[str]) -> bool:
    try:
        im, meta = images.open_image(path, max_side=256)
    except ImageError as e:
        assert e.reason, path
        reasons[e.reason.split(" (")[0]] += 1
        return False
    assert im.mode == "RGB" and 1 <= max(im.size) <= 256, (path, im.mode, im.size)
    assert meta.width > 0 and meta.height > 0 and meta.frames >= 1, (path, meta)
    return True


def _pillow_opens(path: Path) -> bool:
    try:
        with Image.open(path) as im:
            im.load()
        return True
    except Exception:
        return False


@needs_shared
@pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # Pillow warns about the corrupt ones; expected
def test_every_awkward_file_opens_or_raises_image_error() -> None:
    manifest = json.loads((DATA / "awkward" / "MANIFEST.json").read_text())
    reasons: Counter[str] = Counter()
    mismatches = []
    for entry in manifest:  # every file, not only photo extensions: open_image must cope with any
        path = DATA / "awkward" / entry["file"]
        ok = _check_opens_or_explains(path, reasons)
        if ok != _pillow_opens(path):  # plain Pillow (same pixel limit) is the yardstick
            mismatches.append((entry["file"], entry["pillow13"], ok))
    print(f"awkward: {len(manifest) - reasons.total()} open, {reasons.total()} refused: {dict(reasons)}")
    assert not mismatches, f"we refuse what Pillow opens, or the reverse: {mismatches}"
    assert len(manifest) - reasons.total() >= 170


@needs_shared
@pytest.mark.filterwarnings("ignore::UserWarning:PIL")
def test_every_real_photo_opens_or_raises_image_error() -> None:
    files = sorted(p for p in (DATA / "photos").rglob("*") if p.is_file() and images.is_image_path(p))
    assert len(files) > 100
    reasons: Counter[str] = Counter()
    opened = sum(_check_opens_or_explains(p, reasons) for p in files)
    print(f"photos: {opened} open, {reasons.total()} refused: {dict(reasons)}")
    assert opened >= len(files) - 3, reasons  # real camera files, incl. HEIC and broken EXIF


@needs_shared
@pytest.mark.parametrize("shape", ["Landscape", "Portrait"])
def test_real_orientation_0_to_8_decode_to_the_same_picture(shape: str) -> None:
    folder = DATA / "photos" / "orientation"
    ref, ref_meta = images.open_image(folder / f"{shape}_1.jpg", max_side=96)
    assert (ref_meta.width > ref_meta.height) == (shape == "Landscape")
    for k in range(0, 9):
        im, meta = images.open_image(folder / f"{shape}_{k}.jpg", max_side=96)
        assert (meta.width, meta.height) == (ref_meta.width, ref_meta.height)
        assert_same_picture(ref, im, f"{shape}_{k}", close=3.0)


@needs_shared
def test_other_real_orientation_sets() -> None:
    aw, ex = DATA / "awkward", DATA / "photos" / "exif-samples" / "jpg" / "orientation"
    ref = images.open_image(aw / "g4_orientation_1.tif")[0]  # TIFF tags, not JPEG EXIF
    for k in range(2, 9):
        im, meta = images.open_image(aw / f"g4_orientation_{k}.tif")
        assert (meta.width, meta.height, meta.orientation) == (*ref.size, k)
        assert_same_picture(ref, im, f"g4 {k}", close=1.0)
    ref = images.open_image(aw / "hopper.gif")[0]
    for k in range(2, 9):
        for ext in ("jpg", "webp"):
            assert_same_picture(
                ref, images.open_image(aw / f"hopper_orientation_{k}.{ext}")[0], f"hopper {k}"
            )
    for shape in ("landscape", "portrait"):  # each photo carries its own digit, hence no `close`
        ref = images.open_image(ex / f"{shape}_1.jpg", max_side=96)[0]
        for k in range(2, 9):
            assert_same_picture(
                ref, images.open_image(ex / f"{shape}_{k}.jpg", max_side=96)[0], f"{shape}_{k}"
            )


@needs_shared
def test_heic_is_rotated_once() -> None:
    path = DATA / "photos" / "exif-samples" / "heic" / "mobile" / "iphone_13_pro_max.HEIC"
    meta = images.read_meta(path)
    assert meta.format == "HEIF" and meta.orientation == 6 and meta.camera == "Apple iPhone 13 Pro Max"
    assert (meta.width, meta.height) == (3024, 4032)  # libheif applied the rotation; we must not again
    im = images.make_thumbnail(path, 128)
    assert im.size == (96, 128)
