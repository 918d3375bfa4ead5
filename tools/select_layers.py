"""`spectralkd-select-layers` from a checkout: see keras_spectralkd/tools/select_layers.py (its --help)."""

import os
import sys

if __name__ == "__main__":
    # Running from a checkout without installing: make the package importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from keras_spectralkd.tools.select_layers import main

    raise SystemExit(main())
