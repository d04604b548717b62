"""The main window: search bar on top, sidebar | grid | detail panel, a status bar with
indexing progress, and a message bar for errors a user can act on.

It only wires widgets to `Jobs`; each widget is built from `Jobs` (or nothing) alone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from PySide6.QtCore import QByteArray, QItemSelectionModel, QModelIndex, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QCloseEvent, QImage
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from desktop.jobs import Jobs, Query, Results, format_duration, load_small_image
from desktop.library import IndexReport, LibraryStatus, Progress
from desktop.ui import shortcuts, system
from desktop.ui.detail import DetailPanel
from desktop.ui.duplicates import DuplicatesDialog
from desktop.ui.grid import HitRole, PhotoGrid, PhotoModel
from desktop.ui.model_offer import ModelOffer
from desktop.ui.search_bar import SearchBar
from desktop.ui.settings_dialog import SettingsDialog, saved_captioner
from desktop.ui.sidebar import ProblemsDialog, Sidebar
from desktop.ui.tags_panel import jobs_runner
from desktop.ui.timeline import DateScrubber
from desktop.ui.viewer import Viewer

log = logging.getLogger(__name__)

STAGES = {"scan": "Looking for photos", "hash": "Reading new files", "encode": "Analysing photos",
          "index": "Building the search index", "regions": "Preparing \u201cwhy this photo\u201d"}
BROWSE_REFRESH_MS = 2500  # while indexing with no query, new photos appear this often


def ask_album_name(parent: QWidget, query: str) -> str | None:
    """Ask for the name of a smart album saved from `query` (tests replace this)."""
    name, ok = QInputDialog.getText(parent, "Save search as album", f"Album name for “{query}”:", text=query)
    return name.strip() if ok and name.strip() else None


class MessageBar(QFrame):
    """One message a user can act on (error, warning, info), with an optional action."""

    dismissed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("MessageBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(14, 8, 8, 8)
        layout.setSpacing(10)
        self.icon = QLabel(self)
        self.icon.setObjectName("MessageIcon")
        layout.addWidget(self.icon)
        self.text = QLabel(self)
        self.text.setObjectName("MessageText")
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.text, 1)
        self.action = QPushButton(self)
        self.action.setObjectName("MessageAction")
        self.action.hide()
        layout.addWidget(self.action)
        close = QToolButton(self)
        close.setObjectName("MessageClose")
        close.setText("×")
        close.setToolTip("Dismiss")
        close.clicked.connect(self.dismiss)
        layout.addWidget(close)
        self._callback: Callable[[], None] | None = None
        self.action.clicked.connect(self._act)
        self.level = ""
        self.tag = ""
        self.hide()

    def show_message(self, text: str, level: str = "error", action: str | None = None,
                     callback: Callable[[], None] | None = None, tag: str = "") -> None:
        """Show a message; `tag` names its cause, so the cause going away can dismiss it."""
        self.level = level
        self.tag = tag
        self.setProperty("level", level)
        self.style().unpolish(self)
        self.style().polish(self)
        self.icon.setText({"error": "⛔", "warning": "⚠", "info": "ℹ"}.get(level, "ℹ"))
        self.text.setText(text)
        self._callback = callback
        self.action.setVisible(bool(action and callback))
        self.action.setText(action or "")
        self.show()

    def dismiss(self) -> None:
        self.hide()
        self.dismissed.emit()

    def _act(self) -> None:
        if self._callback is not None:
            self._callback()


class MainWindow(QMainWindow):
    def __init__(self, jobs: Jobs, settings: QSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.settings = settings or QSettings()
        self.setWindowTitle("Lumen")
        self.setObjectName("MainWindow")
        self.resize(1360, 860)
        self.results: Results | None = None
        self._closing = False
        self._searching = False
        self.listing: str | None = None  # what the grid shows when not a query's results ("Tag “red”")
        self._listing_token = 0
        self._listing_seq = -1  # Jobs.latest_seq when the last listing started: searches up to it are stale

        central = QWidget(self)
        central.setObjectName("Central")
        self.setCentralWidget(central)
        outer = QVBoxLayout(central)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)

        top = QFrame(central)
        top.setObjectName("TopBar")
        top_layout = QHBoxLayout(top)
        top_layout.setContentsMargins(16, 10, 12, 10)
        top_layout.setSpacing(12)
        brand = QLabel("Lumen", top)
        brand.setObjectName("Brand")
        top_layout.addWidget(brand)
        self.search_bar = SearchBar(top)
        top_layout.addWidget(self.search_bar, 1)
        self.count_label = QLabel("", top)
        self.count_label.setObjectName("CountLabel")
        self.count_label.setMinimumWidth(150)
        self.count_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        top_layout.addWidget(self.count_label)
        self.save_album_button = QToolButton(top)
        self.save_album_button.setObjectName("SaveAlbumButton")
        self.save_album_button.setText("Save as album…")
        self.save_album_button.setToolTip("Save the words of this search as a smart album (it fills in as "
                                          "photos arrive)")
        self.save_album_button.setEnabled(False)
        self.save_album_button.clicked.connect(self.save_search_as_album)
        top_layout.addWidget(self.save_album_button)
        self.settings_button = QToolButton(top)
        self.settings_button.setObjectName("SettingsButton")
        self.settings_button.setText("Settings")
        self.settings_button.setToolTip("Encoder, weights, device, captioner, libraries")
        self.settings_button.clicked.connect(self.open_settings)
        top_layout.addWidget(self.settings_button)
        outer.addWidget(top)

        self.message_bar = MessageBar(central)
        outer.addWidget(self.message_bar)

        self.splitter = QSplitter(Qt.Orientation.Horizontal, central)
        self.splitter.setObjectName("MainSplitter")
        self.splitter.setHandleWidth(1)
        self.sidebar = Sidebar(jobs, self.splitter)
        self.model = PhotoModel(jobs.thumbnails, self)
        # The grid and the timeline's date scrubber share the splitter's middle slot.
        middle = QWidget(self.splitter)
        middle.setObjectName("GridArea")
        middle_layout = QHBoxLayout(middle)
        middle_layout.setContentsMargins(0, 0, 0, 0)
        middle_layout.setSpacing(0)
        self.grid = PhotoGrid(self.model, middle)
        self.scrubber = DateScrubber(self.grid, middle)
        middle_layout.addWidget(self.grid, 1)
        middle_layout.addWidget(self.scrubber)
        self.viewer: Viewer | None = None
        self.viewer_full_screen = True
        self.duplicates: DuplicatesDialog | None = None
        self.detail = DetailPanel(jobs, self.splitter)
        self.detail.set_captioner(saved_captioner(self.settings))
        for i, (stretch, minimum) in enumerate(((0, 200), (1, 300), (0, 260))):
            self.splitter.setStretchFactor(i, stretch)  # the grid takes what the window gains
            self.splitter.widget(i).setMinimumWidth(minimum)
        self.splitter.setSizes([260, 750, 360])
        self.splitter.setCollapsible(1, False)
        outer.addWidget(self.splitter, 1)

        status = self.statusBar()
        status.setObjectName("StatusBar")
        status.setSizeGripEnabled(False)
        self.status_label = QLabel("Starting…", status)
        self.status_label.setObjectName("StatusText")
        status.addWidget(self.status_label, 1)
        self.model_offer = ModelOffer(self.jobs, status)  # which model and why; "Download CLIP…"
        status.addPermanentWidget(self.model_offer)
        self.progress = QProgressBar(status)
        self.progress.setObjectName("IndexProgress")
        self.progress.setFixedWidth(220)
        self.progress.setTextVisible(False)
        self.progress.hide()
        status.addPermanentWidget(self.progress)
        self.pause_button = QPushButton("Pause", status)
        self.pause_button.setObjectName("PauseButton")
        self.pause_button.setToolTip("Pause indexing (finished work is kept; resume continues from there)")
        self.pause_button.clicked.connect(self.toggle_pause)
        self.pause_button.hide()
        status.addPermanentWidget(self.pause_button)

        self._browse_timer = QTimer(self, interval=BROWSE_REFRESH_MS)
        self._browse_timer.timeout.connect(self._refresh_browse)
        self._wire()
        self._restore_state()
        self._install_shortcuts()

    # -- keys and menus (desktop/ui/shortcuts.py is the one table) --
    def _install_shortcuts(self) -> None:
        unit = str(self.settings.value("timeline/unit", "month"))
        self.scrubber.set_unit(unit if unit in ("month", "day") else None)
        self.grid.set_grouping(unit if unit in ("month", "day") else None)
        self.scrubber.unit_changed.connect(self.set_timeline_unit)
        self.grid.doubleClicked.connect(lambda index: self.open_viewer(index.row()))
        self.grid_actions = shortcuts.install(self.grid, "Grid", {"open_viewer": self.open_viewer})
        self.actions_ = shortcuts.install(self, "Window", {
            "search": lambda: self.search_bar.edit.setFocus(),
            "similar": self._similar_to_current,
            "reveal": lambda: self._hand_over(system.reveal),
            "open_default": lambda: self._hand_over(system.open_default),
            "add_folder": lambda: self.sidebar.add_folder(),
            "duplicates": self.open_duplicates,
            "timeline_unit": self.scrubber.cycle_unit,
            "settings": self.open_settings,
            "shortcuts": self.show_shortcuts,
            "quit": self.close,
        })
        a = self.actions_
        bar = self.menuBar()
        bar.setObjectName("MenuBar")
        for title, ids in (("&File", ["add_folder", None, "settings", None, "quit"]),
                           ("&Photo", ["open_viewer", "similar", None, "reveal", "open_default"]),
                           ("&View", ["search", "timeline_unit", None, "duplicates"]),
                           ("&Help", ["shortcuts"])):
            menu = bar.addMenu(title)
            for id_ in ids:
                if id_ is None:
                    menu.addSeparator()
                else:
                    menu.addAction(a.get(id_) or self.grid_actions[id_])

    def open_viewer(self, row: int | None = None) -> Viewer | None:
        """The current (or given) result full screen; arrows walk the results."""
        row = self.grid.currentIndex().row() if row is None else row
        index = self.model.hit_index(row) if row is not None and row >= 0 else None
        if index is None:
            return None
        if self.viewer is None:
            self.viewer = Viewer(self.jobs, self)
            self.viewer.moved.connect(self._viewer_moved)
            self.viewer.closed.connect(self._viewer_closed)
            self.viewer.failed.connect(lambda text: self.message_bar.show_message(text, "warning"))
        self.viewer.open(self.model.hits(), index, full_screen=self.viewer_full_screen)
        return self.viewer

    def _viewer_moved(self, index: int) -> None:
        # The grid follows the viewer, so Esc lands on the photo last seen.
        row = self.model.row_of_hit(index)
        if row is not None and row != self.grid.currentIndex().row():
            self.grid.selectionModel().setCurrentIndex(
                self.model.index(row, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect)

    def _viewer_closed(self, index: int) -> None:
        row = self.model.row_of_hit(index)
        self.activateWindow()
        self.grid.setFocus()
        if row is not None:
            self.grid.scrollTo(self.model.index(row, 0))  # no-op when it is already in view

    def open_duplicates(self) -> DuplicatesDialog:
        if self.duplicates is None:
            self.duplicates = DuplicatesDialog(self.jobs, self)
            self.duplicates.trashed.connect(lambda n: self._files_changed(f"{n} file(s) moved to the trash"))
            self.duplicates.restored.connect(lambda n: self._files_changed(f"{n} file(s) restored"))
        else:
            self.duplicates.reload()
        self.duplicates.show()
        self.duplicates.raise_()
        return self.duplicates

    def _files_changed(self, text: str) -> None:
        self.status_label.setText(text)
        self.sidebar.refresh()
        self.search_bar.refresh()  # the listing or the results lost (or regained) files

    def show_shortcuts(self) -> shortcuts.ShortcutsDialog:
        dialog = shortcuts.ShortcutsDialog(self)
        dialog.open()
        return dialog

    def set_timeline_unit(self, unit: str | None) -> None:
        self.settings.setValue("timeline/unit", unit or "none")
        self.grid.set_grouping(unit)

    def _similar_to_current(self) -> None:
        hit = self._current_hit()
        if hit is not None:
            self.find_similar(hit.photo.id, hit.photo.path)

    def _hand_over(self, fn: Callable[[str], str | None]) -> None:
        hit = self._current_hit()
        if hit is not None and (problem := fn(hit.photo.path)):
            self.message_bar.show_message(problem, "warning")

    # -- wiring --
    def _wire(self) -> None:
        jobs, indexer = self.jobs, self.jobs.indexing
        self.search_bar.query_changed.connect(self.run_query)
        self.search_bar.query_changed.connect(
            lambda query: self.save_album_button.setEnabled(bool(query.text.strip())))
        tags = self.sidebar.tags
        tags.tag_activated.connect(self.show_tag)
        tags.album_activated.connect(self.show_album)
        tags.failed.connect(lambda text: self.message_bar.show_message(text, "warning"))
        self.detail.text_changed.connect(lambda _photo_id: tags.refresh())
        self.search_bar.images_added.connect(self._load_chip_images)
        self.search_bar.drop_rejected.connect(lambda text: self.message_bar.show_message(text, "warning"))
        self.grid.images_dropped.connect(self.search_bar.add_images)
        self.grid.selectionModel().currentChanged.connect(self._current_changed)
        self.detail.similar_requested.connect(self.find_similar)
        jobs.searched.connect(self._query_searched)
        jobs.search_failed.connect(self._search_failed)
        jobs.failed.connect(lambda text: self.message_bar.show_message(text, "error"))
        jobs.library_changed.connect(self._library_changed)
        indexer.progressed.connect(self._progressed)
        indexer.indexed.connect(self._indexed)
        indexer.changed.connect(self._watched)
        indexer.model_loading.connect(lambda spec: self.sidebar.set_model_text(f"Model: loading {spec}…"))
        indexer.model_loaded.connect(self._model_loaded)
        indexer.model_failed.connect(self._model_failed)
        indexer.encoder_switched.connect(self._encoder_switched)
        indexer.encoder_switched.connect(lambda _spec: self.model_offer.refresh())
        indexer.model_loaded.connect(lambda _id: self.model_offer.refresh())
        indexer.failed.connect(lambda text: self.message_bar.show_message(text, "error"))
        indexer.state_changed.connect(self._indexer_state)
        self.sidebar.status_loaded.connect(self._status_loaded)

    def start(self, folder: str | None = None) -> None:
        """After the window is shown: load the model, index (resuming), and show photos."""
        self.sidebar.refresh()
        self.sidebar.tags.refresh()
        self.search_bar.refresh()
        if self.jobs.library.readonly:
            # The other process indexes and watches; this one only searches.
            self.status_label.setText("Read-only: another Lumen is indexing this library")
            self.message_bar.show_message(
                "Another Lumen is indexing this library, so this window is read-only: you can search, "
                "but folders and settings cannot change here.", "warning")
            return
        self.jobs.indexing.start()
        if folder:
            self.add_folder(folder)

    # -- actions --
    def add_folder(self, folder: str) -> None:
        self.sidebar.add_folder(os.path.abspath(folder))

    def run_query(self, query: Query) -> None:
        self._searching = True
        if not query.empty():
            self.count_label.setText("Searching…")
        self.jobs.search(query)

    def show_tag(self, tag: str) -> None:
        """Fill the grid with the photos tagged `tag` (found on a worker, shown like results)."""
        lib = self.jobs.library
        self._show_listing(f"Tag “{tag}”", Query(text=f"tag:{tag}"), lambda: lib.photos_with_tag(tag))

    def show_album(self, name: str) -> None:
        """Fill the grid with a smart album's photos as they are now."""
        lib = self.jobs.library
        self._show_listing(f"Album “{name}”", Query(text=name), lambda: lib.album_photos(name))

    def save_search_as_album(self) -> None:
        """Save the search bar's words as a smart album (listed in the sidebar)."""
        text = self.search_bar.query().text.strip()
        if not text:
            return
        name = ask_album_name(self, text)
        if name:
            self.sidebar.tags.save_album(name, text)

    def find_similar(self, photo_id: int, path: str) -> None:
        self.search_bar.set_similar(photo_id, path)

    def toggle_pause(self) -> None:
        indexer = self.jobs.indexing
        if indexer.paused:
            indexer.resume()
            self.pause_button.setText("Pause")
        else:
            indexer.pause()
            self.pause_button.setText("Resume")

    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.jobs, self.settings, self)
        dialog.accepted.connect(lambda: self._settings_accepted(dialog))
        dialog.open()
        return dialog

    def show_problems(self) -> None:
        self.jobs.status(on_result=lambda st: ProblemsDialog.show_for(st.skipped, self))

    # -- slots --
    def _settings_accepted(self, dialog: SettingsDialog) -> None:
        self.detail.set_captioner(dialog.choice().captioner)
        if dialog.apply():
            self.message_bar.show_message(
                f"Re-indexing with {dialog.choice().encoder} in the background; search uses the current "
                "model until it is done.", "info")

    def _show_listing(self, label: str, query: Query, fn: Callable[[], list]) -> None:
        # Like a query: newer searches make it stale and it makes searches in flight stale.
        self._listing_token += 1
        token, seq = self._listing_token, self.jobs.latest_seq
        self._listing_seq = seq
        self._searching = True
        self.count_label.setText("Searching…")
        started = time.monotonic()

        def done(hits: list) -> None:
            if token != self._listing_token or self.jobs.latest_seq != seq:
                return  # another tag, album or query was asked for since
            self._searched(Results(query, hits, seq, time.monotonic() - started, browsing=False))
            self.listing = label
            n = len(hits)
            self.count_label.setText(f"{label} · {n} photo{'s' if n != 1 else ''}")
            self.grid.empty_text = "No photos here yet."

        def failed(message: str) -> None:
            if token == self._listing_token and self.jobs.latest_seq == seq:
                self._search_failed(message)

        jobs_runner(self.jobs)(fn, done, failed)

    def _query_searched(self, results: Results) -> None:
        if results.seq <= self._listing_seq:
            return  # a tag or album was opened after this query started
        self.listing = None
        self._searched(results)

    def _searched(self, results: Results) -> None:
        self._searching = False
        current = self._current_hit()
        self.results = results
        self.model.set_hits(results.hits, browsing=results.browsing)
        n = len(results.hits)
        if results.browsing:
            # Refresh at most ~10 % of the time: a large library's listing is not free.
            self._browse_timer.setInterval(max(BROWSE_REFRESH_MS, int(results.seconds * 10_000)))
            self.count_label.setText(f"{n:,} photos".replace(",", " ") if n != 1 else "1 photo")
            has_roots = self.sidebar.status is not None and bool(self.sidebar.status.roots)
            self.grid.empty_text = ("No photos found yet…" if has_roots
                                    else "No photos yet: add a folder with “Add folder…” on the left.")
        else:
            self.count_label.setText(f"{n} match{'es' if n != 1 else ''} · {results.seconds * 1000:.0f} ms")
            self.grid.empty_text = "Nothing matches this query."
        if self.message_bar.tag == "search":
            self.message_bar.dismiss()
        if current is not None:
            row = self.model.row_of(current.photo.id)
            if row is not None:
                # The selected photo is still there (a refresh): keep it selected.
                self.grid.selectionModel().setCurrentIndex(
                    self.model.index(row, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect)
                return
        self.detail.show_hit(None)

    def _search_failed(self, message: str) -> None:
        self._searching = False
        self.count_label.setText("")
        self.message_bar.show_message(message, "warning", tag="search")

    def _current_hit(self):  # noqa: ANN202 - Hit | None
        index = self.grid.currentIndex()
        return index.data(HitRole) if index.isValid() else None

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        hit = current.data(HitRole) if current.isValid() else None
        query = self.results.query.text if self.results is not None and self.listing is None else None
        self.detail.show_hit(hit, browsing=self.model.browsing, query=query)

    def _load_chip_images(self, paths: list[str]) -> None:
        for path in paths:
            self.jobs.run(load_small_image, path, 64,
                          on_result=lambda image, p=path: self._chip_image(p, image),
                          on_error=lambda message: log.info("no chip thumbnail: %s", message))

    def _chip_image(self, path: str, image: QImage) -> None:
        self.search_bar.set_chip_image(path, image)

    def _library_changed(self) -> None:
        if self.search_bar.query().empty():
            self.search_bar.refresh()

    def _progressed(self, p: Progress) -> None:
        stage = STAGES.get(p.stage, p.stage)
        if p.total:
            parts = [f"{stage}: {p.done:,} / {p.total:,}".replace(",", " ")]
            if p.rate and p.stage in ("encode", "hash"):
                parts.append(f"{p.rate:.0f} images/s" if p.stage == "encode" else f"{p.rate:.0f} files/s")
            if p.eta_s is not None and p.done < p.total:
                parts.append(f"about {format_duration(p.eta_s)} left")
            self.status_label.setText(" · ".join(parts))
            self.progress.setRange(0, p.total)
            self.progress.setValue(p.done)
        else:
            self.status_label.setText(f"{stage}… {p.message}" if p.message else f"{stage}…")
            self.progress.setRange(0, 0)  # busy indicator: the total is not known yet
        self.progress.show()
        self.pause_button.show()

    def _indexed(self, report: IndexReport) -> None:
        self.progress.hide()
        if report.cancelled:
            self.status_label.setText("Indexing paused — everything finished so far is kept."
                                      if self.jobs.indexing.paused else "Indexing stopped.")
        else:
            self.pause_button.hide()
            self.status_label.setText(
                f"Up to date · {report.encoded} photos analysed in {report.seconds:.1f} s"
                + (f" ({report.images_per_s:.0f} images/s)" if report.encoded else ""))
        self.sidebar.refresh()
        self.sidebar.tags.refresh()
        if report.hashed or report.removed:  # photos came, went or moved: the listing changed
            self._refresh_browse()
        problems = report.skipped + report.problems
        if report.offline:
            self.message_bar.show_message(
                "Library folder offline (missing or unplugged); its photos are kept: " + ", ".join(report.offline),
                "warning")
        elif problems:
            self.message_bar.show_message(
                f"{problems} file{'s' if problems != 1 else ''} could not be used (unreadable, corrupt or "
                "permission denied).", "warning", "Show files", self.show_problems)

    def _watched(self, changes: int, report: IndexReport) -> None:
        log.info("%d changes on disk: %d new, %d removed", changes, report.new_photos, report.removed)
        self.status_label.setText(f"{changes} change{'s' if changes != 1 else ''} on disk applied · watching")
        self.progress.hide()
        self.sidebar.refresh()
        self.sidebar.tags.refresh()
        self.search_bar.refresh()
        if report.skipped or report.problems:
            n = report.skipped + report.problems
            self.message_bar.show_message(f"{n} new file(s) could not be used.", "warning", "Show files",
                                          self.show_problems)

    def _indexer_state(self, state: str) -> None:
        # New photos only appear while indexing; loading a model adds none, and a refresh of
        # a large library (seconds of Python at 100 000 photos) would only slow the load.
        if state == "indexing" and self.model.browsing:
            self._browse_timer.start()
        elif state != "indexing":
            self._browse_timer.stop()
        if state == "paused" and self.jobs.indexing.paused:  # not a stale signal from before a resume
            self.pause_button.setText("Resume")
            self.pause_button.show()
            self.progress.hide()
        elif state == "watching":
            self.pause_button.hide()
            self.progress.hide()
            self.sidebar.tags.refresh()  # captions of the last pass are written by now
        elif state == "idle" and not self.jobs.indexing.paused:
            self.pause_button.hide()
        if state == "loading":
            self.status_label.setText(f"Loading the model {self.jobs.library.encoder_spec}…")

    def _model_loaded(self, encoder_id: str) -> None:
        self.sidebar.set_model_text(f"Model: {encoder_id}")
        if self.message_bar.tag == "model":
            self.message_bar.dismiss()

    def _model_failed(self, message: str) -> None:
        self.sidebar.set_model_text(f"Model: {self.jobs.library.encoder_spec} — not available")
        self.message_bar.show_message(message, "error", "Open Settings", self.open_settings, tag="model")

    def _encoder_switched(self, spec: str) -> None:
        self.sidebar.set_model_text(f"Model: {spec} (re-indexing)")

    def _status_loaded(self, status: LibraryStatus) -> None:
        if self.jobs.indexing.state in ("idle", "watching") and not self.progress.isVisible():
            photos = sum(r.counts["photos"] for r in status.roots)
            watching = sum(1 for r in status.roots if r.root.watch and r.root.online)
            text = f"{photos:,} photos".replace(",", " ")
            if status.to_encode:
                text += f" · {status.to_encode} waiting to be analysed"
            if watching:
                text += f" · watching {watching} folder{'s' if watching != 1 else ''}"
            self.status_label.setText(text)

    def _refresh_browse(self) -> None:
        if self.model.browsing and self.search_bar.query().empty() and not self._searching:
            self.search_bar.refresh()

    # -- state --
    def _restore_state(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def closeEvent(self, event: QCloseEvent) -> None:
        """Stop the watcher and wait for the workers; every finished batch stays indexed."""
        if not self._closing:
            self._closing = True
            self.settings.setValue("window/geometry", self.saveGeometry())
            self.settings.setValue("window/splitter", self.splitter.saveState())
            self._browse_timer.stop()
            self.status_label.setText("Finishing the current batch…")
            self.jobs.shutdown()
        event.accept()
