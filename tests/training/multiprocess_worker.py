"""One process of the multi-process training test (test_multiprocess.py); run as a script.

Usage: python multiprocess_worker.py ROLE WORK_DIR, ROLE "single" or "worker". Trains the
deit_tiny recipe's "tiny" preset (DeiT <- CaiT, soft KD + spectral term) for two steps through
the recipes' runner (`runner.run`), on the image folder and teacher weights in WORK_DIR (the
"single" role writes them first). A "worker" takes its place in the cluster from TF_CONFIG
(TensorFlow) or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (JAX). Every process
writes its checkpoints under WORK_DIR/run-<role> (the runner's layout: a worker's in
`worker-<i>/`) and prints one REPORT line.
"""

import json
import os
import sys

role, work_dir = sys.argv[1], sys.argv[2]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "recipes"))

from keras_spectralkd.training import distribute  # noqa: E402

# Joining the cluster comes before any other TensorFlow or JAX work (the runner does it too;
# here it must precede writing the test data below).
process_index, num_processes = distribute.initialize_multi_process()

import keras  # noqa: E402
from recipe_helpers import load_script, write_image_folder  # noqa: E402

from keras_spectralkd import models  # noqa: E402
from keras_spectralkd.recipes import runner  # noqa: E402

recipe = load_script("deit_tiny").RECIPE
data_dir = os.path.join(work_dir, "images")
teacher_path = os.path.join(work_dir, "teacher.weights.h5")
preset = recipe.config("tiny")
if role == "single":
    write_image_folder(data_dir, train=6, val=2)  # 18 train images: 2 global batches of 8
    keras.utils.set_random_seed(1)
    teacher = models.create(preset.teacher, num_classes=3, image_size=preset.image_size,
                            **preset.teacher_overrides)
    teacher.save_weights(teacher_path)

config = recipe.config(
    "tiny",
    data_dir=data_dir,
    teacher_weights=teacher_path,
    output_dir=os.path.join(work_dir, f"run-{role}"),
    steps_per_epoch=2,
    save_every_steps=1,
    verbose=0,
)
summary = runner.run(recipe, config)
print("REPORT " + json.dumps({
    "role": role, "process_index": process_index, "num_processes": num_processes,
    "summary": {key: str(value) for key, value in summary.items()},
}), flush=True)
