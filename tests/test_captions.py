"""Organizing by caption: retrieval captions, tags, word search, smart albums, edits, export.

Real SQLite (FTS5), real image files, the deterministic `colors` encoder: a bank line
"a red photo" embeds to the red direction, so the right caption is known for every photo.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import sqlite_utils
from conftest import COLORS, make_photo

from desktop import captions, export, search
from desktop.catalog import MIGRATIONS, USER, Catalog
from desktop.cli import main
from desktop.encoders import EncoderError
from desktop.library import Filters, Library, LibraryError

COLOR_NAMES = list(COLORS)  # red green blue yellow white black
DC = "{http://purl.org/dc/elements/1.1/}"
RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"


def names(hits) -> list[str]:
    return sorted(Path(h.path).name for h in hits)


@pytest.fixture
def bank(tmp_path: Path) -> Path:
    """A small caption bank: one line per colour, plus repeats the loader must drop."""
    path = tmp_path / "colours.txt"
    lines = [
        "# colours",
        *(f"a {c} photo ." for c in [*COLOR_NAMES, "purple"]),
        "A RED photo",
        "a red picture",
        "",
        "a green photograph",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def indexed(lib: Library, photos: Path) -> Library:
    lib.add_root(photos)
    lib.index()
    return lib


def caption_of(lib: Library, path: Path) -> str | None:
    photo = lib.catalog.photo_by_path(str(path))
    cap = lib.catalog.caption_of(photo.id)
    return cap.text if cap else None


# ---- the retrieval captioner ------------------------------------------------------------
def test_retrieval_captioner_picks_the_right_caption(indexed: Library, photos: Path, bank: Path) -> None:
    report = indexed.caption_pending(f"retrieval:{bank}")
    assert report.captioned == 12 and report.skipped == 0
    for colour in COLOR_NAMES:
        assert caption_of(indexed, photos / f"{colour}-1.jpg") == f"a {colour} photo."
        assert caption_of(indexed, photos / "sub" / f"{colour}-2.png") == f"a {colour} photo."
    photo = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    (cap,) = [c for c in indexed.catalog.captions(photo.id) if c.source == report.captioner]
    assert cap.score is not None and cap.score > 0.9 and not cap.edited


def test_bank_is_deduplicated_cached_and_searchable(indexed: Library, bank: Path, photos: Path) -> None:
    captioner = indexed.make_captioner(f"retrieval:{bank}")
    assert captioner.id.startswith("retrieval:colours-") and captioner.id.endswith("@colors:hist-v1")
    # "A RED photo" repeats a line exactly; "a red picture" and "a green photograph" embed
    # like "a red photo" / "a green photo" for this encoder: near-duplicates, dropped.
    assert captioner.model.texts == [f"a {c} photo." for c in [*COLOR_NAMES, "purple"]]
    cached = list((indexed.paths.cache / "text-vectors").rglob("bank-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[0] == 9
    vec = indexed.catalog.vector_of(
        indexed.catalog.photo_by_path(str(photos / "blue-1.jpg")).id, "colors:hist-v1"
    )
    top = captioner.top(vec, 3)[0]
    assert top[0][0] == "a blue photo." and len(top) == 3 and top[0][1] >= top[1][1]
    # Captioning decoded images (no stored vector) gives the same answer.
    from desktop import images

    assert captioner.caption([images.load_for_encoding(photos / "yellow-1.jpg")]) == ["a yellow photo."]


def test_default_bank_comes_from_the_vocabulary() -> None:
    from plugins.retrieval import resolve_bank

    bank = resolve_bank(None)  # what the plain `retrieval` captioner uses
    assert bank.name == "tags" and len(bank.texts) > 2000
    assert "A photo of a dog." in bank.texts


def test_no_general_tags_or_captions_from_an_encoder_without_meaning(indexed: Library, bank: Path) -> None:
    """`colors` only knows colour words: "brown bear" on a brown photo would be false."""
    with pytest.raises(EncoderError, match="does not understand general concepts"):
        indexed.make_captioner("retrieval")
    report = indexed.caption_pending()  # the defaults: nothing made up, nothing stored
    assert report.captioner is None and report.captioned == 0 and report.tagged == 0
    assert indexed.tag_counts() == []
    assert indexed.caption_pending(f"retrieval:{bank}").captioned > 0  # the user's own bank


def test_missing_bank_and_missing_encoder_fail_clearly(indexed: Library, tmp_path: Path) -> None:
    from desktop.encoders import EncoderError, create_captioner

    with pytest.raises(EncoderError, match="caption bank .* not found"):
        indexed.make_captioner(f"retrieval:{tmp_path / 'nope.txt'}")
    with pytest.raises(EncoderError, match="library's encoder"):
        create_captioner("retrieval")


# ---- background captioning --------------------------------------------------------------
def test_captioning_is_batched_cancellable_and_resumes(indexed: Library, bank: Path) -> None:
    cancel = threading.Event()
    seen = []

    def progress(p) -> None:
        seen.append((p.stage, p.done, p.total))
        cancel.set()  # stop after the first batch

    first = indexed.caption_pending(f"retrieval:{bank}", progress, cancel, batch_size=5)
    assert first.cancelled and first.captioned == 5 and seen == [("caption", 5, 12)]
    second = indexed.caption_pending(f"retrieval:{bank}", batch_size=5)
    assert second.captioned == 7 and not second.cancelled
    assert indexed.caption_pending(f"retrieval:{bank}").captioned == 0  # nothing left


def test_a_better_captioner_adds_rows(indexed: Library, bank: Path, tmp_path: Path, photos: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("red things\nblue things\n")
    indexed.caption_pending(f"retrieval:{bank}", tags=False)
    indexed.caption_pending(f"retrieval:{other}", tags=False)
    photo = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    assert {c.text for c in indexed.catalog.captions(photo.id)} == {"a red photo.", "red things"}
    assert indexed.catalog.caption_of(photo.id).text == "red things"  # the newest is shown


def test_user_edit_survives_recaptioning(indexed: Library, bank: Path, photos: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}")
    photo = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    indexed.set_caption(photo.id, "Grandma's red kitchen")
    indexed.set_tags(photo.id, ["kitchen", "grandma"])
    report = indexed.caption_pending(f"retrieval:{bank}", redo=True)
    assert report.captioned == 12  # every machine caption was redone...
    shown = indexed.catalog.caption_of(photo.id)
    assert (shown.text, shown.source, shown.edited) == ("Grandma's red kitchen", USER, True)  # ...not this
    assert indexed.catalog.effective_tags(photo.id) == ["kitchen", "grandma"]
    # A machine writing under "user" by mistake still cannot replace the edit.
    indexed.store.write(lambda c: c._put_caption(photo.id, USER, "a red photo.", 0.9))
    assert indexed.catalog.caption_of(photo.id).text == "Grandma's red kitchen"
    # Giving the edit back shows the machines' words again.
    indexed.set_caption(photo.id, "")
    indexed.set_tags(photo.id, None)
    assert indexed.catalog.caption_of(photo.id).text == "a red photo."
    assert "kitchen" not in indexed.catalog.effective_tags(photo.id)


# ---- tags -------------------------------------------------------------------------------
def test_vocabulary_file_is_parsed_with_its_settings() -> None:
    vocab = captions.load_vocabulary()
    assert len(vocab.tags) > 2000 and len(set(vocab.tags)) == len(vocab.tags)
    assert (vocab.threshold, vocab.temperature, vocab.max_tags, vocab.min_tags) == (0.05, 0.01, 8, 1)
    prompts = dict(zip(vocab.tags, vocab.prompts, strict=True))
    assert prompts["dog"] == "a photo of a dog, a type of animal."
    assert prompts["elephant"] == "a photo of an elephant, a type of animal."
    assert prompts["jeans"] == "a photo of someone wearing jeans."
    assert all("{" not in p for p in vocab.prompts)


def test_zero_shot_tags_from_a_vocabulary(indexed: Library, tmp_path: Path, photos: Path) -> None:
    vocab = tmp_path / "v.txt"
    vocab.write_text(
        "# @threshold 0.2\n# @max_tags 2\n# @group colours: a {tag} photo.\nred\nblue\ngreen\nyellow\n"
    )
    report = indexed.caption_pending(captions=False, vocabulary=vocab)
    assert report.captioned == 0 and report.tagged == 12
    red = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    assert indexed.catalog.effective_tags(red.id)[0] == "red"
    rows = indexed.catalog.tags(red.id)
    assert all(src == "zeroshot:colors:hist-v1" and 0.2 <= score <= 1 for _, src, score in rows)
    white = indexed.catalog.photo_by_path(str(photos / "white-1.jpg"))
    assert len(indexed.catalog.effective_tags(white.id)) >= 1  # min_tags: never empty
    counts = dict(indexed.tag_counts())
    assert counts["red"] >= 2 and counts["blue"] >= 2
    assert {"red-1.jpg", "red-2.png"} <= set(names(indexed.photos_with_tag("red")))


def test_classifier_tags_keep_confident_labels() -> None:
    class Labels:
        id = "fake"

        def tags(self, imgs, top_k=5):
            return [
                [("golden retriever", 0.7), ("tennis ball", 0.25), ("jersey", 0.05)][:top_k] for _ in imgs
            ]

    tagger = captions.ClassifierTagger(Labels())  # type: ignore[arg-type]
    assert tagger.source == "classifier:fake"
    assert tagger.tag(np.zeros((1, 2)), [object()]) == [[("golden retriever", 0.7), ("tennis ball", 0.25)]]


def test_tag_edits_replace_the_machines_set(indexed: Library, photos: Path) -> None:
    photo = indexed.catalog.photo_by_path(str(photos / "green-1.jpg"))
    indexed.store.write(lambda c: c.set_tags(photo.id, "zeroshot:x", [("grass", 0.5), ("field", 0.2)]))
    assert indexed.edit_tags(photo.id, add=["Holiday", "holiday"], remove=["FIELD"]) == [
        "grass",
        "Holiday",
    ]
    assert indexed.catalog.tags_edited(photo.id)
    indexed.set_tags(photo.id, [])  # an empty set is a decision too
    assert indexed.catalog.effective_tags(photo.id) == []
    assert captions.parse_tags("beach, sunset; dog\n, ") == ["beach", "sunset", "dog"]


# ---- word search, meaning, both ---------------------------------------------------------
def test_words_query_syntax() -> None:
    q = search.words_query
    assert q("dog beach") == '"dog" "beach"'
    assert q('"red car" sun*') == '"red car" "sun"*'
    assert q("dog -cat OR") == '"dog" NOT "cat"'
    assert q("cat OR dog") == '"cat" OR "dog"'
    assert q("tag:beach caption:dog") == 'tags : "beach" caption : "dog"'
    assert q('2:dog + "it"s"') == '"dog" "it" "s"'
    with pytest.raises(LibraryError):
        q("-cat")
    assert search.meaning_text('tag:beach "red car" sun*') == "beach red car sun"


def test_fts_finds_edited_captions_at_once(indexed: Library, bank: Path, photos: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}", tags=False)
    assert names(indexed.find_words("red")) == ["red-1.jpg", "red-2.png"]
    photo = indexed.catalog.photo_by_path(str(photos / "blue-1.jpg"))
    indexed.set_caption(photo.id, "Rex the dogs swimming in Lake Constance")
    # Found at once, stemmed ("dog" finds "dogs", "swim" finds "swimming"), accents ignored...
    assert names(indexed.find_words("dog swim")) == ["blue-1.jpg"]
    assert names(indexed.find_words("constance lake")) == ["blue-1.jpg"]
    hit = indexed.find_words("rex")[0]
    assert hit.words and "[Rex]" in (hit.snippet or "")
    # ...and the machine caption it replaced no longer matches.
    assert names(indexed.find_words("blue")) == ["blue-2.png"]
    indexed.set_tags(photo.id, ["summer holiday"])
    assert names(indexed.find_words("tag:holiday")) == ["blue-1.jpg"]
    assert indexed.find_words("caption:holiday") == []
    assert names(indexed.find_words("photo -red -green -yellow -white -black")) == ["blue-2.png"]
    sub = Filters(folder=str(photos / "sub"))
    assert names(indexed.find_words("red", filters=sub)) == ["red-2.png"]


def test_mixed_ranking_puts_words_and_meaning_first(indexed: Library, photos: Path) -> None:
    blue = indexed.catalog.photo_by_path(str(photos / "blue-1.jpg"))
    red = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    indexed.set_caption(blue.id, "a red scarf on a chair")  # words only
    indexed.set_caption(red.id, "red tomatoes")  # words and meaning
    hits = indexed.find("red", k=12)
    assert Path(hits[0].path).name == "red-1.jpg" and hits[0].words and hits[0].similarity > 0.9
    assert {Path(h.path).name for h in hits[:3]} == {"red-1.jpg", "red-2.png", "blue-1.jpg"}
    by_name = {Path(h.path).name: h for h in hits}
    assert by_name["red-2.png"].similarity > 0.9 and not by_name["red-2.png"].words
    assert by_name["blue-1.jpg"].words and len(hits) == 12
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    meaning = indexed.find("red", k=2, mode="meaning")
    assert names(meaning) == ["red-1.jpg", "red-2.png"] and not any(h.words for h in meaning)
    assert names(indexed.find("red", mode="words")) == ["blue-1.jpg", "red-1.jpg"]


# ---- smart albums -----------------------------------------------------------------------
def test_smart_albums_update_as_new_photos_are_indexed(indexed: Library, photos: Path, bank: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}")
    indexed.save_album("Reds", "red", mode="words")
    indexed.save_album("Yellowish", "yellow", mode="meaning", min_score=0.9)
    assert names(indexed.album_photos("reds")) == ["red-1.jpg", "red-2.png"]
    assert names(indexed.album_photos("Yellowish")) == ["yellow-1.jpg", "yellow-2.png"]

    make_photo(photos / "new" / "red-3.jpg", "red", seed=301)
    make_photo(photos / "new" / "yellow-3.jpg", "yellow", seed=302)
    indexed.index()
    # Meaning matches appear as soon as the photo is indexed...
    assert "yellow-3.jpg" in names(indexed.album_photos("Yellowish"))
    # ...word matches as soon as it is captioned (what the app does after indexing).
    indexed.caption_pending(f"retrieval:{bank}")
    assert names(indexed.album_photos("Reds")) == ["red-1.jpg", "red-2.png", "red-3.jpg"]
    assert [a.name for a in indexed.albums()] == ["Reds", "Yellowish"]
    assert indexed.delete_album("reds") and not indexed.delete_album("reds")
    with pytest.raises(LibraryError):
        indexed.album_photos("Reds")


def test_album_keeps_its_filters_and_rejects_bad_queries(indexed: Library, photos: Path, bank: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}", tags=False)
    album = indexed.save_album(" Sub  reds ", "red", "both", Filters(folder=str(photos / "sub")), 1)
    assert album.name == "Sub reds" and indexed.catalog.album("sub reds").filters == {
        "folder": str(photos / "sub")
    }
    assert names(indexed.album_photos(album)) == ["red-2.png"]
    with pytest.raises(LibraryError):
        indexed.save_album("x", "-everything")


# ---- export -----------------------------------------------------------------------------
def test_xmp_sidecars_parse_back_with_the_same_text(indexed: Library, photos: Path, bank: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}")
    photo = indexed.catalog.photo_by_path(str(photos / "red-1.jpg"))
    caption = 'Café "au lait" & <croissants> — 東京'
    indexed.set_caption(photo.id, caption)
    indexed.set_tags(photo.id, ["breakfast", "Tōkyō", "a & b"])
    report = export.export(indexed, "xmp")
    assert len(report.written) == 12 and not report.failed
    sidecar = photos / "red-1.jpg.xmp"
    assert export.xmp_sidecar_path(photos / "red-1.jpg") == sidecar and sidecar.exists()
    # Read with a plain XML parser (not our reader): the standard XMP structure.
    root = ET.parse(sidecar).getroot()
    assert root.tag == "{adobe:ns:meta/}xmpmeta"
    alt = root.find(f"{RDF}RDF/{RDF}Description/{DC}description/{RDF}Alt/{RDF}li")
    assert alt.text == caption and alt.get("{http://www.w3.org/XML/1998/namespace}lang") == "x-default"
    bag = root.findall(f"{RDF}RDF/{RDF}Description/{DC}subject/{RDF}Bag/{RDF}li")
    assert [li.text for li in bag] == ["breakfast", "Tōkyō", "a & b"]
    dom = xml.dom.minidom.parse(str(sidecar))  # a second, independent parser agrees
    assert (
        dom.getElementsByTagNameNS(DC[1:-1], "description")[0]
        .getElementsByTagNameNS(RDF[1:-1], "li")[0]
        .firstChild.data
        == caption
    )
    blue = export.read_xmp(photos / "sub" / "blue-2.png.xmp")
    assert blue[0] == "a blue photo." and blue[1] == indexed.catalog.effective_tags(
        indexed.catalog.photo_by_path(str(photos / "sub" / "blue-2.png")).id
    )


DARKTABLE_SIDECAR = """<?xml version="1.0" encoding="UTF-8"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="XMP Core 4.4.0-Exiv2">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:darktable="http://darktable.sf.net/"
   xmp:Rating="3"
   darktable:xmp_version="5">
   <darktable:history><rdf:Seq><rdf:li darktable:operation="exposure"/></rdf:Seq></darktable:history>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">old words</rdf:li></rdf:Alt></dc:description>
   <dc:subject><rdf:Bag><rdf:li>darktable|format|jpg</rdf:li><rdf:li>family</rdf:li></rdf:Bag></dc:subject>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
