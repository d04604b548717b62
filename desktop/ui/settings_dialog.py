"""Settings: encoder (from the installed plugins and their models), weights, device,
captioner, library folders.

Where each lives: the encoder spec and weights in the catalog (Library.set_encoder, so
the CLI and the window agree); device and captioner in QSettings (per machine, not per
library). Changing the encoder re-indexes in the background; search keeps answering
with the previous encoder's vectors until the new ones cover the library.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from desktop.encoders import CAPTIONER_GROUP, ENCODER_GROUP
from desktop.jobs import Jobs, PluginModels, list_plugins
from desktop.ui.sidebar import choose_folder

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
NO_CAPTIONER = ""  # the library's own captioner (the captions feature's default)
DEFAULT_LABEL = "Library default"


@dataclass(frozen=True)
class Choice:
    encoder: str
    weights: str | None
    device: str
    captioner: str | None


def saved_device(settings: QSettings) -> str:
    return str(settings.value("device", "auto") or "auto")


def saved_cluster(settings: QSettings) -> str | None:
    """The Ray cluster that encodes this machine's index runs (None: encode here)."""
    return str(settings.value("cluster", "") or "").strip() or None


def saved_captioner(settings: QSettings) -> str | None:
    return str(settings.value("captioner", "") or "") or None


def _combo_value(box: QComboBox) -> str:
    """An editable combo's value: the chosen item's spec, or what the user typed."""
    text = box.currentText().strip()
    index = box.currentIndex()
    if index >= 0 and text == box.itemText(index) and box.itemData(index) is not None:
        return str(box.itemData(index))
    return text


