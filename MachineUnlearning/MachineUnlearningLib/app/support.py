"""Which 3D Slicer the module runs on, checked before any other engine module is imported.

Slicer 5.8 ships Python 3.9; Slicer 5.10 and 5.12 ship Python 3.12 (``Slicer_REQUIRED_PYTHON_
VERSION`` in Slicer's top-level CMakeLists.txt at tags v5.8.1, v5.10.0, v5.12.0). The engine
uses Python 3.10 syntax and MONAI 1.6 needs Python 3.10, so on an older Slicer the module shows
this one message instead of tracebacks. This file must keep running on Python 3.9: no newer
syntax or library (Testing/test_module_support.py runs it with a 3.9 interpreter).
"""

import sys

MINIMUM_PYTHON = (3, 10)
SUPPORTED_SLICER = "5.10"
"""The oldest Slicer release that ships Python >= 3.10."""


def unsupported_message(python_version=None, slicer_version=""):
    """One sentence saying why this Slicer cannot run the module; "" when it can.

    Args:
        python_version: (major, minor[, micro]) of the running Python; default: this one.
        slicer_version: e.g. "5.8.1" (``slicer.app.applicationVersion``), for the message.
    """
    version = tuple(python_version or sys.version_info[:3])
    if version[:2] >= MINIMUM_PYTHON:
        return ""
    found = ".".join(str(part) for part in version[:3])
    this = f"Slicer {slicer_version}" if slicer_version else "This Slicer"
    needed = ".".join(str(part) for part in MINIMUM_PYTHON)
    return (
        f"Machine Unlearning needs 3D Slicer {SUPPORTED_SLICER} or later: {this} runs Python "
        f"{found}, and the module needs Python {needed} or newer. Install Slicer "
        f"{SUPPORTED_SLICER} or later from download.slicer.org."
    )
