"""A stand-in for the parts of TouchDesigner the turbo-bridge plugin uses (TD has no Linux build).

Faithful to the documented Python API (derivative.ca, TouchDesigner 2023.11xxx builds, Python
3.11): see plugins/touchdesigner/README.md for the list of what is covered and checked.
"""

from .env import OP_TYPES, TouchDesigner
from .pars import TdError

__all__ = ["OP_TYPES", "TdError", "TouchDesigner"]
