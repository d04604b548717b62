"""THE threading boundary between Qt and the core: the only place besides desktop/ui/ that
imports Qt. Widgets ask `Jobs` (bridge.py) for anything slow and get the answer as a signal.

- `IndexingJob` (indexing.py): the long-running indexing and watching thread;
- `WorkerPool` / `Worker` (workers.py): interactive work — searches, details, captions, edits;
- `ThumbnailLoader` (thumbnails.py): thumbnails and previews, newest request first.
"""

from desktop.jobs import compat  # noqa: F401 - guards against a PySide6 refcount bug before any Qt work
from desktop.jobs.bridge import (
    BROWSE_LIMIT,
    SEARCH_K,
    Details,
    Jobs,
    PluginModels,
    Query,
    Results,
    browse,
    format_duration,
    list_plugins,
    photo_details,
)
from desktop.jobs.indexing import INDEXER_NICE, IndexingJob
from desktop.jobs.thumbnails import ThumbnailLoader, load_preview, load_small_image, thumb_key
from desktop.jobs.workers import Worker, WorkerPool, encoder_message, ensure_encoder, user_message

__all__ = [
    "BROWSE_LIMIT", "INDEXER_NICE", "SEARCH_K", "Details", "IndexingJob", "Jobs", "PluginModels", "Query",
    "Results", "ThumbnailLoader", "Worker", "WorkerPool", "browse", "encoder_message", "ensure_encoder",
    "format_duration", "list_plugins", "load_preview", "load_small_image", "photo_details", "thumb_key",
    "user_message",
]
