# PyInstaller runtime hook (listed first in chargebridge.spec, so it runs before PyInstaller's own
# hooks, e.g. pyi_rth_pyside6, rewrite QT_PLUGIN_PATH / QML2_IMPORT_PATH). It keeps a copy of the
# environment as the user started us, so core.procenv.clean_env() can give child processes
# (xdg-open, the engine) the original values instead of paths into this bundle.
import os
import sys

sys._chargebridge_env_at_start = dict(os.environ)
