"""The docker's steering rows: a layer as a ControlNet's control image, or as the style image.

The rows go into the panel's own form (``add_rows``), so their labels line up with the others.
"""

from __future__ import annotations

from .layer import REFERENCE_NAME
from .qt import QtWidgets


class SteeringRows:
    """Layer as control (a sketch, lines, a depth map) and layer as style image (the daemon's --ip-adapter).

    ``settings`` is the group of Krita's settings the ControlNet name is kept in."""

    def __init__(self, host, controller, settings: str):
        self.host, self.controller, self.settings = host, controller, settings
        self.control_layer = _LayerBox(self.refresh_layers)
        self.control_layer.setToolTip("The layer to send (a sketch, lines, a depth map)")
        self.control_name = QtWidgets.QLineEdit(host.readSetting(settings, "control_name", ""))
        self.control_name.setPlaceholderText("ControlNet name")
        self.control_name.setToolTip("The daemon's --controlnet NAME this layer steers")
        self.control_preprocess = QtWidgets.QComboBox()
        self.control_preprocess.addItems(["none", "canny"])
        self.control_preprocess.setToolTip("none: the layer is the condition as it is; canny: the daemon finds edges")
        self.control_scale = QtWidgets.QDoubleSpinBox()
        self.control_scale.setRange(0.0, 2.0)
        self.control_scale.setSingleStep(0.1)
        self.control_scale.setValue(1.0)
        self.send_control = QtWidgets.QPushButton("Layer as control")
        self.style_layer = _LayerBox(self.refresh_layers)
        self.style_layer.setToolTip("The layer whose look the frames take (needs a daemon with --ip-adapter)")
        self.style_scale = QtWidgets.QDoubleSpinBox()
        self.style_scale.setRange(0.0, 2.0)
        self.style_scale.setSingleStep(0.1)
        self.style_scale.setValue(0.8)
        self.style_scale.setToolTip("How strongly the style image steers (0: off)")
        self.send_style = QtWidgets.QPushButton("Layer as style image")
        self._style_sent = False
        self.send_control.clicked.connect(self._send_control)
        self.control_scale.valueChanged.connect(self._control_scale_changed)
        self.send_style.clicked.connect(self._send_style)
        self.style_scale.valueChanged.connect(self._style_scale_changed)

    def add_rows(self, form: QtWidgets.QFormLayout) -> None:
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.control_layer, 1)
        row.addWidget(self.control_name, 1)
        form.addRow("Control", row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.control_preprocess)
        row.addWidget(self.control_scale)
        row.addWidget(self.send_control)
        form.addRow(row)
        row = QtWidgets.QHBoxLayout()
        row.addWidget(self.style_layer, 1)
        row.addWidget(self.style_scale)
        row.addWidget(self.send_style)
        form.addRow("Style", row)

    def refresh_layers(self) -> None:
        """The active document's layers (top level, the reference layer left out) in the Control and Style boxes."""
        doc = self.host.activeDocument()
        names = [node.name() for node in (doc.rootNode().childNodes() if doc is not None else [])
                 if node.name() != REFERENCE_NAME]
        for box in (self.control_layer, self.style_layer):
            current = box.currentText()
            box.clear()
            box.addItems(names)
            if current in names:
                box.setCurrentText(current)

    def _send_control(self) -> None:
        self.host.writeSetting(self.settings, "control_name", self.control_name.text())
        self.controller.feed.send_layer_as_control(self.control_layer.currentText(), self.control_name.text(),
                                                   self.control_preprocess.currentText(), self.control_scale.value())

    def _control_scale_changed(self, value: float) -> None:
        name = self.control_name.text().strip()
        if name:
            self.controller.set_params({"controls": {name: float(value)}})

    def _send_style(self) -> None:
        self._style_sent = self.controller.feed.send_layer_as_style(self.style_layer.currentText(),
                                                                    self.style_scale.value())

    def _style_scale_changed(self, value: float) -> None:
        if self._style_sent:  # the scale follows the spin box once a style image was sent
            self.controller.set_params({"style_scale": float(value)})


class _LayerBox(QtWidgets.QComboBox):
    """A layer picker that lists the document's layers as they are now, each time it opens."""

    def __init__(self, refresh):
        super().__init__()
        self._refresh = refresh

    def showPopup(self) -> None:  # noqa: N802 (Qt's name)
        self._refresh()
        super().showPopup()
