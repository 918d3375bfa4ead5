"""The command-line tools' console: TensorFlow's C++ start-up lines kept off it.

Importing TensorFlow 2.21 on a machine without a GPU prints, whatever `TF_CPP_MIN_LOG_LEVEL`
says, lines logged before absl's logging is initialised ("WARNING: All log messages before
absl::InitializeLog() ...", "I0000 ... oneDNN custom operations are on ...", "I0000 ...
cudart_stub.cc ... Could not find cuda drivers ..."), and later, unless `TF_CPP_MIN_LOG_LEVEL`
is 3, "E0000 ... failed call to cuInit". None of it is actionable on a CPU machine.

`quiet_console()` is for a program's entry point only (every tool gets it from `tools.cli.run`):
it changes the process (an environment variable, file descriptor 2 while importing), which a
library must never do on import; on a GPU host the same lines are the ones that say why the GPU
is not used. Importing this module changes nothing and imports nothing heavy.
"""

import importlib
import importlib.util
import os
import re
import sys
import tempfile

# absl's prefix (severity I/W, MMDD, time (00:00:<epoch> before absl is initialised), thread,
# file:line]) and TensorFlow's known start-up lines; anything else captured is written back.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow .*)$"
)


def quiet_console():
    """Keeps TensorFlow's start-up lines off the console; call it first in an entry point.

    Sets `TF_CPP_MIN_LOG_LEVEL=3` unless the user set it (it silences the later cuInit line),
    then imports Keras and TensorFlow (when installed) through `quiet_import`. Modules already
    imported are left alone, so it is cheap to call again. Errors and warnings TensorFlow
    prints after start-up, and any line it prints that is not a start-up line, still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_import(*(name for name in ("keras", "tensorflow")
                   if name in sys.modules or importlib.util.find_spec(name) is not None))


def is_startup_noise(line):
    """Whether `line` is one of TensorFlow's start-up lines (see the module doc)."""
    return bool(_NOISE.match(line.rstrip("\n")))


def quiet_import(*names):
    """Imports the modules `names` in order with TensorFlow's start-up lines filtered out.

    File descriptor 2 (where C++ writes) goes to a temporary file during the import; every
    captured line that is not a start-up line is then written back to stderr. Modules already
    imported are left alone. Returns nothing; raises what the import raises (after restoring
    stderr and writing back what was captured).
    """
    names = [name for name in names if name not in sys.modules]
    if not names:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (e.g. some notebooks)
        for name in names:
            importlib.import_module(name)
        return
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            for name in names:
                importlib.import_module(name)
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_startup_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
