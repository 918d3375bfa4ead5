"""The command-line tools, as modules: `python -m keras_spectralkd.tools.<name>` or the console
scripts (`spectralkd-analyze`, `spectralkd-convert`, `spectralkd-select-layers`, ...).

Each tool module has `main(argv=None) -> int` (argparse, through `cli.run`): exit status 0 on
success, 2 for a usage error (a bad or missing flag), 1 for a failure while running (a missing or
corrupt file, unusable data); errors are one line on stderr, never a traceback
(`SPECTRALKD_TRACEBACK=1` shows it). Functions they are built on stay importable for Python use.
"""
