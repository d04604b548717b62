"""The timeline's date scrubber: the sections of the grouped grid as a list (newest first);
a click puts that section at the top of the grid, and scrolling the grid moves the mark.

The grouping itself lives in the grid's model (desktop/ui/grid.py, `PhotoModel.set_grouping`)
and the date buckets in desktop/timeline.py (Qt-free)."""

from __future__ import annotations

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

from desktop.ui.grid import PhotoGrid

UNITS = (("month", "By month"), ("day", "By day"), (None, "No grouping"))
KeyRole = Qt.ItemDataRole.UserRole + 1


class DateScrubber(QWidget):
    unit_changed = Signal(object)  # "month" | "day" | None

    def __init__(self, grid: PhotoGrid, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("DateScrubber")
        self.grid = grid
        self.unit = QComboBox(self)
        self.unit.setObjectName("TimelineUnit")
        for key, label in UNITS:
            self.unit.addItem(label, key)
        self.list = QListWidget(self)
        self.list.setObjectName("TimelineList")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 6, 4, 6)
        layout.setSpacing(6)
        layout.addWidget(self.unit)
        layout.addWidget(self.list, 1)
        self.setFixedWidth(150)
        self._follow = QTimer(self, singleShot=True, interval=80)
        self._follow.timeout.connect(self._mark_visible)
        self.unit.currentIndexChanged.connect(lambda _i: self.unit_changed.emit(self.unit.currentData()))
        self.list.itemClicked.connect(self._clicked)
        self.list.itemActivated.connect(self._clicked)
        grid.verticalScrollBar().valueChanged.connect(self._follow.start)
        grid.photo_model().modelReset.connect(self.refresh)

    def set_unit(self, unit: str | None) -> None:
        self.unit.setCurrentIndex(next(i for i, (k, _) in enumerate(UNITS) if k == unit))

    def cycle_unit(self) -> None:
        """Ctrl+T: month -> day -> month (grouping off stays off until chosen again)."""
        self.set_unit("day" if self.unit.currentData() == "month" else "month")

    def refresh(self) -> None:
        model = self.grid.photo_model()
        self.list.clear()
        for sec, _row in model.sections():
            item = QListWidgetItem(f"{sec.label}  ({sec.count})" if model.group_by == "month"
                                   else f"{sec.key}  ({sec.count})")
            item.setData(KeyRole, sec.key)
            item.setToolTip(sec.label)
            self.list.addItem(item)
        # Shown whenever the grid lists the library (no query), so grouping can be turned
        # back on; the list only while grouped.
        self.setVisible(model.browsing and model.rowCount() > 0)
        self.list.setVisible(model.grouped)
        self._mark_visible()

    def keys(self) -> list[str]:
        return [self.list.item(i).data(KeyRole) for i in range(self.list.count())]

    def jump(self, key: str) -> None:
        self.grid.scroll_to_section(key)

    def _clicked(self, item: QListWidgetItem) -> None:
        self.jump(item.data(KeyRole))

    def _mark_visible(self) -> None:
        model = self.grid.photo_model()
        secs = model.sections()
        if not secs:
            return
        top = self.grid.indexAt(QPoint(10, 10))
        row = top.row() if top.isValid() else 0
        at = max((i for i, (_, first) in enumerate(secs) if first <= row), default=0)
        self.list.blockSignals(True)
        self.list.setCurrentRow(at)
        self.list.blockSignals(False)
