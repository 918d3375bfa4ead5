"""The training engine and its recipes: `run` (a `RunConfig` -> a run folder), the recipe table,
and `sweep` (many runs: the demo's and the study's arms and seeds).

`spectralkd-train` (keras_spectralkd/tools/train.py) runs any recipe; `recipes/deit_tiny.py`,
`deit_small.py`, `swin_tiny.py` and `demo.py` at the repository root are thin scripts over it.
This package is the application layer: only the command-line tools import it.
"""

from keras_spectralkd.recipes.config import Recipe, RunConfig
from keras_spectralkd.recipes.runner import run
from keras_spectralkd.recipes.table import RECIPES
