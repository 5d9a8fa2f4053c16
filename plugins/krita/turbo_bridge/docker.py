"""The docker: its widgets, and the ``DockWidget`` Krita creates once per window."""

from __future__ import annotations

import random

from .controller import Controller
from .notice import add_docker
from .qt import QtCore, QtWidgets
from .steering import SteeringRows

SETTINGS = "turbo_bridge"
DEFAULT_ADDRESS = "127.0.0.1:8787"
SEED_MAX = 2**31 - 1  # a QSpinBox holds 32-bit ints; the daemon takes any seed up to 2**64-1


class BridgePanel(QtWidgets.QWidget):
    """Daemon address, status, prompt (live as you type), seed, guidance, steps, live, opacity."""

    def __init__(self, host, parent=None):
        super().__init__(parent)
        self.host = host
        self.controller = Controller(host, parent=self)
        self.controller.status_changed.connect(self._show_status)
        self.controller.connected.connect(self._show_params)

        self.address = QtWidgets.QLineEdit(host.readSetting(SETTINGS, "address", DEFAULT_ADDRESS))
        self.connect_button = QtWidgets.QPushButton("Connect")
        self.channel = QtWidgets.QLineEdit("main")
        self.channel.setToolTip("The daemon channel of this document: each document can drive its own stream "
                                "(a new name is created on the daemon)")
        self.status = QtWidgets.QLabel(self.controller.status)
        self.status.setWordWrap(True)
        self.prompt = QtWidgets.QPlainTextEdit()
        self.prompt.setPlaceholderText("Type a prompt: every keystroke is a frame")
        self.prompt.setMaximumHeight(90)
        self.negative_prompt = QtWidgets.QLineEdit()
        self.negative_prompt.setPlaceholderText("What to steer away from (with guidance above 0)")
        self.loras = QtWidgets.QWidget()  # a weight slider per LoRA file, made on connecting
        self.lora_sliders: dict[str, QtWidgets.QSlider] = {}
        QtWidgets.QFormLayout(self.loras).setContentsMargins(0, 0, 0, 0)
        self.seed = QtWidgets.QSpinBox()
        self.seed.setRange(0, SEED_MAX)
        self.new_seed = QtWidgets.QPushButton("New seed")
        self.guidance = QtWidgets.QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setDecimals(1)
        self.steps = QtWidgets.QSpinBox()
        self.steps.setRange(1, 8)
        self.live = QtWidgets.QCheckBox("Live")
        self.live.setChecked(True)
        self.input_live = QtWidgets.QCheckBox("Canvas as input")
        self.input_live.setToolTip("Send the canvas (or the selection), without the reference layer, as the "
                                   "daemon's input image: frames follow your painting (image-to-image)")
        self.strength = QtWidgets.QDoubleSpinBox()
        self.strength.setRange(0.0, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setDecimals(2)
        self.strength.setValue(0.5)
        self.strength.setToolTip("How far frames may move from the canvas: 0 ignores it, 1 keeps little of it")
        self.opacity = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        saved = host.readSetting(SETTINGS, "opacity", "60")
        self.opacity.setValue(int(saved) if saved.isdigit() else 60)
        self.opacity_label = QtWidgets.QLabel()
        self.keep = QtWidgets.QPushButton("Keep as layer")
        self.seamless = QtWidgets.QCheckBox("Seamless")
        self.seamless.setToolTip("Tileable frames: the picture wraps around left-right and top-bottom. Paint on "
                                 "it with View > Wrap Around Mode (W)")
        self.record = QtWidgets.QPushButton("Record")
        self.record.setCheckable(True)
        self.record.setToolTip("Record the daemon's frames into an MP4 in its --output-dir")
        self.steering = SteeringRows(host, self.controller, SETTINGS)
        self._lay_out()

        self.controller.reference.opacity_percent = self.opacity.value()
        self.opacity_label.setText(f"{self.opacity.value()}%")
        self.connect_button.clicked.connect(self.reconnect)
        self.address.returnPressed.connect(self.reconnect)
        self.channel.editingFinished.connect(self.pick_channel)
        self.prompt.textChanged.connect(lambda: self.controller.set_params({"prompt": self.prompt.toPlainText()}))
        self.negative_prompt.textChanged.connect(
            lambda text: self.controller.set_params({"negative_prompt": text}))
        self.seed.valueChanged.connect(lambda value: self.controller.set_params({"seed": int(value)}))
        self.new_seed.clicked.connect(lambda: self.seed.setValue(random.randint(0, SEED_MAX)))
        self.guidance.valueChanged.connect(lambda value: self.controller.set_params({"guidance": float(value)}))
        self.steps.valueChanged.connect(lambda value: self.controller.set_params({"steps": int(value)}))
        self.live.toggled.connect(self.controller.set_live)
        self.input_live.toggled.connect(self.controller.feed.set_live)
        self.strength.valueChanged.connect(lambda value: self.controller.set_params({"strength": float(value)}))
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.keep.clicked.connect(self.controller.keep_frame)
        self.seamless.toggled.connect(lambda on: self.controller.set_params({"tiling": "xy" if on else "none"}))
        self.record.clicked.connect(self.controller.set_recording)
        self.controller.recording_changed.connect(self._show_recording)
        app = QtWidgets.QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.controller.stop)

    def _lay_out(self) -> None:
        form = QtWidgets.QFormLayout(self)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.address, 1)
        row.addWidget(self.connect_button)
        form.addRow("Daemon", row)
        form.addRow("Channel", self.channel)
        form.addRow(self.status)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative_prompt)
        form.addRow("LoRAs", self.loras)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.seed, 1)
        row.addWidget(self.new_seed)
        form.addRow("Seed", row)
        form.addRow("Guidance", self.guidance)
        form.addRow("Steps", self.steps)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.input_live)
        row.addWidget(QtWidgets.QLabel("Strength"))
        row.addWidget(self.strength, 1)
        form.addRow("Input", row)
        self.steering.add_rows(form)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.opacity, 1)
        row.addWidget(self.opacity_label)
        form.addRow("Opacity", row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.live)
        row.addWidget(self.seamless)
        row.addStretch(1)
        row.addWidget(self.record)
        row.addWidget(self.keep)
        form.addRow(row)

    def reconnect(self) -> None:
        try:
            url = self.controller.connect_to(self.address.text())
        except ValueError as exc:
            self._show_status(str(exc))
            return
        self.host.writeSetting(SETTINGS, "address", self.address.text().strip())
        self.address.setToolTip(url)

    def window_canvas_changed(self) -> None:
        """Another view (document) became active: frames, channel and layer lists follow it."""
        self.controller.document_changed()
        self.channel.setText(self.controller.channel)  # each document shows its own channel
        self.steering.refresh_layers()

    def pick_channel(self) -> None:
        try:
            self.controller.set_channel(self.channel.text().strip() or "main")
        except ValueError as exc:
            self._show_status(str(exc))
            self.channel.setText(self.controller.channel)

    def _show_params(self, connection) -> None:
        """Show the daemon's parameters as they are; nothing is sent until you change one."""
        params = connection.params
        self._make_lora_sliders(connection.loras)
        widgets = (self.prompt, self.negative_prompt, self.seed, self.guidance, self.steps, self.strength,
                   self.seamless, *self.lora_sliders.values())
        for widget in widgets:
            widget.blockSignals(True)
        try:
            if isinstance(params.get("prompt"), str) and params["prompt"] != self.prompt.toPlainText():
                self.prompt.setPlainText(params["prompt"])
            if 0 <= params.get("seed", -1) <= SEED_MAX:
                self.seed.setValue(params["seed"])
            self.guidance.setValue(params.get("guidance", self.guidance.value()))
            self.steps.setValue(params.get("steps", self.steps.value()))
            self.strength.setValue(params.get("strength", self.strength.value()))
            if isinstance(params.get("negative_prompt"), str):
                self.negative_prompt.setText(params["negative_prompt"])
            active = params.get("loras") if isinstance(params.get("loras"), dict) else {}
            for name, slider in self.lora_sliders.items():
                slider.setValue(round(float(active.get(name, 0.0)) * 100))
            self.seamless.setChecked(params.get("tiling", "none") != "none")
        finally:
            for widget in widgets:
                widget.blockSignals(False)

    def _make_lora_sliders(self, names) -> None:
        """A slider per LoRA (-2..2 in hundredths; 0 is off; the daemon takes at most 4 on)."""
        form = self.loras.layout()
        while form.rowCount():
            form.removeRow(0)
        self.lora_sliders = {}
        for name in names:
            slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
            slider.setRange(-200, 200)
            slider.setToolTip(f"{name}: weight -2..2, 0 turns it off")
            slider.valueChanged.connect(
                lambda value, name=name: self.controller.set_params({"loras": {name: value / 100}}))
            form.addRow(name, slider)
            self.lora_sliders[name] = slider

    def _show_recording(self, on: bool) -> None:
        self.record.setChecked(on)
        self.record.setText("Stop recording" if on else "Record")

    def _opacity_changed(self, value: int) -> None:
        self.opacity_label.setText(f"{value}%")
        self.host.writeSetting(SETTINGS, "opacity", str(value))
        self.controller.set_opacity(value)

    def _show_status(self, text: str) -> None:
        self.status.setText(text)


def register(krita) -> None:
    """Add the docker to Krita (``krita`` is the module Krita gives its plugins)."""

    class TurboBridgeDocker(krita.DockWidget):
        def __init__(self):
            super().__init__()
            self.setWindowTitle("turbo-bridge")
            self.panel = BridgePanel(krita.Krita.instance())
            self.setWidget(self.panel)
            self.panel.reconnect()

        def canvasChanged(self, canvas):  # noqa: N802 (Krita's name)
            self.panel.window_canvas_changed()

    add_docker(krita, TurboBridgeDocker)
