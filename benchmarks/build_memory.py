"""What building a teacher from checkpoint arrays costs in peak memory (issue 13 item 2).

Each way runs in a fresh process that first loads the same checkpoint arrays (a random
`cait_s24_224` state dict written once to an .npz by this script), then builds the model;
printed: the process's peak RSS (MB) before and after the build, and the increase:

- `timm`: `timm.create_model` + `load_state_dict` (the reference's cost);
- `plain`: the way `from_timm` built before the deferred build: `models.create` runs every
  initializer, then the converter assigns the checkpoint's arrays (each initial value is
  materialised, then overwritten);
- `from_timm`: `convert.from_timm` as shipped: the model is built inside a Keras
  `StatelessScope`, where variables are created WITHOUT running their initializers (Keras'
  deferred initialisation, `_keras_internals.deferred_variables`), and each variable is then
  initialised straight from its checkpoint array. No initial value is ever computed.
- `bf16_copy` / `bf16_copy_plain`: the bfloat16 copy `Distiller(teacher_dtype="bfloat16")`
  makes of an already built float32 teacher (`_low_precision.in_dtype`), built without initial
  values (as shipped) / the ordinary way (initializers run, then the cast weights assigned).

Run:

    python benchmarks/build_memory.py                # every way, torch backend
    KERAS_BACKEND=jax python benchmarks/build_memory.py --ways plain,from_timm
    python benchmarks/build_memory.py --ways bf16_copy_plain,bf16_copy
    python benchmarks/build_memory.py --root /path/to/older/checkout      # "before"
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "cait_s24_224"


def peak_mb():
    """VmHWM: this process's peak RSS (`ru_maxrss` would carry the parent's over)."""
    return _status_mb("VmHWM:")


def current_mb():
    return _status_mb("VmRSS:")


def _status_mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def write_checkpoint(path):
    import numpy as np
    import timm

    model = timm.create_model(NAME, pretrained=False)
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})


def build_plain(name, state):
    """`from_timm` before the deferred build: every initializer runs, then the arrays are
    assigned (the same converter and strict checks)."""
    from keras_spectralkd.convert import weight_map as convert
    from keras_spectralkd.models import registry

    model = registry.create(name, num_classes=convert.infer_num_classes(state))
    weights = convert.WeightMap(model, state)
    convert.converter_for(registry.model_family(name))(weights, model)
    return weights.finish()


def measure(way, checkpoint):
    import numpy as np

    if way == "timm":
        import timm
        import torch
    else:
        import keras

        from keras_spectralkd.convert import from_timm

        # The backend's runtime starts at its first op (JAX's CPU client: ~50 MB), which every
        # run pays once whatever it builds: started here, outside the build's count, as torch's
        # is for timm.
        keras.ops.convert_to_numpy(keras.ops.ones((2, 2)) + 1)
    state = dict(np.load(checkpoint))
    if way.startswith("bf16_copy"):  # the float32 teacher exists already; its copy is measured
        from keras_spectralkd import _keras_internals, _low_precision

        teacher = from_timm(NAME, state)  # `state` stays: its freed memory would be reused
        if way == "bf16_copy_plain":  # as before: the copy's initializers run, then assign
            _keras_internals._keras_deferred_initialization = lambda: None
    before, before_now = peak_mb(), current_mb()
    if way == "timm":
        model = timm.create_model(NAME, pretrained=False)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    elif way == "from_timm":
        model = from_timm(NAME, state)
    elif way.startswith("bf16_copy"):
        model = _low_precision.in_dtype(teacher, "bfloat16")
    else:
        model = build_plain(NAME, state)
    after, after_now = peak_mb(), current_mb()
    del model
    return {"way": way, "peak_before": before, "peak_after": after, "rss_before": before_now,
            "rss_after": after_now}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ways", default="timm,plain,from_timm")
    parser.add_argument("--checkpoint", default="/tmp/spectralkd_cait_s24_random.npz")
    parser.add_argument("--root", default=ROOT,
                        help="checkout whose keras_spectralkd is measured (e.g. an older commit "
                             "for a before/after table)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, args.root)
        print(json.dumps(measure(args.child, args.checkpoint)), flush=True)
        return
    if not os.path.exists(args.checkpoint):
        write_checkpoint(args.checkpoint)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="33554432",
               MALLOC_TRIM_THRESHOLD_="4294967296", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env.setdefault("KERAS_BACKEND", "torch")
    print(f"{NAME} built from checkpoint arrays; Keras backend {env['KERAS_BACKEND']}; "
          f"package from {args.root}; MB")
    print("| way | peak RSS before | peak RSS after | peak increase | RSS increase |")
    print("|---|---|---|---|---|")
    for way in args.ways.split(","):
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", way,
             "--checkpoint", args.checkpoint, "--root", args.root],
            env=env, capture_output=True, text=True,
        )
        lines = [line for line in output.stdout.splitlines() if line.startswith("{")]
        if output.returncode or not lines:
            print(f"| {way} | failed: {output.stderr.strip().splitlines()[-1:]} | | | |")
            continue
        r = json.loads(lines[-1])
        print(f"| {way} | {r['peak_before']:.0f} | {r['peak_after']:.0f} "
              f"| {r['peak_after'] - r['peak_before']:.0f} "
              f"| {r['rss_after'] - r['rss_before']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
