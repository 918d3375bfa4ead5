"""What every command-line tool shares: argparse without exits, one-line errors, exit statuses.

A tool is `main(argv=None) -> int` = `run(parser, body, argv)`:

- usage errors (unknown, missing or malformed flags, a value that is not one of the accepted
  ones) print `<prog>: usage error: <what>` and return 2;
- failures while running (a missing or corrupt file, unusable data, a model that does not fit)
  print `<prog>: error: <what>` and return 1;
- anything unexpected prints `<prog>: internal error: <Type>: <what>` (a bug to report) and
  returns 1.

Each message is ONE line on stderr, never a traceback; `SPECTRALKD_TRACEBACK=1` re-raises for
debugging. argparse (not absl flags) because `main` is called in-process by tests and console
scripts any number of times: absl's flags are process-global and can be defined once only.
"""

import argparse
import json
import os
import sys

from keras_spectralkd import _startup

USAGE_ERROR = 2
RUNTIME_ERROR = 1

# Failures a user can fix (a file, the data, a setting), reported as `error:`; any other
# exception is `internal error:`.
USER_ERRORS = (ValueError, OSError, KeyError, ImportError, RuntimeError)


class UsageError(ValueError):
    """A bad command line found after parsing (e.g. an unknown model name): exit status 2.

    A ValueError, so Python callers of the tools' functions catch it as one."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises `UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def parser(prog, description):
    """The tool's argument parser (`--flag=value` and `--flag value` both work)."""
    return _Parser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def json_object(text):
    """argparse `type=` for JSON constructor overrides such as --model_kwargs='{"depth": 4}'."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not valid JSON ({error.msg} at character {error.pos}); expected an "
            'object like \'{"depth": 4}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{text!r} is JSON but not an object; expected an object like '{{\"depth\": 4}}'"
        )
    return value


def one_line(message):
    """`message` on one line (the converter lists many tensors; a line each is too many)."""
    return " ".join(str(message).split())


def check_model_name(flag, name):
    """Raises `UsageError` unless `name` is a registered model."""
    from keras_spectralkd.models import list_models

    if name not in list_models():
        raise UsageError(
            f"--{flag}={name!r} is not a registered model; expected one of: "
            f"{', '.join(list_models())}"
        )


def run(arg_parser, body, argv=None):
    """Parses `argv` (default: sys.argv[1:]) and calls `body(args)`; returns the exit status.

    Before `body`, keeps TensorFlow's start-up lines off the console (`_startup.quiet_console`):
    a tool is an entry point, so it may change the process where the library may not."""
    prog = arg_parser.prog
    show_traceback = os.environ.get("SPECTRALKD_TRACEBACK") == "1"
    try:
        args = arg_parser.parse_args(sys.argv[1:] if argv is None else list(argv))
        _startup.quiet_console()  # after parsing: --help and usage errors stay fast
        status = body(args)
        return 0 if status is None else int(status)
    except SystemExit as exit_:  # --help
        return 0 if exit_.code is None else int(exit_.code)
    except UsageError as error:
        if show_traceback:
            raise
        print(f"{prog}: usage error: {one_line(error)} (see {prog} --help)", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as error:
        if show_traceback:
            raise
        print(f"{prog}: error: {one_line(_text(error))}", file=sys.stderr)
        return RUNTIME_ERROR
    except Exception as error:  # noqa: BLE001 - a tool never shows a traceback
        if show_traceback:
            raise
        print(f"{prog}: internal error: {type(error).__name__}: {one_line(error)} (rerun with "
              "SPECTRALKD_TRACEBACK=1 to see where)", file=sys.stderr)
        return RUNTIME_ERROR
    finally:
        sys.stdout.flush()


def _text(error):
    # KeyError's str() is the repr of its key; OSError's may lack the path.
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, OSError) and error.filename and str(error.filename) not in str(error):
        return f"{error} ({error.filename})"
    return str(error)
