"""The catalog: one SQLite file (WAL) that is the source of truth for everything Lumen knows.

One `Catalog` object is one connection; each concept's queries live in their own module
and are joined here:

- db.py: the connection, the schema and its migrations (`PRAGMA user_version`), meta;
- items.py: libraries (roots), files on disk, photos (identity = content hash);
- vectors.py: one vector per (photo, encoder id);
- text.py: captions and tags per (photo, source), the user's own words, word search (FTS5);
- albums.py: smart albums (saved searches).

Only the writer thread (desktop/store.py) calls the write methods; every other thread
opens its own read connection (`Catalog(path, readonly=True)`).
"""

from desktop.catalog.albums import Album, AlbumsMixin
from desktop.catalog.db import MIGRATIONS, SCHEMA_VERSION, USER, CatalogError, Database
from desktop.catalog.items import GONE_GRACE_S, FileState, ItemsMixin, Photo, Root, Skipped
from desktop.catalog.text import Caption, Pending, PhotoText, TextMixin, WordMatch
from desktop.catalog.vectors import VectorsMixin


class Catalog(ItemsMixin, VectorsMixin, TextMixin, AlbumsMixin, Database):
    """A connection to the catalog file. Create one per thread."""


__all__ = [
    "GONE_GRACE_S", "MIGRATIONS", "SCHEMA_VERSION", "USER", "Album", "Caption", "Catalog", "CatalogError",
    "FileState", "Pending", "Photo", "PhotoText", "Root", "Skipped", "WordMatch",
]
