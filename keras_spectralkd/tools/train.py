"""`spectralkd-train`: any recipe, any setting, one command.

    spectralkd-train --recipe=deit_tiny --set epochs=300 --set data_dir=/data/imagenet
    spectralkd-train --recipe=deit_tiny --data_dir=/data/imagenet --teacher_weights=T.pth
    spectralkd-train --recipe=fashion_mnist_teacher --set output_dir=runs/fm_teacher
    spectralkd-train --recipe=swin_tiny --help        # every setting with this recipe's default

Every `RunConfig` field can be set, as `--set name=value` or `--name=value`; values are parsed by
the field's type and checked against its choices or range, an unknown name is refused with the
list of valid ones, and the whole config is checked before any data or model is touched.
`--preset` starts from one of the recipe's smaller presets. `recipes/deit_tiny.py` and the other
recipe scripts are this command with the recipe fixed. Re-running with the same output_dir
resumes the run (docs/training.md).
"""

import argparse
import sys

from keras_spectralkd.tools import cli

PROG = "spectralkd-train"


def _recipes():
    from keras_spectralkd.recipes import RECIPES

    return RECIPES


def build_parser(recipe_name=None):
    from keras_spectralkd.recipes import config as config_lib

    prog = f"{recipe_name}.py" if recipe_name else PROG
    # Our own --help: it lists every setting with the chosen recipe's default.
    parser = cli._Parser(prog=prog, description=__doc__.split("\n\n")[0], add_help=False,
                         allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true", help="show every setting and exit")
    if recipe_name is None:
        parser.add_argument("--recipe", choices=sorted(_recipes()), help="the recipe to run")
    parser.add_argument("--preset", default="paper",
                        help="settings to start from: 'paper' (the recipe's own) or a preset")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="set one setting (repeatable)")
    for field in config_lib.fields():
        parser.add_argument(f"--{field.name}", dest=f"field:{field.name}", default=None,
                            metavar="VALUE", help=argparse.SUPPRESS)
    return parser


def help_text(parser, recipe_name, preset):
    """The usage, the recipes and every setting with its default under `recipe_name`."""
    from keras_spectralkd.recipes import RunConfig
    from keras_spectralkd.recipes import config as config_lib

    recipes = _recipes()
    lines = [parser.format_usage().rstrip(), "", __doc__.strip(), "", "recipes:"]
    lines += [f"  {name}: {recipe.description} (presets: "
              f"{', '.join(['paper'] + sorted(recipe.presets))})" for name, recipe in
              recipes.items()]
    if recipe_name in recipes:
        defaults = recipes[recipe_name].config(preset if preset else "paper")
        lines += ["", f"settings (--set NAME=VALUE or --NAME=VALUE), defaults of recipe "
                      f"{recipe_name!r}, preset {preset!r}:"]
    else:
        defaults = RunConfig(student="(the recipe's)")
        lines += ["", "settings (--set NAME=VALUE or --NAME=VALUE); defaults shown are the "
                      "generic ones, see --recipe=NAME --help for a recipe's:"]
    lines.append(config_lib.describe_fields(defaults))
    return "\n".join(lines)


def config_from_args(args, recipe_name):
    """The recipe's preset with every setting given on the command line, checked."""
    from keras_spectralkd.recipes import config as config_lib

    recipe = _recipes()[recipe_name]
    changes = {}
    for name, text in vars(args).items():
        if name.startswith("field:") and text is not None:
            changes[name[len("field:"):]] = text
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep:
            raise cli.UsageError(f"--set {item!r} is not NAME=VALUE (e.g. --set epochs=300)")
        changes[name.strip()] = text
    try:
        values = {name: config_lib.parse_value(name, text) for name, text in changes.items()}
        return recipe, recipe.config(args.preset, **values).check()
    except ValueError as error:
        raise cli.UsageError(str(error)) from None


def main(argv=None, recipe_name=None):
    """Command-line entry point (`recipe_name` fixes the recipe: the recipe scripts): 0 done,
    1 a failure while running (one line, no traceback), 2 a usage error."""
    parser = build_parser(recipe_name)

    def body(args):
        name = recipe_name or args.recipe
        if args.help:
            print(help_text(parser, name, args.preset))
            return 0
        if name is None:
            raise cli.UsageError(f"--recipe is required; one of {', '.join(sorted(_recipes()))}")
        recipe, config = config_from_args(args, name)
        from keras_spectralkd.recipes import runner

        runner.run(recipe, config)
        return 0

    return cli.run(parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
