"""Videos and camera RAW files (issue 15): real decoding with PyAV and rawpy, real files
(the camera/phone videos in ../shared, videos and DNGs made here), indexed end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import COLORS, make_photo, shared_path
from PIL import Image

from desktop import media
from desktop.library import Library

av = pytest.importorskip("av")
pytest.importorskip("rawpy")

# Solid colours at known times: green 0-2 s, red 2-4 s, blue 4-6 s (10 fps).
SCHEDULE = [("green", 0.0, 2.0), ("red", 2.0, 4.0), ("blue", 4.0, 6.0)]
FPS = 10


def write_video(path: Path, schedule=SCHEDULE, fps: int = FPS, size: tuple[int, int] = (64, 48),
                gop: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop  # frames between keyframes
        rng = np.random.default_rng(0)
        for color, start, end in schedule:
            for _ in range(round((end - start) * fps)):
                rgb = COLORS[color] if isinstance(color, str) else color
                pixels = np.clip(np.array(rgb, np.int16) + rng.integers(-8, 9, (size[1], size[0], 3)),
                                 0, 255).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                    out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_generated_video_is_sampled_at_its_scene_changes(tmp_path: Path) -> None:
    decoded = media.decode(write_video(tmp_path / "clip.mp4"), 64)
    assert decoded.decoder == "video" and decoded.meta.kind == "video"
    assert decoded.meta.duration_s == pytest.approx(6.0, abs=0.2)
    times = [f.at_s for f in decoded.frames]
    # each colour change is a scene: sampled within one frame of it
    for _, start, _ in SCHEDULE:
        assert min(abs(t - start) for t in times) <= 1 / FPS, times
    assert len(times) <= 32


@pytest.mark.parametrize("gop", [12, 1000])
def test_a_long_video_is_sampled_from_keyframes_or_fully_when_they_are_sparse(tmp_path: Path, gop: int) -> None:
    """40 s (past KEYFRAMES_AFTER_S): keyframes every 6 s are enough; one keyframe in all
    (gop 1000) is not, and the decoder falls back to every frame."""
    from plugins import video

    path = write_video(tmp_path / "long.mp4", [("green", 0, 20), ("red", 20, 40)], fps=2, gop=gop)
    decoded = media.decode(path, 48)
    times = sorted(f.at_s for f in decoded.frames)
    assert decoded.meta.duration_s > video.KEYFRAMES_AFTER_S
    floor = video._floor(decoded.meta.duration_s)
    assert all(b - a <= floor + 6.0 for a, b in zip(times, times[1:], strict=False)), times
    reds = [f.at_s for f in decoded.frames if f.image.getpixel((5, 5))[0] > 150]
    assert reds and 20.0 <= min(reds) <= 26.0, times  # the cut, to the next keyframe at most
    opened = video._Opened(str(path))
    try:
        from_keyframes, _ = video.VideoDecoder()._sample(opened, 48, keyframes=True)
    finally:
        opened.close()
    # gop 12: a keyframe each 6 s (and one at the cut) is enough; gop 1000: the first
    # keyframe (and the cut's) are too sparse, so every frame was decoded instead
    assert len(from_keyframes) >= 7 if gop == 12 else len(from_keyframes) <= 2
    assert len(decoded.frames) >= 7


def test_frames_are_capped_per_video(tmp_path: Path) -> None:
    flicker = [(("red", "blue")[i % 2], i / 10, (i + 1) / 10) for i in range(120)]  # a cut every frame
    decoded = media.decode(write_video(tmp_path / "flicker.mp4", flicker), 48)
    assert len(decoded.frames) == 32
    assert max(f.at_s for f in decoded.frames) > 10.0  # thinned evenly, not the first 32


def test_a_text_query_finds_the_moment_of_a_video(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "lib"
    write_video(root / "party.mp4")
    make_photo(root / "yellow.jpg", "yellow")
    make_photo(root / "white.jpg", "white")
    with Library(home, encoder="colors") as lib:
        lib.add_root(str(root))
        report = lib.index()
        assert report.encoded == 3 and report.frames >= 3
        video = next(p for p in lib.catalog.live_photos() if p.path.endswith("party.mp4"))
        assert video.kind == "video" and video.duration_s == pytest.approx(6.0, abs=0.2)
        for color, start, end in SCHEDULE:
            for exact in (False, True):
                hit = lib.search(color, k=1, exact=exact)[0]
                assert hit.path.endswith("party.mp4") and hit.at_s is not None
                assert start - 1 / FPS <= hit.at_s < end, (color, hit.at_s)
        # a photo still wins where it matches better, and carries no timestamp
        top = lib.search("yellow", k=1)[0]
        assert top.path.endswith("yellow.jpg") and top.at_s is None
        # words + meaning (the window's search) keeps the moment
        found = lib.find("red", k=3, mode="meaning")
        assert found[0].path.endswith("party.mp4") and 2.0 - 0.1 <= found[0].at_s < 4.0
        # filters apply to frames too: outside the folder, the video is not found
        from desktop.search import Filters
        assert all(not h.path.endswith(".mp4") for h in lib.search("red", k=5, filters=Filters(exts=(".jpg",))))
        # a video indexed after the first searches is found too (the frame matrix reloads)
        write_video(root / "later.mp4", [("black", 0.0, 1.0), ((130, 40, 170), 1.0, 2.0)])
        lib.index()
        hit = lib.search("purple", k=1)[0]
        assert hit.path.endswith("later.mp4") and 0.9 <= hit.at_s < 2.0


def test_cli_search_prints_and_returns_the_timestamp(tmp_path: Path, home: Path, capsys) -> None:
    from desktop.cli import main

    root = tmp_path / "lib"
    write_video(root / "party.mp4")
    h = ["--home", str(home)]
    assert main(["add", str(root), *h, "--encoder", "colors"]) == 0
    assert main(["index", *h]) == 0
    capsys.readouterr()
    assert main(["search", "red", "-k", "1", *h]) == 0
    assert "party.mp4  @ 0:0" in capsys.readouterr().out
    assert main(["search", "red", "-k", "1", "--json", *h]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["kind"] == "video" and 1.9 <= row["at_s"] < 4.0


@pytest.mark.slow
def test_every_real_video_is_indexed_or_skipped_with_a_reason(tmp_path: Path, home: Path) -> None:
    src = shared_path("data", "videos")
    root = tmp_path / "videos"
    shutil.copytree(src, root)
    for f in sorted(src.glob("*")):  # truncated copies: a camera unplugged mid-write
        if f.suffix.lower() != ".nef":
            (root / f"cut-{f.name}").write_bytes(f.read_bytes()[: f.stat().st_size * 2 // 5])
    (root / "empty.mp4").write_bytes(b"")
    (root / "garbage.mov").write_bytes(b"\x00\x00\x00\x14ftypqt  " + bytes(range(256)) * 4)
    with Library(home, encoder="colors") as lib:
        lib.add_root(str(root))
        lib.index()
        cat = lib.catalog
        skipped = {Path(s.path).name: s.reason for s in lib.status().skipped}
        ok = {Path(p.path).name: p for p in cat.live_photos() if p.status == "ok"}
        names = {f.name for f in root.iterdir()}
        assert set(ok) | set(skipped) == names, names - set(ok) - set(skipped)
        assert all(reason and reason != "unknown" for reason in skipped.values()), skipped
        # every real video decodes; the two fake .nef files are JPEGs and read as such
        for f in src.iterdir():
            assert f.name in ok, (f.name, skipped.get(f.name))
            assert ok[f.name].kind == ("image" if f.suffix == ".nef" else "video"), f.name
        assert {"empty.mp4", "garbage.mov"} <= set(skipped)
        gps = ok["mov__with-gps.mov"]
        assert (gps.latitude, gps.longitude) == pytest.approx((32.0929, 34.862))
        assert gps.camera == "Apple iPhone 6" and gps.taken_at.startswith("2019-07-24T11:25:40")
        assert (gps.width, gps.height) == (320, 568)  # the phone's rotation applied
        assert ok["mp4__FLIR_Thermal.mp4"].duration_s == pytest.approx(11.35, abs=0.05)
        assert ok["mp4__ftyp3gp5.mp4"].latitude is None  # "+00.0000+000.0000": no fix, not Null Island
        # each video's frames are stored with their times (the poster first, then in order)
        for name in ("mp4__FLIR_Thermal.mp4", "mov__with-gps.mov"):
            times = cat.frame_times(ok[name].id, lib.encoder.id)
            assert 2 <= len(times) <= 32 and times[1:] == sorted(times[1:])
            assert all(0 <= t <= ok[name].duration_s for t in times)
        with Image.open(lib.thumbnail(gps, 128)) as thumb:  # the poster, upright
            assert max(thumb.size) == 128 and thumb.height > thumb.width


# ---- RAW files ------------------------------------------------------------------------------
RED, BLUE = (3500, 400, 300), (300, 500, 3500)


def _dng(path: Path, preview: Image.Image | None = None) -> Path:
    from dng_writer import write_dng

    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(write_dng(str(path), RED, BLUE, preview=preview))


def test_raw_uses_the_embedded_preview_when_big_enough_else_demosaics(tmp_path: Path) -> None:
    from plugins.raw import RawDecoder

    decoder = RawDecoder()
    with_preview = _dng(tmp_path / "a.dng", preview=Image.new("RGB", (320, 240), COLORS["green"]))
    small_preview = _dng(tmp_path / "b.dng", preview=Image.new("RGB", (64, 48), COLORS["green"]))
    bare = _dng(tmp_path / "c.dng")
    assert media.registry.for_path(bare).name == "raw"

    out = decoder.decode(str(with_preview), 224)
    assert decoder.stats == {"preview": 1, "demosaic": 0}
    assert min(out.image.size) == 224 and out.image.getpixel((10, 10))[1] > 150  # the green preview
    assert (out.meta.kind, out.meta.format, out.meta.camera) == ("raw", "DNG", "Lumen Test DNG")
    assert (out.meta.width, out.meta.height) == (256, 192)

    for path in (small_preview, bare):  # too small to encode from, or none: half-size demosaic
        im = decoder.decode(str(path), 224).image
        assert im.size == (128, 96)  # half of 256x192, never upscaled
        r, _, b = im.getpixel((64, 10))
        r2, _, b2 = im.getpixel((64, 85))
        assert r > b and b2 > r2  # red top, blue bottom: the mosaic was really demosaiced
    assert decoder.stats == {"preview": 1, "demosaic": 2}


def test_raw_orientation_and_time_taken_come_from_the_raw(tmp_path: Path) -> None:
    from dng_writer import write_dng

    from plugins.raw import RawDecoder

    decoder = RawDecoder()
    for name, preview in (("p.dng", Image.new("RGB", (480, 360), COLORS["green"])), ("d.dng", None)):
        path = write_dng(str(tmp_path / name), RED, BLUE, preview=preview, orientation=6, taken="2021:06:05 14:03:02")
        out = decoder.decode(path, 224)
        assert (out.meta.width, out.meta.height) == (192, 256)  # turned 90° clockwise: portrait
        assert out.image.height > out.image.width and out.meta.taken_at == "2021-06-05T14:03:02"
        assert decoder.thumbnail(path, 128).size == (96, 128)
        if preview is None:  # the mosaic's red top is on the right once turned
            r, _, b = out.image.getpixel((out.image.width - 5, out.image.height // 2))
            assert r > b
    assert decoder.stats == {"preview": 2, "demosaic": 2}


def test_bad_raws_are_skipped_with_a_reason_and_fake_nefs_are_jpegs(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "raws"
    good = _dng(root / "good.dng")
    (root / "cut.dng").write_bytes(good.read_bytes()[:300])
    (root / "noise.nef").write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    for f in sorted(shared_path("data", "videos").glob("*.nef")):
        shutil.copy(f, root / f.name)
    with Library(home, encoder="colors") as lib:
        lib.add_root(str(root))
        lib.index()
        skipped = {Path(s.path).name: s.reason for s in lib.status().skipped}
        ok = {Path(p.path).name: p for p in lib.catalog.live_photos() if p.status == "ok"}
    assert set(skipped) == {"cut.dng", "noise.nef"} and all(skipped.values())
    assert ok["good.dng"].kind == "raw"
    nefs = [p for name, p in ok.items() if name.startswith("nef__")]
    assert len(nefs) == 2 and all(p.kind == "image" and p.format == "JPEG" for p in nefs)


def test_a_raw_and_its_jpeg_are_one_photo_with_two_files(tmp_path: Path, home: Path) -> None:
    root = tmp_path / "shoot"
    raw = _dng(root / "IMG_0001.dng", preview=Image.new("RGB", (480, 360), COLORS["red"]))
    jpeg = make_photo(root / "IMG_0001.jpg", "red")
    alone = _dng(root / "IMG_0002.dng")
    with Library(home, encoder="colors") as lib:
        lib.add_root(str(root))
        report = lib.index()
        cat = lib.catalog
        shown = {Path(p.path).name: p for p in cat.live_photos()}
        assert set(shown) == {"IMG_0001.jpg", "IMG_0002.dng"}  # the pair is listed once
        pair = shown["IMG_0001.jpg"]
        assert [Path(p).name for p in lib.paths_of(pair.id)] == ["IMG_0001.jpg", "IMG_0001.dng"]
        assert report.encoded == 2  # the paired RAW is not decoded: its JPEG stands for it
        counts = cat.counts()
        assert (counts["files"], counts["photos"], counts["ok"], counts["new"]) == (3, 2, 2, 0)
        assert [Path(h.path).name for h in lib.search("red", k=5, exact=True)].count("IMG_0001.dng") == 0
        # the JPEG goes: the RAW stands alone and is encoded and found
        jpeg.unlink()
        lib.index()
        names = {Path(p.path).name for p in cat.live_photos()}
        assert names == {"IMG_0001.dng", "IMG_0002.dng"}
        hits = [Path(h.path).name for h in lib.search("red", k=2, exact=True)]
        assert hits[0] == "IMG_0001.dng"
    assert raw.exists() and alone.exists()