class SettingsDialog(QDialog):
    def __init__(self, jobs: Jobs, settings: QSettings, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("SettingsDialog")
        self.setWindowTitle("Lumen settings")
        self.setMinimumWidth(620)
        self.jobs = jobs
        self.settings = settings
        lib = jobs.library
        self.initial = Choice(lib.encoder_spec, lib.weights, lib.device or saved_device(settings),
                              saved_captioner(settings))
        layout = QVBoxLayout(self)
        layout.setSpacing(12)

        model_box = QGroupBox("Model", self)
        form = QFormLayout(model_box)
        form.setVerticalSpacing(8)
        self.encoder = QComboBox(model_box)
        self.encoder.setEditable(True)  # any spec works, e.g. clip:ViT-B-32:laion2b_s34b_b79k
        self.encoder.setMinimumContentsLength(34)
        self.encoder.addItem(self.initial.encoder, self.initial.encoder)
        self.encoder.setCurrentIndex(0)
        form.addRow("Encoder", self.encoder)
        weights_row = QHBoxLayout()
        self.weights = QLineEdit(self.initial.weights or "", model_box)
        self.weights.setPlaceholderText("optional: a hub name or a local weights file")
        weights_row.addWidget(self.weights, 1)
        browse = QPushButton("Browse…", model_box)
        browse.clicked.connect(self._browse_weights)
        weights_row.addWidget(browse)
        form.addRow("Weights", weights_row)
        self.device = QComboBox(model_box)
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(self.initial.device if self.initial.device in DEVICES else "auto")
        form.addRow("Device", self.device)
        self.captioner = QComboBox(model_box)
        self.captioner.setEditable(True)
        self.captioner.addItem(DEFAULT_LABEL, NO_CAPTIONER)
        if self.initial.captioner:
            self.captioner.addItem(self.initial.captioner, self.initial.captioner)
            self.captioner.setCurrentIndex(1)
        form.addRow("Captioner", self.captioner)
        self.rerank = QCheckBox("Re-rank the best results by matching words to image regions", model_box)
        self.rerank.setToolTip("Needs a re-ranker for the encoder (bert_resnet ships one); costs a little "
                               "time per query and explains matches in the detail panel")
        self.rerank.setChecked(lib.reranking.enabled)
        form.addRow("Re-ranking", self.rerank)
        self.cluster = QLineEdit(saved_cluster(settings) or "", model_box)
        self.cluster.setPlaceholderText("empty: encode on this computer; or auto, local, ray://HOST:10001")
        self.cluster.setToolTip("Index runs decode and encode new photos on this Ray cluster (pip install "
                                "'lumen[cluster]'); the catalog stays here. Changes seen while watching "
                                "are encoded here.")
        form.addRow("Ray cluster", self.cluster)
        self.models_note = QLabel("Looking for installed models…", model_box)
        self.models_note.setObjectName("Hint")
        self.models_note.setWordWrap(True)
        form.addRow("", self.models_note)
        note = QLabel("Changing the encoder re-indexes your photos in the background. Search keeps "
                      "using the current model until the new one has seen every photo.", model_box)
        note.setObjectName("Hint")
        note.setWordWrap(True)
        form.addRow("", note)
        layout.addWidget(model_box)

        libs_box = QGroupBox("Library folders", self)
        libs = QVBoxLayout(libs_box)
        self.roots = QListWidget(libs_box)
        self.roots.setMinimumHeight(90)
        libs.addWidget(self.roots)
        row = QHBoxLayout()
        add = QPushButton("Add folder…", libs_box)
        add.clicked.connect(self._add_root)
        row.addWidget(add)
        remove = QPushButton("Remove", libs_box)
        remove.clicked.connect(self._remove_root)
        row.addWidget(remove)
        row.addStretch(1)
        libs.addLayout(row)
        layout.addWidget(libs_box)

        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        self.plugins: list[PluginModels] = []
        jobs.run(list_plugins, on_result=self._plugins_loaded,
                 on_error=lambda m: self.models_note.setText(f"Cannot list models: {m}"))
        jobs.library_changed.connect(self._load_roots)
        self._load_roots()

    # -- values --
    def choice(self) -> Choice:
        captioner = _combo_value(self.captioner)
        return Choice(_combo_value(self.encoder), self.weights.text().strip() or None, self.device.currentText(),
                      None if captioner in (NO_CAPTIONER, DEFAULT_LABEL) else captioner)

    def apply(self) -> bool:
        """Store the choice; switch encoders when it changed. True if re-indexing started."""
        choice = self.choice()
        self.settings.setValue("device", choice.device)
        self.settings.setValue("captioner", choice.captioner or "")
        cluster = self.cluster.text().strip() or None
        if cluster != saved_cluster(self.settings):
            self.settings.setValue("cluster", cluster or "")
            self.jobs.indexing.cluster = cluster
            if cluster:
                self.jobs.indexing.request_index()  # hand the photos still to encode to it now
        if self.rerank.isChecked() != self.jobs.library.reranking.enabled and not self.jobs.library.readonly:
            self.jobs.library.reranking.set_enabled(self.rerank.isChecked())
        old = self.initial
        if (choice.encoder, choice.weights, choice.device) != (old.encoder, old.weights, old.device):
            log.info("encoder %s -> %s (weights %s, device %s)", old.encoder, choice.encoder, choice.weights, choice.device)
            self.jobs.indexing.switch_encoder(choice.encoder, choice.weights, choice.device)
            return True
        return False

    # -- internals --
    def _plugins_loaded(self, plugins: list[PluginModels]) -> None:
        self.plugins = plugins
        current_enc, current_cap = self.choice().encoder, self.choice().captioner
        self.encoder.clear()
        self.captioner.clear()
        self.captioner.addItem(DEFAULT_LABEL, NO_CAPTIONER)
        problems = []
        for plugin in plugins:
            box = self.encoder if plugin.group == ENCODER_GROUP else self.captioner
            if plugin.error:
                problems.append(f"{plugin.name}: {plugin.error}")
            for model in plugin.models:
                label = f"{model.spec}   —   {model.description}"
                label += "" if model.available else f"   [{model.where}]"
                box.addItem(label, model.spec)
                box.setItemData(box.count() - 1, f"{model.description}\n{model.where}", Qt.ItemDataRole.ToolTipRole)
        for box, current in ((self.encoder, current_enc), (self.captioner, current_cap or NO_CAPTIONER)):
            index = box.findData(current)
            if index < 0 and current:
                # e.g. "clip" (the plugin's default) or a spec no plugin lists: keep it
                box.insertItem(0, current, current)
                index = 0
            box.setCurrentIndex(max(index, 0))
        n_enc = sum(len(p.models) for p in plugins if p.group == ENCODER_GROUP)
        n_cap = sum(len(p.models) for p in plugins if p.group == CAPTIONER_GROUP)
        text = f"{n_enc} encoder model(s), {n_cap} captioner model(s) installed."
        if problems:
            text += " Could not load: " + "; ".join(problems)
        self.models_note.setText(text)

    def _browse_weights(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a weights file")
        if path:
            self.weights.setText(path)

    def _load_roots(self) -> None:
        self.jobs.run(self.jobs.library.roots, on_result=self._roots_loaded)

    def _roots_loaded(self, roots: list) -> None:
        self.roots.clear()
        for root in roots:
            self.roots.addItem(root.path + ("" if root.online else "   (offline)"))
            self.roots.item(self.roots.count() - 1).setData(Qt.ItemDataRole.UserRole, root.path)

    def _add_root(self) -> None:
        folder = choose_folder(self)
        if folder:
            self.jobs.add_root(folder)

    def _remove_root(self) -> None:
        item = self.roots.currentItem()
        if item is not None:
            self.jobs.remove_root(item.data(Qt.ItemDataRole.UserRole))
