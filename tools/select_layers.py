"""Layer pairs for SpectralKD from a saved teacher profile (SPEC.md 6).

Reads a profile written by `tools/analyze.py` (or `Profile.save`), applies
`keras_spectralkd.analysis.select_layer_pairs` and prints ONE line on stdout, the flag the
recipes take (student:teacher), so it can be spliced into a command:

    python tools/select_layers.py --profile=runs/cait_analysis/model_profile.json --student_depth=12
    --layer_pairs=0:0,1:1,6:18,7:19,8:20,9:21,10:22,11:23

    python recipes/deit_tiny.py $(python tools/select_layers.py \
        --profile=runs/cait_analysis/model_profile.json --student=deit_tiny_patch16_224)

The student's depth comes from --student_depth, or from --student (a registered model name,
with --student_kwargs overrides): its number of units read from the preset without building
the model (`depth` blocks for ViT/CaiT, one unit per entry of `depths` for Swin).
The rule and the chosen counts are logged on stderr.
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("profile", None, "Teacher profile (.json or .csv) from tools/analyze.py.")
    flags.DEFINE_integer("student_depth", None, "The student's number of units.")
    flags.DEFINE_string("student", None, "Registered student name (its depth is used).")
    flags.DEFINE_string("student_kwargs", None, "JSON overrides of --student (e.g. depth).")
    flags.DEFINE_integer("num_front", None, "Teacher units taken from the start (default: auto).")
    flags.DEFINE_integer("num_back", None, "Teacher units taken from the end (default: auto).")
    flags.mark_flag_as_required("profile")


def student_units(name, overrides=None):
    """Number of units of registered model `name` (with constructor `overrides`), unbuilt."""
    from keras_spectralkd.models import model_defaults

    config = model_defaults(name)
    config.update(overrides or {})
    if "depths" in config:  # hierarchical (Swin): one unit per stage
        return len(config["depths"])
    if "depth" in config:
        return int(config["depth"])
    from keras_spectralkd.models import create

    return create(name, **(overrides or {})).num_units


def select_layers(
    profile, student_depth=None, student=None, student_kwargs=None, num_front=None, num_back=None
):
    """Returns (pairs, flag text) for a profile path or `Profile`."""
    from keras_spectralkd import analysis

    if isinstance(profile, (str, os.PathLike)):
        profile = analysis.Profile.load(profile)
    if student_depth is None and student is None:
        raise ValueError("Pass --student_depth or --student (the student to select pairs for).")
    if student_depth is not None and student is not None:
        raise ValueError("Pass only one of --student_depth and --student.")
    depth = student_depth if student_depth is not None else student_units(student, student_kwargs)
    pairs = analysis.select_layer_pairs(profile, depth, num_front, num_back)
    return pairs, "--layer_pairs=" + analysis.format_layer_pairs(pairs)


def main(argv):
    del argv
    pairs, flag = select_layers(
        FLAGS.profile,
        student_depth=FLAGS.student_depth,
        student=FLAGS.student,
        student_kwargs=json.loads(FLAGS.student_kwargs) if FLAGS.student_kwargs else None,
        num_front=FLAGS.num_front,
        num_back=FLAGS.num_back,
    )
    logging.info("%d layer pairs (student, teacher): %s", len(pairs), pairs)
    print(flag)
    sys.stdout.flush()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    define_flags()
    app.run(main)
