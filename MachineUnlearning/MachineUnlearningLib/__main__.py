"""``python -m MachineUnlearningLib`` (and ``PythonSlicer -m MachineUnlearningLib``) entry point."""

import sys

from MachineUnlearningLib.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
