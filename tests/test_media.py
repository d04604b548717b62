"""Media decoders: the registry, content sniffing, the decode look-ahead, and a decoder
plugin registered only in this test session that is discovered and indexed end to end."""

from __future__ import annotations

import struct
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_photo
from PIL import Image

from desktop import media
from desktop.images import ImageError
from desktop.library import Library

# A made-up format: b"LUMENPIX" + width, height (uint16) + RGB bytes. Named ".lpx".
PLUGIN_SOURCE = '''
import struct
from PIL import Image
from desktop.media import Decoded, Frame, MediaError, MediaMeta

class PixDecoder:
    name = "lumenpix"
    extensions = frozenset({".lpx"})

    def sniff(self, head, path):
        return head.startswith(b"LUMENPIX")

    def _open(self, path):
        data = open(path, "rb").read()
        if not data.startswith(b"LUMENPIX") or len(data) < 12:
            raise MediaError(path, "not a lumenpix file")
        w, h = struct.unpack("<HH", data[8:12])
        if len(data) != 12 + 3 * w * h:
            raise MediaError(path, "truncated lumenpix file")
        return Image.frombytes("RGB", (w, h), data[12:])

    def read_meta(self, path):
        im = self._open(path)
        return MediaMeta(im.width, im.height, "LUMENPIX", None, None, None, 2)

    def decode(self, path, size):
        im = self._open(path)
        # Two "frames": the picture and its mirror, with timestamps, like a short clip.
        frames = [Frame(im, 0.0), Frame(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), 1.0)]
        return Decoded(frames, self.read_meta(path), self.name)

    def thumbnail(self, path, size):
        im = self._open(path)
        im.thumbnail((size, size))
        return im

decoder_plugin = PixDecoder
'''


def write_lpx(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Path:
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"LUMENPIX" + struct.pack("<HH", w, h) + bytes(rgb) * (w * h))
    return path


