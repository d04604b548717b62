"""The thumbnail grid: one model, one view, one delegate — no widget per photo.

`PhotoModel` holds the hits of the current query (100 000 is fine: a row is a Python
object in a list). Thumbnails are asked for when the delegate paints a row, so only
visible rows are requested; when the view scrolls, requests for rows that left the
screen are dropped before they are made. Rows without a thumbnail yet paint a placeholder.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence

from PySide6.QtCore import (
    QIdentityProxyModel,
    QMimeData,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    QStringListModel,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QDragEnterEvent,
    QDragMoveEvent,
    QDropEvent,
    QFont,
    QImage,
    QPainter,
    QPainterPath,
    QPaintEvent,
    QPen,
    QPixmap,
    QResizeEvent,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QListView,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QWidget,
)

from desktop.jobs import ThumbnailLoader, thumb_key
from desktop.library import Hit
from desktop.media import clock, is_media_path
from desktop.timeline import Section, sections

log = logging.getLogger(__name__)

HitRole = Qt.ItemDataRole.UserRole + 1
FailedRole = Qt.ItemDataRole.UserRole + 2

THUMB = 168  # logical pixels, the longer side of a thumbnail in the grid
PAD = 8
LABEL_H = 22
CELL = QSize(THUMB + 2 * PAD, THUMB + 2 * PAD + LABEL_H)
HEADER_H = 30  # the timeline's date strip above each grid line (grouped listing only)
PIXMAP_CACHE = 900  # ~100 MB at 2x: several screens of thumbnails
# Built once: combining enum flags is a Python call, and paint() runs per visible cell.
_ITEM_FLAGS = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled
_SELECTED = QStyle.StateFlag.State_Selected
_HOVERED = QStyle.StateFlag.State_MouseOver
_CENTER = Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter


def local_image_paths(mime: QMimeData) -> list[str]:
    """Image files among a drag's URLs (file manager, or a result dragged inside Lumen)."""
    if not mime.hasUrls():
        return []
    paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
    return [p for p in paths if p and os.path.isfile(p) and is_media_path(p)]


