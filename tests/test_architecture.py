"""The shape of the code, checked: the layers of desktop/, no import circles, a Qt-free
core, and the catalog of the previous release opening unchanged."""

from __future__ import annotations

import ast
import shutil
import sqlite3
from pathlib import Path

from desktop.catalog import SCHEMA_VERSION, USER, Catalog
from desktop.library import Library

DESKTOP = Path(__file__).resolve().parents[1] / "desktop"
DATA = Path(__file__).resolve().parent / "data"

# Lower layers never import higher ones. Within a layer imports are allowed (circles are
# caught below). A new module must be placed here: that is the point.
LAYERS: list[set[str]] = [
    {"settings", "images", "encoders", "catalog"},  # rows, pixels, plugin contracts
    {"model_host", "media", "index", "downloads", "timeline"},  # model processes, media decoders, index backends, weight downloads, dates
    {"scanner", "store", "trash"},  # the file system; one open data dir
    {"indexer", "captions", "search", "cluster", "duplicates", "rerank"},  # the pipelines (cluster: the indexer's Ray backend)
    {"library"},  # THE facade
    {"export", "evaluation", "console"},  # things built on the facade
    {"captions_cli", "cli", "server", "jobs", "ui", "app", "__main__"},  # front ends
]
FRONT_ENDS = LAYERS[-1]
# Front ends call the facade; the machinery under it is not theirs to reach into.
BEHIND_THE_FACADE = {"store", "indexer", "captions", "search", "scanner", "index", "model_host", "trash", "duplicates"}
QT_ALLOWED = {"jobs", "ui", "app"}
LAYER_OF = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _top(module: str) -> str:
    """desktop.catalog.db -> catalog; desktop.ui.grid -> ui; desktop.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    """module (dotted, under desktop) -> the desktop modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for path in DESKTOP.rglob("*.py"):
        rel = path.relative_to(DESKTOP.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "desktop":
                    deps |= {f"desktop.{a.name}" for a in node.names}
                elif node.module.startswith(("desktop.", "PySide6")):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith(("desktop.", "PySide6"))}
        graph[name] = deps - {name}
    return graph


def test_every_module_has_a_layer() -> None:
    unplaced = {_top(m) for m in _imports() if m != "desktop"} - set(LAYER_OF) - {"__init__"}
    assert not unplaced, f"place these desktop modules in a layer of tests/test_architecture.py: {unplaced}"


def test_no_module_imports_a_layer_above_it() -> None:
    wrong = []
    for module, deps in _imports().items():
        if module == "desktop":
            continue
        mine = LAYER_OF[_top(module)]
        for dep in deps:
            if dep.startswith("desktop.") and _top(dep) in LAYER_OF and LAYER_OF[_top(dep)] > mine:
                wrong.append(f"{module} -> {dep}")
    assert not wrong, "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_front_ends_use_the_facade() -> None:
    wrong = [
        f"{module} -> {dep}"
        for module, deps in _imports().items()
        if module != "desktop" and _top(module) in FRONT_ENDS
        for dep in deps
        if dep.startswith("desktop.") and _top(dep) in BEHIND_THE_FACADE
    ]
    assert not wrong, "front ends must go through desktop.library:\n" + "\n".join(sorted(wrong))


