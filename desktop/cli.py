"""`lumen` on the command line. `lumen` alone (or `lumen FOLDER`) opens the window.

Every subcommand goes through desktop.library, exactly like the window does.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime

from desktop import __version__, media
from desktop.console import ProgressLine
from desktop.encoders import CAPTIONER_GROUP, ENCODER_GROUP, RERANKER_GROUP, EncoderError, installed
from desktop.library import Filters, Hit, Library, LibraryError

log = logging.getLogger("lumen")

VALUE_OPTIONS = {"--home", "--encoder", "--weights", "--device"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="data dir (default: $LUMEN_HOME or the platform's user data dir)")
    p.add_argument(
        "--encoder", help="encoder spec, e.g. clip, clip:ViT-B-32:laion2b_s34b_b79k, bert_resnet, colors"
    )
    p.add_argument("--weights", help="local weights file or folder for the encoder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("-v", "--verbose", action="count", default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lumen", description="Find your photos by meaning. `lumen [FOLDER]` opens the window."
    )
    parser.add_argument("--version", action="version", version=f"lumen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("add", help="add a folder to the library (then run `lumen index`)")
    p.add_argument("folders", nargs="+")
    p.add_argument("--no-watch", action="store_true", help="do not watch this folder for changes")
    _common(p)

    p = sub.add_parser("remove", help="forget a folder (files on disk are not touched)")
    p.add_argument("folders", nargs="+")
    _common(p)

    p = sub.add_parser("index", help="scan, encode and index every library folder")
    p.add_argument("--watch", action="store_true", help="keep running and index changes as they happen")
    p.add_argument("--rebuild", action="store_true", help="rebuild the ANN index even if it is fresh")
    p.add_argument("--no-captions", action="store_true", help="skip captioning and tagging new photos")
    p.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="decode and encode on a Ray cluster: auto, ray://HOST:10001, HOST:PORT, or local "
        "(starts Ray here); needs lumen[cluster]",
    )
    p.add_argument("--cluster-batch", type=int, metavar="N", help="photos per Ray task (default 32)")
    _common(p)

    p = sub.add_parser("search", help="find photos by text and/or example images")
    p.add_argument(
        "text",
        nargs="?",
        default=None,
        help='e.g. "a dog on the beach", "2:dog + beach - people", "cat -dog"',
    )
    p.add_argument(
        "--image", action="append", default=[], metavar="PATH", help="an example image (repeatable)"
    )
    p.add_argument("--rerank", action=argparse.BooleanOptionalAction, default=None,
                   help="re-rank the top results with the installed re-ranker (default: the library's setting, on)")
    p.add_argument("--explain", action="store_true",
                   help="with --json: each hit's word-to-region attention (why it matched)")
    _search_opts(p)
    _common(p)

    p = sub.add_parser("similar", help="photos that look like PATH (near-duplicates first)")
    p.add_argument("path")
    _search_opts(p)
    _common(p)

    p = sub.add_parser("status", help="libraries, counts, skipped files, encoder and index")
    p.add_argument("--json", action="store_true")
    p.add_argument("--skipped", type=int, default=20, metavar="N", help="list up to N skipped files")
    _common(p)

    p = sub.add_parser(
        "encoders", help="installed encoders and captioners, and whether their weights are here"
    )
    p.add_argument("--json", action="store_true")
    _common(p)

    p = sub.add_parser("serve", help="the library over HTTP: an API and a web page (see README, `lumen serve`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; others need a token)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--read-only", action="store_true", help="refuse edits even when no other Lumen is writing")
    p.add_argument("--watch", action="store_true", help="index the library folders, then keep indexing changes")
    p.add_argument("--new-token", action="store_true", help="make a new access token, show it once, and exit")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser pages from ORIGIN to call the API (repeatable; default none)")
    _common(p)

    _add_plugin_commands(sub)
    return parser


def _search_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-k", type=int, default=20, help="how many results")
    p.add_argument("--json", action="store_true")
    p.add_argument("--exact", action="store_true", help="exact search instead of the ANN index")
    p.add_argument("--in", dest="root", help="only this library folder")
    p.add_argument("--folder", help="only below this folder")
    p.add_argument("--from", dest="date_from", help="taken on or after (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", help="taken on or before (YYYY-MM-DD)")
    p.add_argument(
        "--type", dest="exts", action="append", default=[], help="file type, e.g. jpg, heic (repeatable)"
    )


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Commands whose code lives beside the feature (training, evaluation).

    Each module offers `register_cli(subparsers, add_common_options)`, which adds its
    parsers and sets `handler=` on them with `set_defaults`."""
    for module in ("desktop.evaluation", "plugins.bert_resnet.train", "plugins.bert_resnet.xattn_train",
                   "desktop.captions_cli"):
        try:
            mod = __import__(module, fromlist=["register_cli"])
        except ImportError as exc:
            log.debug("no CLI from %s: %s", module, exc)
            continue
        register = getattr(mod, "register_cli", None)
        if register is not None:
            register(sub, _common)


