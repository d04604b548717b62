"""`lumen caption | tags | find-words | album | export`: the organizing commands.

Registered through desktop.cli's plugin-command hook; all the work is in
the Library facade and desktop/export.py, exactly what the window calls.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from desktop import export
from desktop.library import DEFAULT_CAPTIONER, Filters, Found, Library, LibraryError, parse_tags

COMMANDS = ("caption", "tags", "find-words", "album", "export")


def _open(args: argparse.Namespace, write: bool) -> Library:
    return Library.open(
        args.home,
        encoder=args.encoder,
        weights=args.weights,
        device=args.device,
        readonly=None if not write else False,
    )


def _filters(args: argparse.Namespace) -> Filters:
    return Filters(args.root, args.folder, args.date_from, args.date_to, tuple(args.exts))


def _filter_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--in", dest="root", help="only this library folder")
    p.add_argument("--folder", help="only below this folder")
    p.add_argument("--from", dest="date_from", help="taken on or after (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", help="taken on or before (YYYY-MM-DD)")
    p.add_argument("--type", dest="exts", action="append", default=[], help="file type (repeatable)")


def _print_found(hits: list[Found], as_json: bool) -> None:
    if as_json:
        rows = [
            {
                "path": h.path,
                "id": h.photo_id,
                "score": round(h.score, 5),
                "words": h.words,
                "similarity": None if h.similarity is None else round(h.similarity, 5),
                "snippet": h.snippet,
            }
            for h in hits
        ]
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return
    for h in hits:
        why = " ".join(
            filter(
                None,
                [
                    h.snippet and f"words: {h.snippet}",
                    h.similarity is not None and f"similarity {h.similarity:.3f}" or "",
                ],
            )
        )
        print(f"{h.score:.4f}  {h.path}  ({why})")


def cmd_caption(args: argparse.Namespace) -> int:
    from desktop.console import ProgressLine

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with _open(args, write=True) as lib:
        report = lib.caption_pending(
            args.captioner,
            ProgressLine(),
            stop,
            redo=args.redo,
            captions=not args.tags_only,
            tags=not args.no_tags,
            vocabulary=args.vocabulary,
        )
    print(
        f"{report.captioned} captioned ({report.captioner or 'no captioner'}), {report.tagged} tagged, "
        f"{report.skipped} unreadable; {report.seconds:.1f}s"
        + (" — interrupted; run again to resume" if report.cancelled else "")
    )
    return 130 if report.cancelled else 0


def cmd_tags(args: argparse.Namespace) -> int:
    edits = args.set is not None or args.add or args.remove or args.caption is not None or args.reset
    if args.path is None:
        if edits:
            print("editing needs a photo: lumen tags PATH --add TAG", file=sys.stderr)
            return 2
        with _open(args, write=False) as lib:
            counts = lib.tag_counts(args.contains, args.limit)
        if args.json:
            print(json.dumps([{"tag": t, "photos": n} for t, n in counts], indent=1, ensure_ascii=False))
        for tag, n in [] if args.json else counts:
            print(f"{n:6d}  {tag}")
        return 0
    with _open(args, write=bool(edits)) as lib:
        photo = lib.catalog.photo_by_path(args.path)
        if photo is None:
            raise LibraryError(f"{args.path}: not in the library (run lumen index)")
        if args.reset:
            lib.set_caption(photo.id, None)
            lib.set_tags(photo.id, None)
        if args.caption is not None:
            lib.set_caption(photo.id, args.caption)
        if args.set is not None:
            lib.set_tags(photo.id, parse_tags(args.set))
        if args.add or args.remove:
            lib.edit_tags(photo.id, args.add, args.remove)
        text = lib.photo_text(photo.id)
        all_captions = lib.catalog.captions(photo.id)
    assert text is not None
    if args.json:
        data: dict[str, Any] = {**text.__dict__, "all_captions": [c.__dict__ for c in all_captions]}
        print(json.dumps(data, indent=1, ensure_ascii=False))
        return 0
    mark = lambda edited: " (yours)" if edited else ""  # noqa: E731
    print(f"caption  {text.caption or '—'}{mark(text.caption_edited)}")
    print(f"tags     {', '.join(text.tags) or '—'}{mark(text.tags_edited)}")
    for c in all_captions:
        if c.source != text.caption_source:
            score = f" {c.score:.3f}" if c.score is not None else ""
            print(f"also     {c.text}  [{c.source}{score}]")
    return 0


def cmd_find_words(args: argparse.Namespace) -> int:
    with _open(args, write=False) as lib:
        hits = lib.find(args.words, k=args.k, filters=_filters(args), mode=args.mode)
    _print_found(hits, args.json)
    return 0 if hits else 1


def cmd_album(args: argparse.Namespace) -> int:
    write = args.action in ("save", "delete")
    with _open(args, write=write) as lib:
        if args.action == "list":
            for a in lib.albums():
                print(f"{a.name}: {a.query!r} ({a.mode}{', ' + json.dumps(a.filters) if a.filters else ''})")
        elif args.action == "save":
            if not args.name or not args.query:
                print("lumen album save NAME QUERY", file=sys.stderr)
                return 2
            a = lib.save_album(
                args.name, args.query, args.mode, _filters(args), args.max, args.min_score
            )
            print(f"saved smart album {a.name!r}: {len(lib.album_photos(a))} photos now")
        elif args.action == "show":
            _print_found(lib.album_photos(args.name or ""), args.json)
        elif args.action == "delete":
            if not lib.delete_album(args.name or ""):
                print(f"no smart album named {args.name!r}", file=sys.stderr)
                return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args, write=False) as lib:
        out = args.out if args.out not in (None, "-") else (sys.stdout if args.format != "xmp" else None)
        report = export.export(
            lib, args.format, out, replace_keywords=args.replace_keywords, everything=args.all
        )
    if args.format == "xmp" or out is not sys.stdout:
        print(
            f"{report.photos} photos; wrote {len(report.written)} files"
            + (f"; {len(report.failed)} failed" if report.failed else ""),
            file=sys.stderr,
        )
        for path, why in report.failed:
            print(f"  {path}: {why}", file=sys.stderr)
    return 1 if report.failed else 0


def register_cli(
    sub: argparse._SubParsersAction, add_common: Callable[[argparse.ArgumentParser], None]
) -> None:
    p = sub.add_parser("caption", help="caption and tag every indexed photo that has none yet")
    p.add_argument(
        "--captioner",
        help=f"captioner spec (default: {DEFAULT_CAPTIONER}, "
        "the best match in a caption bank; retrieval:BANK.txt, coca, ...)",
    )
    p.add_argument("--redo", action="store_true", help="caption all photos again (your own edits stay)")
    p.add_argument("--no-tags", action="store_true", help="captions only")
    p.add_argument("--tags-only", action="store_true", help="tags only")
    p.add_argument("--vocabulary", help="tag vocabulary file (default: the shipped resources/tags.txt)")
    p.set_defaults(handler=cmd_caption)
    add_common(p)

    p = sub.add_parser("tags", help="a photo's caption and tags (and edit them), or every tag with counts")
    p.add_argument("path", nargs="?", help="a photo; without it: all tags and how many photos have each")
    p.add_argument("--caption", help="set your own caption ('' removes it)")
    p.add_argument("--set", metavar="TAGS", help="set your own tags: 'beach, sunset'")
    p.add_argument("--add", action="append", default=[], metavar="TAG", help="add a tag (repeatable)")
    p.add_argument("--remove", action="append", default=[], metavar="TAG", help="remove a tag (repeatable)")
    p.add_argument("--reset", action="store_true", help="forget your edits: show the machines' again")
    p.add_argument("--contains", help="only tags containing this text (listing)")
    p.add_argument("--limit", type=int, help="at most this many tags (listing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_tags)
    add_common(p)

    p = sub.add_parser("find-words", help="photos whose caption or tags contain the words")
    p.add_argument("words", help='e.g. "dog beach", "\\"red car\\"", "sun*", "dog -cat", "tag:beach"')
    p.add_argument(
        "--mode",
        choices=("words", "meaning", "both"),
        default="words",
        help="words only (default), meaning only, or both (rank fusion)",
    )
    p.add_argument("-k", type=int, default=50, help="how many results")
    p.add_argument("--json", action="store_true")
    _filter_opts(p)
    p.set_defaults(handler=cmd_find_words)
    add_common(p)

    p = sub.add_parser("album", help="smart albums: saved searches that fill in as photos arrive")
    p.add_argument("action", choices=("list", "save", "show", "delete"))
    p.add_argument("name", nargs="?")
    p.add_argument("query", nargs="?")
    p.add_argument("--mode", choices=("words", "meaning", "both"), default="both")
    p.add_argument("--max", type=int, help="at most this many meaning matches (default 200)")
    p.add_argument("--min-score", type=float, help="least similarity of a meaning match")
    p.add_argument("--json", action="store_true")
    _filter_opts(p)
    p.set_defaults(handler=cmd_album)
    add_common(p)

    p = sub.add_parser("export", help="export captions and tags to CSV, JSON or XMP sidecars")
    p.add_argument("--format", choices=("csv", "json", "xmp"), required=True)
    p.add_argument("--out", help="file for csv/json (default: standard output)")
    p.add_argument(
        "--replace-keywords",
        action="store_true",
        help="xmp: replace the sidecar's keywords instead of adding to them",
    )
    p.add_argument("--all", action="store_true", help="also photos with no caption or tags")
    p.set_defaults(handler=cmd_export)
    add_common(p)