def test_no_import_circles_between_modules() -> None:
    graph = {m: {d for d in deps if d.startswith("desktop")} for m, deps in _imports().items()}
    # A package's __init__ re-exporting its own submodules is not a circle between concepts.
    edges = {m: {d for d in deps if d in graph and not (m != "desktop" and d.startswith(m + "."))}
             for m, deps in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(edges):
        if module not in state and (cycle := visit(module)):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_the_core_never_imports_qt() -> None:
    wrong = [m for m, deps in _imports().items()
             if m != "desktop" and _top(m) not in QT_ALLOWED and any(d.startswith("PySide6") for d in deps)]
    assert not wrong, f"Qt-free modules importing PySide6: {wrong}"


def test_a_catalog_made_by_the_previous_release_opens_and_keeps_everything(tmp_path: Path) -> None:
    """tests/data/catalog-v0.1.0.db was written by release 0.1.0 (commit 8cd771b): 5 photos
    in 6 files (a copy), a corrupt file, colour vectors, retrieval captions and tags, the
    user's own caption and tags on the red photo, a smart album."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DATA / "catalog-v0.1.0.db", home / "catalog.db")
    with Library(home, encoder="colors") as lib:
        cat = lib.catalog
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        counts = cat.counts()
        assert (counts["photos"], counts["files"], counts["ok"], counts["skipped"]) == (5, 6, 4, 1)
        red = next(p for p in cat.live_photos() if p.path.endswith("/red.jpg"))
        assert sorted(Path(p).name for p in lib.paths_of(red.id)) == ["red-again.jpg", "red.jpg"]
        shown = cat.caption_of(red.id)
        assert (shown.text, shown.source, shown.edited) == ("Grandma's red kitchen", USER, True)
        assert cat.effective_tags(red.id) == ["kitchen", "grandma"]
        assert [a.name for a in lib.albums()] == ["Reds"]
        assert [Path(h.path).name for h in lib.find_words("kitchen")] == ["red.jpg"]
        assert [Path(h.path).name for h in lib.search("blue", k=1, exact=True)] == ["blue.jpg"]
        assert [s.reason for s in lib.status().skipped] and lib.status().vectors == {"colors:hist-v1": 4}
        # v3 (videos and RAW files): the old photos are stills with no frames; a video added
        # to the migrated catalog is indexed beside them and found at its moment
        assert {p.kind for p in cat.live_photos()} == {"image"} and cat.frames_version("colors:hist-v1") == 0
        from test_video_raw import write_video

        write_video(tmp_path / "videos" / "clip.mp4")
        lib.add_root(str(tmp_path / "videos"))
        lib.index()  # the fixture's own folders are long gone: marked offline, photos kept
        assert lib.catalog.counts()["photos"] == 6
        hit = lib.search("green", k=1, exact=True)[0]
        assert hit.path.endswith("clip.mp4") and hit.at_s is not None and hit.at_s < 2.0


def test_a_v2_catalog_migrates_to_v3_with_its_data(tmp_path: Path) -> None:
    """The step itself: photos gain kind/duration/GPS columns (NULL for old rows, read as
    "image"), frames and raw_pairs appear, nothing else changes."""
    shutil.copy(DATA / "catalog-v0.1.0.db", tmp_path / "catalog.db")
    with sqlite3.connect(tmp_path / "catalog.db") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        before = conn.execute("SELECT id, hash, status FROM photos ORDER BY id").fetchall()
    cat = Catalog(tmp_path / "catalog.db")
    try:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert cat.conn.execute("SELECT id, hash, status FROM photos ORDER BY id").fetchall() == before
        cols = {r[1] for r in cat.conn.execute("PRAGMA table_info(photos)")}
        assert {"kind", "duration_s", "latitude", "longitude"} <= cols
        assert cat.conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0] == 0
        assert cat.conn.execute("SELECT COUNT(*) FROM raw_pairs").fetchone()[0] == 0
        assert all(p.kind == "image" for p in cat.photos([r[0] for r in before]).values())
    finally:
        cat.close()


def test_the_schema_of_a_fresh_catalog_equals_the_previous_release_migrated(tmp_path: Path) -> None:
    def schema(path: Path) -> list[tuple[str, str, str]]:
        with sqlite3.connect(path) as conn:
            return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL"))

    Catalog(tmp_path / "fresh.db").close()
    shutil.copy(DATA / "catalog-v0.1.0.db", tmp_path / "old.db")
    v2 = schema(tmp_path / "old.db")
    Catalog(tmp_path / "old.db").close()
    assert schema(tmp_path / "fresh.db") == schema(tmp_path / "old.db")
    # v3 added to v2 and changed only the photos table (its new columns)
    assert {r for r in v2 if r[1] != "photos"} < set(schema(tmp_path / "old.db"))