def _open(args: argparse.Namespace, **kwargs: object) -> Library:
    return Library.open(args.home, encoder=args.encoder, weights=args.weights, device=args.device, **kwargs)


def cmd_add(args: argparse.Namespace) -> int:
    with _open(args) as lib:
        for folder in args.folders:
            root = lib.add_root(folder)
            if args.no_watch:
                lib.set_watch(root.path, False)
            print(f"added {root.path}")
    print("now run: lumen index")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with _open(args) as lib:
        for folder in args.folders:
            lib.remove_root(folder)
            print(f"removed {os.path.abspath(folder)}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    progress = ProgressLine()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with _open(args) as lib:
        if not lib.roots():
            print("no library folders yet: lumen add FOLDER", file=sys.stderr)
            return 2
        report = lib.index(progress=progress, cancel=stop, cluster=args.cluster, cluster_batch=args.cluster_batch)
        if args.rebuild and not stop.is_set():
            lib.build_index(force=True, progress=progress)
        print(
            f"{report.seen} files seen, {report.hashed} hashed, {report.new_photos} new photos, "
            f"{report.removed} removed, {report.encoded} encoded ({report.images_per_s:.1f} images/s), "
            f"{report.skipped} skipped, {report.problems} unreadable; {report.seconds:.1f}s"
            + (f"; region features added for {report.regions} photos indexed earlier" if report.regions else "")
            + (" — interrupted; run again to resume" if report.cancelled else "")
        )
        for root in report.offline:
            print(f"offline (folder missing, photos kept): {root}")
        if not args.no_captions and not stop.is_set():
            _caption_new(lib, progress, stop)
        if args.watch and not stop.is_set():
            print("watching for changes (Ctrl+C to stop)")
            lib.watch(
                stop,
                on_batch=lambda changes, rep: print(
                    f"{len(changes)} changes: {rep.new_photos} new, {rep.removed} removed, {rep.encoded} encoded"
                ),
                progress=progress,
            )
    return 130 if stop.is_set() and not args.watch else 0


def _caption_new(lib: Library, progress: ProgressLine, stop: threading.Event) -> None:
    """Captions and tags for new photos; a captioner that cannot run does not fail indexing."""

    try:
        done = lib.caption_pending(None, progress=progress, cancel=stop)
    except (LibraryError, EncoderError) as exc:
        print(f"captioning skipped: {exc}", file=sys.stderr)
        return
    print(f"{done.captioned} captioned, {done.tagged} tagged")


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(args.root, args.folder, args.date_from, args.date_to, tuple(args.exts))


def _print_hits(hits: Sequence[Hit], as_json: bool, why: Sequence[object] | None = None) -> None:
    if as_json and why is not None:
        rows = [{"path": h.path, "score": round(h.score, 5), "id": h.photo_id, "explain": w}
                for h, w in zip(hits, why, strict=True)]
        print(json.dumps(rows, indent=1))
        return
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "path": h.path,
                        "score": round(h.score, 5),
                        "id": h.photo_id,
                        "taken_at": h.photo.taken_at,
                        "online": h.photo.online,
                        "kind": h.photo.kind,
                        # a video: the moment that matched, seconds from its start
                        **({"at_s": round(h.at_s, 3), "duration_s": h.photo.duration_s}
                           if h.at_s is not None else {}),
                    }
                    for h in hits
                ],
                indent=1,
            )
        )
        return
    for h in hits:
        at = f"  @ {media.clock(h.at_s)}" if h.at_s is not None else ""
        print(f"{h.score:.3f}  {h.path}{at}")