"""


def test_xmp_export_keeps_what_other_programs_wrote(tmp_path: Path) -> None:
    sidecar = tmp_path / "IMG_1.jpg.xmp"
    sidecar.write_text(DARKTABLE_SIDECAR, encoding="utf-8")
    export.write_xmp(sidecar, "a dog on a beach", ["dog", "family"])
    root = ET.parse(sidecar).getroot()
    desc = root.find(f"{RDF}RDF/{RDF}Description")
    assert desc.get("{http://ns.adobe.com/xap/1.0/}Rating") == "3"
    assert desc.find("{http://darktable.sf.net/}history") is not None
    assert export.read_xmp(sidecar) == ("a dog on a beach", ["darktable|format|jpg", "family", "dog"])
    export.write_xmp(sidecar, None, ["cat"], replace_keywords=True)
    assert export.read_xmp(sidecar) == ("a dog on a beach", ["cat"])  # no caption: theirs stays


def test_csv_and_json_export(indexed: Library, photos: Path, bank: Path, tmp_path: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}", tags=False)
    photo = indexed.catalog.photo_by_path(str(photos / "green-1.jpg"))
    indexed.set_tags(photo.id, ["lawn", "garden"])
    export.export(indexed, "csv", tmp_path / "out.csv")
    rows = list(csv.DictReader(open(tmp_path / "out.csv", encoding="utf-8")))
    assert len(rows) == 12 and set(rows[0]) == set(export.CSV_FIELDS)
    green = next(r for r in rows if r["path"] == str(photos / "green-1.jpg"))
    assert (
        green["caption"] == "a green photo."
        and green["tags"] == "lawn; garden"
        and green["tags_edited"] == "1"
    )
    stream = io.StringIO()
    export.export(indexed, "json", stream)
    data = json.loads(stream.getvalue())
    assert len(data) == 12 and {"caption", "tags", "paths", "caption_source"} <= set(data[0])
    with pytest.raises(LibraryError):
        export.export(indexed, "yaml")


# ---- the catalog underneath -------------------------------------------------------------
def test_schema_v2_migrates_a_v1_catalog_and_indexes_its_captions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    db = sqlite_utils.Database(conn)
    with conn:
        MIGRATIONS[0](db)
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO photos(id, hash, status) VALUES (1, 'h', 'ok')")
        conn.execute(
            "INSERT INTO captions(photo_id, source, text, edited) VALUES (1, 'coca', 'a cat on a mat', 0)"
        )
        conn.execute("INSERT INTO tags(photo_id, source, tag, score) VALUES (1, 'x', 'kitten', 0.5)")
    conn.close()
    cat = Catalog(path)
    assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert [m.photo_id for m in cat.find_words('"cats"')] == [1]
    assert [m.photo_id for m in cat.find_words('tags : "kitten"')] == [1]
    assert cat.effective_tags(1) == ["kitten"] and cat.integrity_ok()
    cat.close()


def test_gone_photos_leave_the_word_index(indexed: Library, photos: Path, bank: Path) -> None:
    indexed.caption_pending(f"retrieval:{bank}")
    (photos / "red-1.jpg").unlink()
    indexed.index()
    assert names(indexed.find_words("red")) == ["red-2.png"]
    indexed.store.write(lambda c: c.purge_gone(older_than=0))
    left = indexed.catalog.conn.execute("SELECT COUNT(*) FROM photo_words").fetchone()[0]
    assert left == 11


# ---- the command line -------------------------------------------------------------------
def lumen(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(capsys, photos: Path, home: Path, bank: Path, tmp_path: Path) -> None:
    h = ["--home", str(home)]
    assert lumen(capsys, "add", str(photos), *h, "--encoder", "colors")[0] == 0
    assert lumen(capsys, "index", "--no-captions", *h)[0] == 0
    code, out, _ = lumen(capsys, "caption", "--captioner", f"retrieval:{bank}", *h)
    assert code == 0 and "12 captioned" in out and "0 tagged" in out  # colors: no general tags

    red = str(photos / "red-1.jpg")
    code, out, _ = lumen(capsys, "tags", red, *h)
    assert code == 0 and "caption  a red photo." in out
    code, out, _ = lumen(
        capsys, "tags", red, "--caption", "Our red door", "--set", "door, home", "--add", "paint", *h
    )
    assert code == 0 and "Our red door (yours)" in out and "door, home, paint (yours)" in out
    code, out, _ = lumen(capsys, "tags", *h, "--json")
    assert {"tag": "door", "photos": 1} in json.loads(out)

    code, out, _ = lumen(capsys, "find-words", "door", "--json", *h)
    assert code == 0 and [Path(x["path"]).name for x in json.loads(out)] == ["red-1.jpg"]
    code, out, _ = lumen(capsys, "find-words", "nothing-like-this", *h)
    assert code == 1 and out == ""
    code, out, _ = lumen(capsys, "find-words", "red", "--mode", "both", "-k", "2", *h)
    assert code == 0 and "red-1.jpg" in out and "red-2.png" in out

    assert lumen(capsys, "album", "save", "Reds", "red", "--mode", "words", *h)[0] == 0
    code, out, _ = lumen(capsys, "album", "show", "Reds", "--json", *h)
    assert sorted(Path(x["path"]).name for x in json.loads(out)) == ["red-1.jpg", "red-2.png"]
    assert "Reds: 'red' (words)" in lumen(capsys, "album", "list", *h)[1]
    assert lumen(capsys, "album", "delete", "Reds", *h)[0] == 0

    code, out, _ = lumen(capsys, "caption", "--captioner", f"retrieval:{bank}", "--redo", *h)
    assert code == 0 and "12 captioned" in out
    assert "Our red door (yours)" in lumen(capsys, "tags", red, *h)[1]

    code, _, _ = lumen(capsys, "export", "--format", "csv", "--out", str(tmp_path / "x.csv"), *h)
    assert code == 0 and len((tmp_path / "x.csv").read_text().splitlines()) == 13
    code, out, _ = lumen(capsys, "export", "--format", "json", *h)
    assert code == 0 and len(json.loads(out)) == 12
    code, _, err = lumen(capsys, "export", "--format", "xmp", *h)
    assert code == 0 and "wrote 12 files" in err
    assert export.read_xmp(red + ".xmp")[0] == "Our red door"

    code, _, err = lumen(capsys, "caption", "--captioner", "retrieval:/no/such/bank.txt", *h)
    assert code == 1 and "not found" in err


def test_an_image_only_encoder_still_tags_without_the_default_captioner(indexed: Library, bank: Path) -> None:
    indexed.encoder.joint = False  # e.g. bert_resnet before its heads are trained
    report = indexed.caption_pending()  # the default captioner needs text: skipped, logged
    assert report.captioner is None and report.captioned == 0
    with pytest.raises(EncoderError, match="joint"):
        indexed.caption_pending(f"retrieval:{bank}")  # asked for by name: an error


def test_consensus_reranking_is_on_for_big_banks_only(indexed: Library) -> None:
    from plugins.retrieval import AUTO_CONSENSUS, Bank, RetrievalCaptioner

    small = RetrievalCaptioner(indexed.encoder, Bank("small", ("a red photo",), "d1"))
    big = RetrievalCaptioner(indexed.encoder, Bank("big", tuple(f"caption {i}" for i in range(5000)), "d2"))
    assert small.consensus == 0 and "+consensus" not in small.id
    assert big.consensus == AUTO_CONSENSUS and "+consensus1@" in big.id
    assert RetrievalCaptioner(indexed.encoder, Bank("big", big.bank.texts, "d2"), consensus=0).consensus == 0
