"""Every benchmark runs end to end at its --quick size (no timing is asserted here).

The benchmarks write their caches and JSON to a temporary LUMEN_BENCH_OUT, so a test run
never touches bench/out/. The indexing benchmark needs the real photos in ../shared and
skips without them; the window start-up runs with the `colors` encoder (no torch in the
child) to stay fast.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench-out")
    old = os.environ.get("LUMEN_BENCH_OUT")
    os.environ["LUMEN_BENCH_OUT"] = str(out)
    import bench.common

    importlib.reload(bench.common)  # OUT is read from the environment at import
    yield out
    if old is None:
        os.environ.pop("LUMEN_BENCH_OUT", None)
    else:
        os.environ["LUMEN_BENCH_OUT"] = old
    importlib.reload(bench.common)


def _run(module: str, *args: str) -> dict:
    mod = importlib.import_module(module)
    importlib.reload(mod)  # picks up the reloaded bench.common
    result = mod.main(["--quick", *args])
    assert result["tables"] and result["tables"][0].rows
    return result


@pytest.mark.slow
def test_indexing_quick(bench_out: Path) -> None:
    if not (SHARED / "data" / "photos").is_dir():
        pytest.skip("../shared/data/photos is absent (only beside the developers' checkout)")
    encoders = ["clip:lumen-tiny:random"]
    if (SHARED / "models" / "mobilenet_v2").is_dir():
        encoders.append("bert_resnet")
    result = _run("bench.indexing", "--n", "6", "--encoders", *encoders)
    for run in result["results"]["runs"]:
        assert run["pipeline"] > 0 and run["ceiling"] > 0 and run["naive"] > 0
    assert json.loads((bench_out / "indexing.json").read_text())["bench"] == "indexing"


@pytest.mark.slow
def test_rescan_quick(bench_out: Path) -> None:
    result = _run("bench.rescan", "--n", "300")
    assert result["results"]["median_s"] > 0


@pytest.mark.slow
def test_query_quick(bench_out: Path) -> None:
    result = _run("bench.query", "--sizes", "1500", "--queries", "3")
    assert result["results"][0]["e2e"]


@pytest.mark.slow
def test_ann_quick(bench_out: Path) -> None:
    result = _run("bench.ann", "--sizes", "1500", "--queries", "10")
    assert result["results"][0]["recall"] > 0.5


@pytest.mark.slow
def test_serve_quick(bench_out: Path) -> None:
    pytest.importorskip("uvicorn")
    result = _run("bench.serve", "--requests", "40")
    levels = result["results"]["levels"]
    assert [r["clients"] for r in levels] == [1, 8, 32] and not any(r["errors"] for r in levels)


@pytest.mark.slow
def test_startup_quick(bench_out: Path) -> None:
    result = _run("bench.startup", "--n", "800", "--encoder", "colors", "--no-index", "--timeout", "90")
    launch = result["results"]["launches"][0]
    assert launch["interactive_s"] > 0 and launch["idle_rss_mb"] > 0


@pytest.mark.slow
def test_ui_stalls_and_run_all_quick(bench_out: Path) -> None:
    """The UI stalls bench (bench/ui_stalls.py) through run_all's wrapper, in a child process."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LUMEN_BENCH_OUT=str(bench_out),
               PYTHONPATH=str(REPO))
    env.pop("LUMEN_HOME", None)
    proc = subprocess.run([sys.executable, "-c",
                           "from bench import run_all, ui_stalls\n"
                           "ui_stalls.OUT = run_all.OUT\n"
                           "import bench.run_all as r; r.stalls_main(True)"],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((bench_out / "ui_stalls.json").read_text())
    assert data["results"]["scenarios"]
    from bench import run_all

    importlib.reload(run_all)
    table = run_all.summary({"ui_stalls": data}, quick=True)
    assert table.rows


@pytest.mark.slow
def test_media_quick(bench_out: Path) -> None:
    pytest.importorskip("av")
    pytest.importorskip("rawpy")
    result = _run("bench.media")
    raw = result["results"]["raw"]
    assert raw["preview_s"] and raw["demosaic_s"]
    assert result["results"]["frame_search"]["runs"][0]["ms"] > 0


@pytest.mark.slow
def test_scale_quick(bench_out: Path) -> None:
    result = _run("bench.scale", "--queries", "10")
    measured = result["measured"]
    assert {r["dim"] for r in measured} == {512, 64} and all(r["recall"] > 0.5 for r in measured)
    assert [r["n"] for r in result["projected"]] == [1_000_000, 10_000_000]
    assert all(r["build_rss_mb"] > 0 and r["catalog_bytes"] > 0 for r in result["projected"])
