"""End to end through the `lumen` command line on a folder of generated images."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, make_photo

from desktop.cli import main


def lumen(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_add_index_search_similar_status(capsys, photos: Path, home: Path) -> None:
    h = ["--home", str(home)]
    assert lumen(capsys, "add", str(photos), *h, "--encoder", "colors")[0] == 0
    code, out, _ = lumen(capsys, "index", *h)
    assert code == 0 and "12 new photos" in out and "12 encoded" in out

    code, out, _ = lumen(capsys, "search", "red", "-k", "2", "--json", *h)
    hits = json.loads(out)
    assert code == 0 and sorted(Path(x["path"]).name for x in hits) == ["red-1.jpg", "red-2.png"]
    assert all(0 < x["score"] <= 1.0001 for x in hits)

    code, out, _ = lumen(capsys, "search", "--image", str(photos / "green-1.jpg"), "-k", "2", *h)
    assert code == 0 and "green-1.jpg" in out and "green-2.png" in out

    code, out, _ = lumen(capsys, "similar", str(photos / "black-1.jpg"), "-k", "1", "--json", *h)
    assert [Path(x["path"]).name for x in json.loads(out)] == ["black-2.png"]

    code, out, _ = lumen(capsys, "status", "--json", *h)
    status = json.loads(out)
    assert status["encoder_id"] == "colors:hist-v1"
    assert status["roots"][0]["counts"]["ok"] == 12 and status["index_size"] == 12

    code, out, _ = lumen(capsys, "status", *h)
    assert code == 0 and "12 indexed" in out


def test_errors_are_one_clear_line(capsys, tmp_path: Path, home: Path) -> None:
    code, _, err = lumen(capsys, "add", str(tmp_path / "missing"), "--home", str(home))
    assert code == 1 and "missing: not a folder" in err
    code, _, err = lumen(capsys, "index", "--home", str(home))
    assert code == 2 and "lumen add" in err
    code, _, err = lumen(capsys, "search", "x", "--home", str(home), "--encoder", "nope")
    assert code == 1 and "no plugin named 'nope'" in err


def test_status_lists_skipped_files_with_reasons(capsys, photos: Path, home: Path) -> None:
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    h = ["--home", str(home), "--encoder", "colors"]
    lumen(capsys, "add", str(photos), *h)
    lumen(capsys, "index", *h)
    code, out, _ = lumen(capsys, "status", *h)
    assert "broken.jpg: " in out


def test_encoders_lists_the_built_in_plugins(capsys) -> None:
    code, out, _ = lumen(capsys, "encoders", "--json")
    rows = json.loads(out)
    assert code == 0
    assert {"clip", "colors", "bert_resnet"} <= {r["name"] for r in rows if r["group"] == "lumen.encoders"}
    assert "xattn" in {r["name"] for r in rows if r["group"] == "lumen.rerankers"}
    colors = next(r for r in rows if r["name"] == "colors")
    assert colors["models"][0]["available"] is True


def test_console_script_runs_in_a_fresh_process(tmp_path: Path) -> None:
    photos = tmp_path / "p"
    make_photo(photos / "a.jpg", "red")
    env = {**os.environ, "LUMEN_HOME": str(tmp_path / "h")}
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "desktop", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )

    assert run("add", str(photos), "--encoder", "colors").returncode == 0
    done = run("index")
    assert done.returncode == 0, done.stderr
    found = run("search", "red", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)[0]["path"].endswith("a.jpg")


def test_index_captions_and_tags_new_photos(capsys, photos: Path, home: Path) -> None:
    from desktop.library import Library

    h = ["--home", str(home), "--encoder", "colors"]
    lumen(capsys, "add", str(photos), *h)
    # `colors` makes no captions from the general default bank (they would be false); a bank
    # of colour captions is one it can match.
    bank = photos.parent / "colours.txt"
    bank.write_text("a red photo.\na green photo.\na blue photo.\na white photo.\n")
    with Library(home, encoder="colors") as lib:
        lib.store.write(lambda c: c.set_meta("captioner.spec", f"retrieval:{bank}"))
    code, out, _ = lumen(capsys, "index", *h)
    assert code == 0 and "12 captioned" in out
    code, out, _ = lumen(capsys, "index", *h)  # nothing new: nothing captioned again
    assert code == 0 and "0 captioned" in out