class PhotoModel(QIdentityProxyModel):
    """The hits of the current query, as a list model.

    Why a proxy over a QStringListModel: QListView's layout calls `index()` for every row,
    and a Python `QAbstractListModel` answers each of those through a Python `rowCount()`
    — 100 000 Python calls on the GUI thread per new result set. Here rows, indexes and
    counts stay in C++; Python only answers `data()` for the rows being painted.
    """

    def __init__(self, loader: ThumbnailLoader | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._rows_source = QStringListModel(self)
        self.setSourceModel(self._rows_source)
        self._loader = loader
        self._hits: list[Hit] = []
        self._painted: dict[str, set[int]] = {}  # thumbnail key -> rows that asked for it
        self._pixmaps: OrderedDict[str, QPixmap] = OrderedDict()
        self._failed: dict[str, str] = {}
        self.browsing = True
        # The timeline (issue 15): with no query and a unit, each date section starts a new
        # grid line and its first line carries a header strip. Done in this model, not with
        # header items of another size, so every cell keeps one size and QListView keeps
        # its arithmetic layout (variable sizes cost ~1.6 s of Python per layout at 100k).
        self.group_by: str | None = None  # "day" | "month" | None
        self.columns = 1
        self._rows: list[int] | None = None  # row -> hit index (-1: filler); None: identity
        self._first_rows: dict[int, tuple[str, int]] = {}  # row -> (section label, column)
        self._sections: list[tuple[Section, int]] = []  # (section, its first row)
        if loader is not None:
            loader.loaded.connect(self._thumbnail_loaded)
            loader.failed.connect(self._thumbnail_failed)

    # -- contents --
    def set_hits(self, hits: Sequence[Hit], browsing: bool = False) -> None:
        self._hits = list(hits)
        self.browsing = browsing
        self._relayout()

    def set_grouping(self, unit: str | None, columns: int | None = None) -> bool:
        """Group by "day"/"month" (or not) at `columns` per line; True when rows changed."""
        columns = max(1, columns or self.columns)
        if unit == self.group_by and (columns == self.columns or not self.grouped):
            self.columns = columns
            return False
        self.group_by, self.columns = unit, columns
        self._relayout()
        return True

    @property
    def grouped(self) -> bool:
        return self.group_by is not None and self.browsing and bool(self._hits)

    def sections(self) -> list[tuple[Section, int]]:
        """The timeline's sections with the row each starts at ([] when not grouped)."""
        return list(self._sections)

    def header_of(self, row: int) -> tuple[str, int] | None:
        """(section label, column) when the row is on a section's first line."""
        return self._first_rows.get(row)

    def _relayout(self) -> None:
        self._painted = {}
        self._first_rows = {}
        self._sections = []
        if not self.grouped:
            self._rows = None
            count = len(self._hits)
        else:
            rows: list[int] = []
            cols = self.columns
            for sec in sections([h.photo for h in self._hits], self.group_by or "month"):
                first = len(rows)
                self._sections.append((sec, first))
                for c in range(cols):  # fillers of a short first line paint their slice too
                    self._first_rows[first + c] = (f"{sec.label} · {sec.count}", c)
                rows.extend(range(sec.start, sec.start + sec.count))
                rows.extend([-1] * (-sec.count % cols))  # pad: the next section starts a line
            self._rows = rows
            count = len(rows)
        # One reset, forwarded from the source; the strings are placeholders (data() answers).
        self._rows_source.setStringList([""] * count)

    def hit(self, row: int) -> Hit | None:
        if self._rows is not None:
            if not 0 <= row < len(self._rows) or self._rows[row] < 0:
                return None
            row = self._rows[row]
        return self._hits[row] if 0 <= row < len(self._hits) else None

    def hit_index(self, row: int) -> int | None:
        """The row's position among the hits (what the viewer walks), None for a filler."""
        hit = self.hit(row)
        if hit is None:
            return None
        return self._rows[row] if self._rows is not None else row

    def row_of_hit(self, index: int) -> int | None:
        if self._rows is None:
            return index if 0 <= index < len(self._hits) else None
        try:
            return self._rows.index(index)
        except ValueError:
            return None

    def hits(self) -> list[Hit]:
        return list(self._hits)

    def row_of(self, photo_id: int) -> int | None:
        index = next((i for i, h in enumerate(self._hits) if h.photo.id == photo_id), None)
        return None if index is None else self.row_of_hit(index)

    def pixmap(self, row: int) -> QPixmap | None:
        """The row's thumbnail, or None (and a request for it) while it is being made."""
        hit = self.hit(row)
        return self._pixmap(row, hit) if hit is not None else None

    def failure(self, row: int) -> str | None:
        hit = self.hit(row)
        return self._failed.get(thumb_key(hit.photo)) if hit is not None else None

    def waiting(self) -> int:
        """Painted rows still showing a placeholder while their thumbnail is made."""
        return sum(1 for key in self._painted if key not in self._failed)

    def has_thumbnail(self, row: int) -> bool:
        hit = self.hit(row)
        return hit is not None and thumb_key(hit.photo) in self._pixmaps

    # -- Qt model API --
    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> object:
        hit = self.hit(index.row()) if index.isValid() else None
        if hit is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return os.path.basename(hit.photo.path)
        if role == Qt.ItemDataRole.DecorationRole:
            return self._pixmap(index.row(), hit)
        if role == HitRole:
            return hit
        if role == FailedRole:
            return self._failed.get(thumb_key(hit.photo))
        if role == Qt.ItemDataRole.ToolTipRole:
            reason = self._failed.get(thumb_key(hit.photo))
            tip = hit.photo.path if hit.photo.online else f"{hit.photo.path}\n(library offline)"
            return f"{tip}\n{reason}" if reason else tip
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.ItemIsDropEnabled
        if self._rows is not None and self.hit(index.row()) is None:
            return Qt.ItemFlag.NoItemFlags  # a filler: not selectable, the cursor skips it
        return _ITEM_FLAGS

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list", "text/plain"]

    def mimeData(self, indexes: Sequence[QModelIndex]) -> QMimeData:
        """File URLs, so a result can be dropped on a file manager, an editor, a mail."""
        paths = []
        for index in indexes:
            hit = self.hit(index.row())
            if hit is not None and hit.photo.path not in paths:
                paths.append(hit.photo.path)
        mime = QMimeData()
        mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
        mime.setText("\n".join(paths))
        return mime

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction  # never Move: the view would delete the dragged rows

    def supportedDropActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    # -- thumbnails --
    def _pixmap(self, row: int, hit: Hit) -> QPixmap | None:
        key = thumb_key(hit.photo)
        pixmap = self._pixmaps.get(key)
        if pixmap is not None:
            self._pixmaps.move_to_end(key)
            return pixmap
        self._painted.setdefault(key, set()).add(row)
        if key not in self._failed and self._loader is not None:
            self._loader.request(hit.photo)
        return None

    def keys_of(self, first: int, last: int) -> list[str]:
        if self._rows is None:
            return [thumb_key(h.photo) for h in self._hits[max(first, 0) : last + 1]]
        return [thumb_key(self._hits[i].photo) for i in self._rows[max(first, 0) : last + 1] if i >= 0]

    def _thumbnail_loaded(self, key: str, image: QImage) -> None:
        pixmap = QPixmap.fromImage(image)  # GUI thread: the only place QPixmaps are made
        if self._loader is not None:
            pixmap.setDevicePixelRatio(self._loader.dpr)
        self._pixmaps[key] = pixmap
        while len(self._pixmaps) > PIXMAP_CACHE:
            self._pixmaps.popitem(last=False)
        self._changed(key)

    def _thumbnail_failed(self, key: str, reason: str) -> None:
        self._failed[key] = reason
        self._changed(key)

    def _changed(self, key: str) -> None:
        for row in self._painted.pop(key, ()):
            index = self.index(row, 0)
            self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class PhotoDelegate(QStyledItemDelegate):
    """Paints a card: the thumbnail fitted in a square, the file name below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.placeholder = QColor("#2b2e34")
        self.accent = QColor("#4c8dff")
        self.text = QColor("#c9ccd1")
        self.muted = QColor("#7d828b")
        self.font = QFont()
        self.font.setPointSizeF(max(self.font.pointSizeF() - 0.5, 8.0))

    def sizeHint(self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> QSize:
        return CELL

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex) -> None:
        rect: QRect = option.rect
        selected = bool(option.state & _SELECTED)
        hovered = bool(option.state & _HOVERED)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        card = rect.adjusted(3, 3, -3, -3)
        model = index.model()
        if isinstance(model, PhotoModel) and model.grouped:
            header = model.header_of(index.row())
            if header is not None:
                self._paint_header(painter, rect, *header)
            if model.hit(index.row()) is None:  # a filler ending a section's last line
                painter.restore()
                return
            rect = QRect(rect.x(), rect.y() + HEADER_H, rect.width(), rect.height() - HEADER_H)
            card = rect.adjusted(3, 3, -3, -3)
        if selected or hovered:
            path = QPainterPath()
            path.addRoundedRect(card, 8, 8)
            fill = QColor(self.accent)
            fill.setAlpha(70 if selected else 28)
            painter.fillPath(path, fill)
            if selected:
                painter.setPen(QPen(self.accent, 2))
                painter.drawPath(path)
        box = QRect(rect.x() + (rect.width() - THUMB) // 2, rect.y() + PAD, THUMB, THUMB)
        # Straight to the Python model: index.data() would cross into C++ and back per role.
        if isinstance(model, PhotoModel):
            hit = model.hit(index.row())
            pixmap = model.pixmap(index.row())
            failed = model.failure(index.row())
        else:
            hit, failed = index.data(HitRole), index.data(FailedRole)
            pixmap = index.data(Qt.ItemDataRole.DecorationRole)
        if isinstance(pixmap, QPixmap) and not pixmap.isNull():
            dpr = pixmap.devicePixelRatio() or 1.0
            w, h = pixmap.width() / dpr, pixmap.height() / dpr
            scale = min(THUMB / w, THUMB / h) if w and h else 1.0  # small files too fill the cell
            w, h = int(w * scale), int(h * scale)
            target = QRect(box.x() + (THUMB - w) // 2, box.y() + (THUMB - h) // 2, w, h)
            painter.drawPixmap(target, pixmap)
            if hit is not None and hit.photo.is_video:
                self._badge(painter, target, hit)
        else:
            path = QPainterPath()
            path.addRoundedRect(box.adjusted(10, 10, -10, -10), 6, 6)
            painter.fillPath(path, self.placeholder)
            if failed:
                painter.setPen(self.muted)
                painter.drawText(box, Qt.AlignmentFlag.AlignCenter, "cannot\nshow")
        painter.setFont(self.font)
        painter.setPen(self.text if hit is None or hit.photo.online else self.muted)
        label = QRect(box.x(), box.bottom() + 4, THUMB, LABEL_H - 4)
        title = os.path.basename(hit.photo.path) if hit is not None else ""
        name = painter.fontMetrics().elidedText(title, Qt.TextElideMode.ElideMiddle, label.width())
        painter.drawText(label, _CENTER, name)
        painter.restore()

    def _paint_header(self, painter: QPainter, rect: QRect, text: str, column: int) -> None:
        """The date strip over a section's first line: each cell paints its slice of one
        text laid out from the line's left edge (so nothing depends on cells' clipping)."""
        painter.save()
        strip = QRect(rect.x(), rect.y(), rect.width(), HEADER_H)
        painter.setClipRect(strip)
        font = QFont(self.font)
        font.setPointSizeF(self.font.pointSizeF() + 2.5)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(self.text)
        line_left = rect.x() - column * rect.width()
        painter.drawText(QRect(line_left + 12, rect.y() + 4, 4000, HEADER_H - 4),
                         Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, text)
        painter.restore()


    def _badge(self, painter: QPainter, picture: QRect, hit: Hit) -> None:
        """A video's poster carries its length (and the matched moment) bottom right."""
        d = hit.photo.duration_s
        text = "▶ " + (clock(d).split(".")[0] if d is not None else "video")
        if hit.at_s is not None:
            text = f"▶ {clock(hit.at_s)}" + (f" / {clock(d).split('.')[0]}" if d is not None else "")
        painter.setFont(self.font)
        fm = painter.fontMetrics()
        w, h = fm.horizontalAdvance(text) + 10, fm.height() + 4
        badge = QRect(picture.right() - w - 4, picture.bottom() - h - 4, w, h)
        path = QPainterPath()
        path.addRoundedRect(badge, 4, 4)
        painter.fillPath(path, QColor(0, 0, 0, 170))
        painter.setPen(QColor("#ffffff"))
        painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, text)