def cmd_search(args: argparse.Namespace) -> int:
    if not args.text and not args.image:
        print("give some words or --image PATH", file=sys.stderr)
        return 2
    with _open(args, rerank=args.rerank) as lib:
        hits = lib.search(args.text, args.image, k=args.k, filters=_filters(args), exact=args.exact)
        why = lib.explain(args.text, hits) if args.explain and args.text else None
        _print_hits(hits, args.json, why)
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    with _open(args) as lib:
        _print_hits(lib.similar(args.path, k=args.k, filters=_filters(args)), args.json)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _open(args, readonly=None) as lib:
        st = lib.status()
    if args.json:
        data = dataclasses.asdict(st)
        data["skipped"] = data["skipped"][: args.skipped]
        print(json.dumps(data, indent=1, default=str))
        return 0
    print(f"data dir   {st.home}{'  (read-only: another Lumen is writing)' if st.readonly else ''}")
    print(f"encoder    {st.encoder_id or st.encoder + ' (not available: see lumen encoders)'}")
    if st.encoder_reason:
        print(f"           ({st.encoder_reason})")
    age = (
        f", built {datetime.fromtimestamp(st.index_built_at):%Y-%m-%d %H:%M}"
        if st.index_built_at
        else ", not built"
    )
    print(f"index      {st.index_size} vectors{age}; {st.to_encode} photos waiting to be encoded")
    for enc, n in st.vectors.items():
        print(f"vectors    {n:7d}  {enc}")
    for rs in st.roots:
        c = rs.counts
        state = "online" if rs.root.online else "OFFLINE (folder missing; photos kept)"
        print(f"library    {rs.root.path}  [{state}, watch {rs.watching}]")
        print(
            f"           {c['files']} files, {c['photos']} photos: {c['ok']} indexed, {c['new']} new, {c['skipped']} skipped"
        )
    if st.skipped:
        print(f"skipped    {len(st.skipped)} files:")
        for s in st.skipped[: args.skipped]:
            print(f"           {s.path}: {s.reason}")
    return 0


def cmd_encoders(args: argparse.Namespace) -> int:
    rows = []
    for group in (ENCODER_GROUP, CAPTIONER_GROUP, RERANKER_GROUP):
        for entry in installed(group):
            try:
                plugin = entry.load()
                models = [dataclasses.asdict(m) for m in plugin.models()]
                default = plugin.default_model
                error = None
            except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not hide the others
                models, default, error = [], None, f"{type(exc).__name__}: {exc}"
                log.warning("plugin %s failed to load: %s", entry.name, error)
            rows.append(
                {
                    "group": group,
                    "name": entry.name,
                    "module": entry.value,
                    "distribution": entry.distribution,
                    "default": default,
                    "models": models,
                    "error": error,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for row in rows:
        kind = {ENCODER_GROUP: "encoder", CAPTIONER_GROUP: "captioner"}.get(row["group"], "re-ranker")
        print(
            f"{kind} {row['name']}  ({row['module']}, from {row['distribution']}); default {row['default']}"
        )
        if row["error"]:
            print(f"    cannot load: {row['error']}")
        for m in row["models"]:
            print(
                f"    {'[here]' if m['available'] else '[    ]'} {m['spec']:50s} {m['description']}  ({m['where']})"
            )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from desktop import server
    except ImportError as exc:
        print(f"lumen serve needs the server extra: pip install 'lumen[server]' ({exc})", file=sys.stderr)
        return 2
    if args.new_token:
        token = server.new_token(args.home)
        print(f"new access token (shown only now; its hash is in {server.token_path(args.home)}):\n\n  {token}\n")
        print(f"send it as `Authorization: Bearer TOKEN`, or open http://HOST:{args.port}/#token={token}")
        return 0
    return server.serve(server.ServeOptions(
        home=args.home, encoder=args.encoder, weights=args.weights, device=args.device, host=args.host,
        port=args.port, read_only=args.read_only, watch=args.watch, cors_origins=args.cors_origin,
        log_level="debug" if args.verbose > 1 else "info",
    ))


COMMANDS = {
    "add": cmd_add,
    "remove": cmd_remove,
    "index": cmd_index,
    "search": cmd_search,
    "similar": cmd_similar,
    "status": cmd_status,
    "encoders": cmd_encoders,
    "serve": cmd_serve,
}


def _open_gui(argv: Sequence[str]) -> int:
    try:
        from desktop.app import run_app
    except ImportError as exc:
        print(f"the window is not available ({exc}); see `lumen --help`", file=sys.stderr)
        return 2
    return run_app(list(argv))


def _wants_window(argv: Sequence[str], parser: argparse.ArgumentParser) -> bool:
    """`lumen`, `lumen FOLDER`, `lumen --home H FOLDER` open the window; a subcommand anywhere
    (after options and their values) runs on the command line."""
    if any(a in ("-h", "--help", "--version") for a in argv):
        return False
    commands = next(a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg not in commands  # the first positional: a subcommand or a folder
    return True


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):
        # Paths that are not valid UTF-8 (old cameras, other OSes) must print, not crash.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    parser = build_parser()
    if _wants_window(argv, parser):
        return _open_gui(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if args.verbose > 1
        else logging.INFO
        if args.verbose or not sys.stderr.isatty()
        else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler = COMMANDS.get(args.command) or getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except (LibraryError, EncoderError) as exc:
        print(f"lumen: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
