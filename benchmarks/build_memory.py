"""What building a teacher from checkpoint arrays costs in peak memory (issue 13 item 2).

Each way runs in a fresh process that first loads the same checkpoint arrays (a random
`cait_s24_224` state dict written once to an .npz by this script), then builds the model;
printed: the process's peak RSS (MB) before and after the build, and the increase:

- `timm`: `timm.create_model` + `load_state_dict` (the reference's cost);
- `from_timm`: ours as shipped: `models.create` runs every initializer, then the converter
  assigns the checkpoint's arrays (each initial value is materialised, then overwritten);
- `deferred`: the prototype: the model is built inside a Keras `StatelessScope`, where
  variables are created WITHOUT running their initializers (Keras' deferred initialisation),
  and each variable is then initialised straight from its checkpoint array (the converter's
  mapping, unchanged). No initial value is ever computed.

Run:

    python benchmarks/build_memory.py                # every way, torch backend
    KERAS_BACKEND=jax python benchmarks/build_memory.py --ways from_timm,deferred
"""

import argparse
import json
import os
import resource
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "cait_s24_224"


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def write_checkpoint(path):
    import numpy as np
    import timm

    model = timm.create_model(NAME, pretrained=False)
    np.savez(path, **{k: v.detach().numpy() for k, v in model.state_dict().items()})


def build_deferred(name, state):
    """The prototype: variables created without initial values, then set from `state`."""
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope

    from keras_spectralkd.convert import timm as convert
    from keras_spectralkd.convert import timm_cait, timm_swin, timm_vit  # noqa: F401
    from keras_spectralkd.models import registry

    # add_weight records each initializer and computes nothing; initialize_variables=False
    # keeps the scope's exit from running them all.
    with StatelessScope(initialize_variables=False):
        model = registry.create(name, num_classes=convert.infer_num_classes(state))
    weight_map = convert.WeightMap(model, state)
    convert._FAMILY_CONVERTERS[registry.model_family(name)](weight_map, model)
    # WeightMap.finish's checks, then initialisation from the arrays instead of assign().
    pending = global_state.get_global_attribute("uninitialized_variables") or []
    import keras
    import numpy as np

    for variable, value in weight_map._assigned.values():
        array = np.ascontiguousarray(value.astype(variable.dtype, copy=False))
        if keras.backend.backend() == "torch":  # keras' convert_to_tensor would copy it
            import torch

            array = torch.from_numpy(array)
        variable._initializer = lambda shape, dtype, array=array: array
    for variable in pending:
        variable._deferred_initialize()
    global_state.set_global_attribute("uninitialized_variables", [])
    return model


def measure(way, checkpoint):
    import numpy as np

    if way == "timm":
        import timm
        import torch
    else:
        import keras  # noqa: F401

        from keras_spectralkd.convert import from_timm
    state = dict(np.load(checkpoint))
    before, before_now = peak_mb(), current_mb()
    if way == "timm":
        model = timm.create_model(NAME, pretrained=False)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    elif way == "from_timm":
        model = from_timm(NAME, state)
    else:
        model = build_deferred(NAME, state)
    after, after_now = peak_mb(), current_mb()
    del model
    return {"way": way, "peak_before": before, "peak_after": after, "rss_before": before_now,
            "rss_after": after_now}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ways", default="timm,from_timm,deferred")
    parser.add_argument("--checkpoint", default="/tmp/spectralkd_cait_s24_random.npz")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, ROOT)
        print(json.dumps(measure(args.child, args.checkpoint)), flush=True)
        return
    if not os.path.exists(args.checkpoint):
        write_checkpoint(args.checkpoint)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="33554432",
               MALLOC_TRIM_THRESHOLD_="4294967296", TF_CPP_MIN_LOG_LEVEL="3",
               CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env.setdefault("KERAS_BACKEND", "torch")
    print(f"{NAME} built from checkpoint arrays; Keras backend {env['KERAS_BACKEND']}; MB")
    print("| way | peak RSS before | peak RSS after | peak increase | RSS increase |")
    print("|---|---|---|---|---|")
    for way in args.ways.split(","):
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", way,
             "--checkpoint", args.checkpoint],
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
