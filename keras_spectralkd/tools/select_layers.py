"""Layer pairs for SpectralKD from a saved teacher profile (SPEC.md 6).

Reads a profile written by `spectralkd-analyze` (or `Profile.save`), applies
`keras_spectralkd.analysis.select_layer_pairs` and prints ONE line on stdout, the flag the
recipes take (student:teacher), so it can be spliced into a command:

    spectralkd-select-layers --profile=runs/cait_analysis/model_profile.json --student_depth=12
    --layer_pairs=0:0,1:1,6:18,7:19,8:20,9:21,10:22,11:23

    python recipes/deit_tiny.py $(spectralkd-select-layers \
        --profile=runs/cait_analysis/model_profile.json --student=deit_tiny_patch16_224)

The student's depth comes from --student_depth, or from --student (a registered model name,
with --student_kwargs overrides): its number of units read from the preset without building
the model (`depth` blocks for ViT/CaiT, one unit per entry of `depths` for Swin).
The rule and the chosen counts are logged on stderr. Also `python -m
keras_spectralkd.tools.select_layers` or `python tools/select_layers.py`. Exit status: 0 done,
2 usage error, 1 failure (keras_spectralkd.tools.cli).
"""

import os
import sys

from keras_spectralkd.tools import cli

PROG = "spectralkd-select-layers"


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

    if student_depth is None and student is None:
        raise cli.UsageError(
            "Pass --student_depth or --student (the student to select pairs for)."
        )
    if student_depth is not None and student is not None:
        raise cli.UsageError("Pass only one of --student_depth and --student.")
    if student is not None:
        cli.check_model_name("student", student)
    if student_depth is not None and student_depth < 1:
        raise cli.UsageError(f"--student_depth={student_depth} must be >= 1.")
    if isinstance(profile, (str, os.PathLike)):
        if not os.path.exists(profile):
            raise FileNotFoundError(
                f"--profile={os.fspath(profile)!r} does not exist; write one with "
                "spectralkd-analyze (model_profile.json in its --output_dir)."
            )
        profile = analysis.Profile.load(profile)
    depth = student_depth if student_depth is not None else student_units(student, student_kwargs)
    pairs = analysis.select_layer_pairs(profile, depth, num_front, num_back)
    return pairs, "--layer_pairs=" + analysis.format_layer_pairs(pairs)


def build_parser():
    parser = cli.parser(PROG, __doc__.split("\n\n")[0])
    parser.add_argument("--profile", required=True,
                        help="Teacher profile (.json or .csv) from spectralkd-analyze.")
    parser.add_argument("--student_depth", type=int, default=None,
                        help="The student's number of units.")
    parser.add_argument("--student", default=None,
                        help="Registered student name (its depth is used).")
    parser.add_argument("--student_kwargs", type=cli.json_object, default=None,
                        help="JSON overrides of --student (e.g. depth).")
    parser.add_argument("--num_front", type=int, default=None,
                        help="Teacher units taken from the start (default: auto).")
    parser.add_argument("--num_back", type=int, default=None,
                        help="Teacher units taken from the end (default: auto).")
    return parser


def main(argv=None):
    """The `spectralkd-select-layers` command; returns the exit status."""

    def body(args):
        pairs, flag = select_layers(**vars(args))
        print(f"{len(pairs)} layer pairs (student, teacher): {pairs}", file=sys.stderr)
        print(flag)

    return cli.run(build_parser(), body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
