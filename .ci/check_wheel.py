"""CI step: the package installs from its WHEEL, beyond the checkout.

1. `python -m build` makes an sdist, then a wheel from that sdist (so the sdist is complete).
2. A fresh virtual environment (no system site-packages, so no editable install of the checkout
   leaks in) sees the already installed dependencies through a plain path entry; pip installs the
   wheel with `--no-index`: dependencies are resolved against what is installed, never downloaded
   (no resolver can pull another torch).
3. From a folder outside the checkout, the venv imports every module of the package from the venv,
   finds every data file the checkout tracks under keras_spectralkd/ (embedded demo data, licence
   texts), finds LICENSE in the wheel's metadata, and runs each console script with `--help`.

Prints one line per check; exits 1 on the first failure. Usage: python .ci/check_wheel.py
"""

import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {
    "spectralkd-analyze": "keras_spectralkd.tools.analyze",
    "spectralkd-convert": "keras_spectralkd.tools.convert_timm",
    "spectralkd-select-layers": "keras_spectralkd.tools.select_layers",
    "spectralkd-study": "keras_spectralkd.tools.study",
    "spectralkd-train": "keras_spectralkd.tools.train",
}


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        print(f"FAILED ({result.returncode}): {' '.join(command)}\n{result.stdout[-3000:]}"
              f"\n{result.stderr[-3000:]}")
        sys.exit(1)
    return result.stdout


def tracked_package_data():
    """Paths (relative to keras_spectralkd/) of every tracked non-Python file in the package."""
    listed = run(["git", "-C", ROOT, "ls-files", "keras_spectralkd"]).split()
    return sorted(
        os.path.relpath(path, "keras_spectralkd") for path in listed if not path.endswith(".py")
    )


def main():
    work = tempfile.mkdtemp(prefix="spectralkd_wheel_")
    try:
        dist = os.path.join(work, "dist")
        # --no-isolation: build with the installed setuptools instead of downloading one.
        run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT])
        wheels = glob.glob(os.path.join(dist, "*.whl"))
        sdists = glob.glob(os.path.join(dist, "*.tar.gz"))
        if len(wheels) != 1 or len(sdists) != 1:
            print(f"FAILED: expected one wheel and one sdist in {dist}: {os.listdir(dist)}")
            sys.exit(1)
        names = zipfile.ZipFile(wheels[0]).namelist()
        licences = [n for n in names if ".dist-info/licenses/" in n]
        if not any(n.endswith("/LICENSE") for n in licences):
            print(f"FAILED: no LICENSE in the wheel's .dist-info/licenses ({licences})")
            sys.exit(1)
        print(f"ok build: {os.path.basename(wheels[0])}, {os.path.basename(sdists[0])}; "
              f"licences {[n.split('/licenses/')[1] for n in licences]}")

        venv = os.path.join(work, "venv")
        run([sys.executable, "-m", "venv", venv])
        python = os.path.join(venv, "bin", "python")
        venv_site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
        # A plain path entry: the installed dependencies become importable, but .pth files there
        # (such as the checkout's editable install) are not run.
        with open(os.path.join(venv_site.strip(), "installed_stack.pth"), "w") as pth:
            pth.write(sysconfig.get_paths()["purelib"] + "\n")
        # --force-reinstall --no-deps: the checkout's own editable install is visible through the
        # path entry, and pip would call the requirement satisfied by it.
        run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--force-reinstall",
             wheels[0]])
        # Then the wheel's declared dependencies must be met by what is installed (no download).
        requirements = """
from importlib import metadata
from packaging.requirements import Requirement
unmet = []
for line in metadata.requires("keras-spectralkd"):
    requirement = Requirement(line)
    if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
        continue
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        version = None
    if version is None or not requirement.specifier.contains(version, prereleases=True):
        unmet.append(f"{line} (installed: {version})")
assert not unmet, f"unmet dependencies: {unmet}"
"""
        run([python, "-c", requirements])
        print("ok install: the wheel (--no-index); its dependencies met by the installed stack")

        outside = os.path.join(work, "elsewhere")
        os.makedirs(outside)
        env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
        env.pop("PYTHONPATH", None)
        data = tracked_package_data()
        check = f"""
import sys
sys.modules["triton"] = None
import importlib, os, pkgutil
import keras_spectralkd
root = os.path.dirname(keras_spectralkd.__file__)
assert root.startswith({venv!r}), root
modules = [m.name for m in pkgutil.walk_packages([root], "keras_spectralkd.")]
for name in modules:
    importlib.import_module(name)
missing = [p for p in {data!r} if not os.path.isfile(os.path.join(root, p))]
assert not missing, f"data files missing from the installed package: {{missing}}"
print(f"ok import: {{len(modules)}} modules from {{root}}; {{len({data!r})}} data files found")
"""
        print(run([python, "-c", check], cwd=outside, env=env).strip())
        for script, module in SCRIPTS.items():
            source = os.path.join(ROOT, *module.split(".")) + ".py"
            if not os.path.exists(source):
                # Declared ahead of the module (tools move into the package on other branches).
                print(f"SKIPPED script: {script} ({module} is not in this tree)")
                continue
            path = os.path.join(venv, "bin", script)
            if not os.path.exists(path):
                print(f"FAILED: console script {script} was not installed")
                sys.exit(1)
            run([path, "--help"], cwd=outside, env=env)
            print(f"ok script: {script} --help ({module}:main)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
