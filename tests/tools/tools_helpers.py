"""Helpers of the tool tests: the tool modules, a subprocess environment, in-process runs."""

import importlib
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_tool(name):
    """The tool module `keras_spectralkd.tools.<name>` (its `main(argv) -> int` and functions)."""
    return importlib.import_module(f"keras_spectralkd.tools.{name}")


def run_main(tool, argv, capsys):
    """`tool.main(argv)` in-process: (exit status, stdout, stderr)."""
    status = tool.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def script_env():
    """Environment of a tool subprocess: this backend, quiet TF, the checkout importable."""
    env = dict(os.environ)
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env