class PhotoGrid(QListView):
    """Icon-mode list view with static uniform cells (cheap layout for 100k rows)."""

    images_dropped = Signal(list)  # image paths dropped here: the search bar adds them

    def __init__(self, model: PhotoModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("PhotoGrid")
        self.setModel(model)
        self.setItemDelegate(PhotoDelegate(self))
        self.setViewMode(QListView.ViewMode.IconMode)
        # Static movement + uniform sizes: QListView lays rows out arithmetically, which is
        # what keeps 100 000 results cheap (Free movement stores a position per item).
        self.setMovement(QListView.Movement.Static)
        self.setFlow(QListView.Flow.LeftToRight)
        self.setWrapping(True)
        self.setResizeMode(QListView.ResizeMode.Adjust)
        self.setUniformItemSizes(True)
        self.setLayoutMode(QListView.LayoutMode.Batched)
        self.setBatchSize(5000)
        self.setGridSize(CELL)
        self.setSpacing(0)
        self.setMouseTracking(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(32)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        # Static movement switched drops off on the viewport, which is where they land.
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setDropIndicatorShown(False)
        self.empty_text = "Add a folder to start: drop it here or use “Add folder” on the left."
        self.columns = 1
        model.modelReset.connect(self._model_reset)
        self._retain = QTimer(self, singleShot=True, interval=60)
        self._retain.timeout.connect(self._retain_visible)
        self.verticalScrollBar().valueChanged.connect(self._retain.start)

    def resizeEvent(self, event: QResizeEvent) -> None:
        # Spread the columns over the whole width (no ragged gap on the right). The width
        # leaves room for the scroll bar whether it is shown or not, so showing it cannot
        # push the last column onto the next line.
        width = self.width() - 2 * self.frameWidth() - self.verticalScrollBar().sizeHint().width() - 8
        self.columns = max(1, width // CELL.width())
        self._apply_layout()
        super().resizeEvent(event)

    def _apply_layout(self) -> None:
        width = self.width() - 2 * self.frameWidth() - self.verticalScrollBar().sizeHint().width() - 8
        model = self.photo_model()
        extra = HEADER_H if model.grouped else 0
        self.setGridSize(QSize(max(CELL.width(), width // self.columns), CELL.height() + extra))
        if model.group_by is not None and model.columns != self.columns:
            self.set_grouping(model.group_by)

    def set_grouping(self, unit: str | None) -> None:
        """Timeline on/off (or the columns changed): rows are rebuilt; the current photo
        stays current and in view."""
        model = self.photo_model()
        current = self.currentIndex().data(HitRole) if self.currentIndex().isValid() else None
        if model.set_grouping(unit, self.columns):
            self.setGridSize(QSize(self.gridSize().width(), CELL.height() + (HEADER_H if model.grouped else 0)))
            row = model.row_of(current.photo.id) if current is not None else None
            if row is not None:
                self.setCurrentIndex(model.index(row, 0))
                self.scrollTo(model.index(row, 0))

    def scroll_to_section(self, key: str) -> None:
        """The scrubber: the section's first line at the top of the grid."""
        model = self.photo_model()
        for sec, row in model.sections():
            if sec.key == key:
                self.scrollTo(model.index(row, 0), QAbstractItemView.ScrollHint.PositionAtTop)
                return

    def _model_reset(self) -> None:
        # New hits (browsing or not): the cell height follows whether they are grouped.
        grouped = self.photo_model().grouped
        height = CELL.height() + (HEADER_H if grouped else 0)
        if self.gridSize().height() != height:
            self.setGridSize(QSize(self.gridSize().width(), height))

    def photo_model(self) -> PhotoModel:
        return self.model()  # type: ignore[return-value]

    def visible_rows(self) -> tuple[int, int]:
        """First and last row (partly) on screen; (-1, -1) when there is none."""
        count = self.photo_model().rowCount()
        if count == 0:
            return -1, -1
        vp = self.viewport().rect()
        x = min(CELL.width() // 2, vp.width() - 1)
        top = self.indexAt(QPoint(x, vp.top()))
        bottom = self.indexAt(QPoint(x, vp.bottom()))
        per_row = max(1, vp.width() // self.gridSize().width())
        first = top.row() if top.isValid() else 0
        last = bottom.row() + per_row - 1 if bottom.isValid() else count - 1
        return first, min(last, count - 1)

    def _retain_visible(self) -> None:
        first, last = self.visible_rows()
        loader = self.photo_model()._loader
        if loader is not None and first >= 0:
            loader.retain(self.photo_model().keys_of(first, last))

    # -- drops: an image dropped on the grid becomes an image query --
    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if local_image_paths(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if local_image_paths(event.mimeData()):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = local_image_paths(event.mimeData())
        if not paths:
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        self.images_dropped.emit(paths)

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)
        if self.model() is not None and self.model().rowCount() == 0 and self.empty_text:
            painter = QPainter(self.viewport())
            painter.setPen(QColor("#8a8f98"))
            font = painter.font()
            font.setPointSizeF(font.pointSizeF() + 1.5)
            painter.setFont(font)
            painter.drawText(self.viewport().rect().adjusted(40, 40, -40, -40),
                             Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap, self.empty_text)
