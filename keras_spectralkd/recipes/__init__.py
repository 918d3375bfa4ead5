"""The paper's training recipes: the runner (command line -> training run) and the table.

`recipes/deit_tiny.py`, `deit_small.py` and `swin_tiny.py` at the repository root are thin
entry scripts over `RECIPES`. This package is the top layer: nothing else in keras_spectralkd
imports it.
"""

from keras_spectralkd.recipes.runner import Recipe, RunConfig, main, run
from keras_spectralkd.recipes.table import RECIPES