@pytest.fixture
def pix_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A real installed distribution (a .dist-info with entry_points.txt on sys.path), found
    through importlib.metadata exactly as a pip-installed third-party plugin would be."""
    site = tmp_path / "site"
    (site / "lumen_pix").mkdir(parents=True)
    (site / "lumen_pix" / "__init__.py").write_text(PLUGIN_SOURCE)
    dist = site / "lumen_pix-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lumen-pix\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[lumen.media]\nlumenpix = lumen_pix:decoder_plugin\n")
    monkeypatch.syspath_prepend(str(site))
    media.registry.reload()
    yield
    sys.modules.pop("lumen_pix", None)
    monkeypatch.undo()
    media.registry.reload()


def test_builtin_image_decoder_is_found_through_entry_points() -> None:
    names = [d.name for d in media.registry.decoders()]
    assert "image" in names
    assert media.is_media_name("IMG_0001.JPG") and media.is_media_name("a.heic")
    assert not media.is_media_name("notes.txt") and not media.is_media_name("._IMG_1.jpg")
    assert not media.is_media_name(".jpg")


def test_content_wins_over_the_extension(tmp_path: Path) -> None:
    png_named_jpg = tmp_path / "really-a.jpg"
    Image.new("RGB", (80, 60), (200, 10, 10)).save(png_named_jpg, "PNG")
    decoded = media.decode(png_named_jpg, 32)
    assert decoded.decoder == "image" and decoded.meta.format == "PNG"
    assert decoded.frames[0].at_s is None and decoded.image.getpixel((0, 0)) == (200, 10, 10)
    garbage = tmp_path / "random.jpg"
    garbage.write_bytes(b"\x00\x01not an image at all" * 20)
    with pytest.raises(ImageError) as err:
        media.decode(garbage)
    assert err.value.path == str(garbage) and err.value.reason  # the image decoder says why


def test_a_decoder_plugin_is_discovered_and_indexed_end_to_end(
    pix_plugin: None, lib: Library, tmp_path: Path
) -> None:
    assert media.is_media_name("scan.lpx")
    folder = tmp_path / "pics"
    write_lpx(folder / "red.lpx", (220, 30, 30))
    write_lpx(folder / "blue.lpx", (30, 60, 220))
    (folder / "broken.lpx").write_bytes(b"LUMENPIX" + struct.pack("<HH", 50, 50) + b"\x00" * 10)
    make_photo(folder / "green.jpg", "green")
    lib.add_root(folder)
    report = lib.index()
    assert report.encoded == 3 and report.skipped == 1
    skipped = {Path(s.path).name: s.reason for s in lib.status().skipped}
    assert skipped == {"broken.lpx": "truncated lumenpix file"}
    hits = lib.search("red", k=1)
    assert Path(hits[0].path).name == "red.lpx" and hits[0].photo.format == "LUMENPIX"
    assert Path(lib.search("blue", k=1)[0].path).name == "blue.lpx"
    thumb = lib.thumbnail(hits[0].photo, 16)
    assert Image.open(thumb).size == (16, 12)


def test_a_plugin_claims_a_file_by_content_whatever_its_name(pix_plugin: None, tmp_path: Path) -> None:
    disguised = write_lpx(tmp_path / "holiday.jpg", (10, 200, 10))  # a lumenpix file named .jpg
    decoded = media.decode(disguised, 16)
    assert decoded.decoder == "lumenpix" and [f.at_s for f in decoded.frames] == [0.0, 1.0]


def test_iter_decoded_order_errors_and_lookahead(tmp_path: Path) -> None:
    paths = []
    for i in range(12):
        p = tmp_path / f"{i:02d}.png"
        if i % 4 == 3:
            p.write_bytes(b"nope")
        else:
            Image.new("RGB", (300 + i, 200), (i * 20, 0, 0)).save(p)
        paths.append(str(p))
    paths.append(str(tmp_path / "missing.png"))

    out = list(media.iter_decoded(paths, size=64, workers=2, lookahead=3))
    assert [p for p, _ in out] == paths
    for i, (_p, r) in enumerate(out):
        if i % 4 == 3 or i == 12:
            assert isinstance(r, ImageError) and r.reason
        else:
            assert isinstance(r, media.Decoded)
            assert 64 <= min(r.image.size) <= 65 and r.image.getpixel((0, 0))[0] == i * 20
    assert [p for p, _ in media.iter_decoded(paths, workers=0)] == paths


def test_iter_decoded_bounds_work_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    lock = threading.Lock()

    def slow_decode(path: str, size: int = 256) -> media.Decoded:
        with lock:
            started.append(path)
        time.sleep(0.002)
        im = Image.new("RGB", (size, size))
        return media.Decoded([media.Frame(im)], media.MediaMeta(size, size, "PNG", None, None, None, 1), "test")

    monkeypatch.setattr(media, "decode", slow_decode)
    paths = [f"p{i}" for i in range(40)]
    gen = media.iter_decoded(paths, size=8, workers=3, lookahead=5)
    for consumed, (path, _img) in enumerate(gen, start=1):
        time.sleep(0.001)  # a slow consumer: the pool must not run far ahead
        assert path == paths[consumed - 1]
        assert len(started) - consumed <= 5 - 1
        if consumed == 10:
            break
    gen.close()  # stops early: pending work is cancelled, nothing raises
    assert len(started) <= 10 + 5


def test_iter_decoded_does_not_swallow_bugs(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(path: str, size: int = 256) -> media.Decoded:
        raise RuntimeError("a bug, not a bad file")

    monkeypatch.setattr(media, "decode", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        list(media.iter_decoded(["a", "b"]))


def test_frames_of_a_plugin_are_real_pixels(pix_plugin: None, tmp_path: Path) -> None:
    path = write_lpx(tmp_path / "x.lpx", (1, 2, 3), (4, 2))
    a, b = (np.asarray(f.image) for f in media.decode(path, 2).frames)
    assert a.shape == (2, 4, 3) and (a == np.array([1, 2, 3])).all() and (b == a[:, ::-1]).all()
