"""What importing the package does to the process (nothing), and what the tools' entry point
does to the console (TensorFlow's C++ start-up lines kept off it)."""

import json
import os
import subprocess
import sys

import keras
import pytest

from keras_spectralkd import _startup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
# Every subpackage and top-level module a user may import.
SUBPACKAGES = ("data", "models", "training", "analysis", "callbacks", "convert", "tools",
               "recipes")
# Lines TensorFlow 2.21 prints on import on a machine without a GPU (copied from a console).
STARTUP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796024641.657033   23590 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors.",
    "I0000 00:00:1796024641.657376   23590 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine, GPU will not be used.",
    "W1130 07:05:07.123456    1234 some_file.cc:12] a warning with absl's initialised time",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild "
    "TensorFlow with the appropriate compiler flags.",
]

# Run in a fresh interpreter: records the environment and file descriptor 2, watches every write
# to os.environ (with the file that made it: Keras, TensorFlow and JAX set variables of their
# own on import) and every os.dup2 onto fd 2 (a redirect undone before the import returns leaves
# no other trace), imports the package and its subpackages, then writes a marker line to fd 2.
IMPORT_SCRIPT = """
import importlib, json, os, sys
sys.modules.setdefault("triton", None)  # see tests/conftest.py
env_before, stat_before, stderr_before = dict(os.environ), os.fstat(2), sys.stderr
writes, redirects = [], []
environ_type, real_dup2 = type(os.environ), os.dup2
real_set, real_del = environ_type.__setitem__, environ_type.__delitem__

def writer():
    frame = sys._getframe(2)
    while frame.f_globals.get("__name__") in ("os", "_collections_abc"):  # setdefault, update
        frame = frame.f_back
    return frame.f_code.co_filename

def watching_set(self, key, value):
    writes.append([key, value, writer()])
    real_set(self, key, value)

def watching_del(self, key):
    writes.append([key, None, writer()])
    real_del(self, key)

def watching_dup2(fd, fd2, *args, **kwargs):
    if fd2 == 2:
        redirects.append(fd)
    return real_dup2(fd, fd2, *args, **kwargs)

environ_type.__setitem__, environ_type.__delitem__ = watching_set, watching_del
os.dup2 = watching_dup2
import keras_spectralkd
for name in SUBPACKAGES:
    importlib.import_module("keras_spectralkd." + name)
environ_type.__setitem__, environ_type.__delitem__, os.dup2 = real_set, real_del, real_dup2
stat_after = os.fstat(2)
os.write(2, b"MARKER written to fd 2 after the import\\n")
print("RESULT " + json.dumps({
    "package_dir": os.path.dirname(keras_spectralkd.__file__),
    "env_changed": sorted(k for k in set(env_before) | set(os.environ)
                          if env_before.get(k) != os.environ.get(k)),
    "env_writes": writes,
    "same_fd2": [stat_before.st_dev, stat_before.st_ino] == [stat_after.st_dev, stat_after.st_ino],
    "same_sys_stderr": sys.stderr is stderr_before,
    "redirects_of_fd2": redirects,
}))
"""


def _clean_env(backend):
    # No TF_CPP_MIN_LOG_LEVEL (tests/conftest.py sets one): a default the import set would hide.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    path = [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env.update(KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(path))
    return env


def _backends():
    # The suite's own backend always; the others where installed (each is a fresh process).
    current = keras.backend.backend()
    others = [b for b in BACKENDS if b != current and _importable(b)]
    return [current] + others


def _importable(backend):
    import importlib.util

    return importlib.util.find_spec(backend) is not None


@pytest.mark.slow  # a fresh interpreter per backend: 10-30 s each on 2 busy cores
@pytest.mark.parametrize("backend", _backends())
def test_importing_the_package_changes_nothing_in_the_process(backend):
    script = IMPORT_SCRIPT.replace("SUBPACKAGES", repr(SUBPACKAGES))
    result = subprocess.run([sys.executable, "-c", script], env=_clean_env(backend),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    report = json.loads(line[len("RESULT "):])
    ours = [write for write in report["env_writes"]
            if write[2].startswith(report["package_dir"] + os.sep)]
    assert ours == [], f"the import set environment variables: {ours}"
    # Whatever did change was written by a dependency (Keras, TensorFlow, JAX) on its own import.
    written_by_others = {key for key, _, _ in report["env_writes"]}
    assert set(report["env_changed"]) <= written_by_others, report
    assert report["redirects_of_fd2"] == [], "the import redirected file descriptor 2"
    assert report["same_fd2"] and report["same_sys_stderr"], report
    assert "MARKER written to fd 2 after the import" in result.stderr.splitlines()


def test_startup_lines_are_recognised_and_nothing_else():
    for line in STARTUP_LINES:
        assert _startup.is_startup_noise(line + "\n"), line
    for line in ("Traceback (most recent call last):",
                 "E0000 00:00:1796024641.1   1 cuda_platform.cc:52] failed call to cuInit",
                 "ImportError: cannot import name 'x'", "[demo] Fashion-MNIST: ...", ""):
        assert not _startup.is_startup_noise(line), line


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: 10-30 s on 2 busy cores
def test_quiet_console_keeps_tensorflows_startup_lines_off_the_console():
    # `_startup` loaded on its own, as the first thing a program does: importing it through the
    # package would import Keras (and, on the tensorflow backend, TensorFlow) first.
    code = (
        "import importlib.util, sys\n"
        "sys.modules.setdefault('triton', None)\n"
        f"spec = importlib.util.spec_from_file_location('startup', {_startup.__file__!r})\n"
        "startup = importlib.util.module_from_spec(spec); spec.loader.exec_module(startup)\n"
        "startup.quiet_console()\n"
        "import keras_spectralkd, keras_spectralkd.data, tensorflow as tf\n"
        "tf.config.list_physical_devices()\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=_clean_env(keras.backend.backend()),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
    noise = [line for line in result.stderr.splitlines()
             if _startup.is_startup_noise(line) or "cuInit" in line or "cuda" in line.lower()]
    assert noise == [], noise


def test_quiet_import_writes_back_every_other_line(tmp_path, monkeypatch, capfd):
    name = "_startup_probe_module"
    (tmp_path / f"{name}.py").write_text(
        "import os\n"
        f"os.write(2, {(STARTUP_LINES[1] + chr(10)).encode()!r})\n"
        "os.write(2, b'a real error\\n')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    _startup.quiet_import(name)
    monkeypatch.delitem(sys.modules, name)
    err = capfd.readouterr().err
    assert "a real error\n" in err and STARTUP_LINES[1] not in err


def test_quiet_console_keeps_the_users_log_level(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    _startup.quiet_console()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_every_tool_quiets_the_console_before_its_work(monkeypatch):
    from keras_spectralkd.tools import cli

    calls = []
    monkeypatch.setattr(_startup, "quiet_console", lambda: calls.append("quiet"))
    status = cli.run(cli.parser("probe", "a probe"), lambda args: calls.append("body"), [])
    assert status == 0 and calls == ["quiet", "body"]
