"""Paired-seed SpectralKD study on Fashion-MNIST: see keras_spectralkd/tools/study.py.

    python tools/study.py --quick --output_dir=runs/study_quick
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_spectralkd.tools.study import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
