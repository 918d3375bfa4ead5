"""A training run's settings: `RunConfig` (every field typed, documented and checked), `Recipe`.

Every setting is written once, as a `RunConfig` field made with `setting(help, default, ...)`:
its annotation is its type, `choices` or `low`/`high` its valid values. The same table gives the
command line (`spectralkd-train --set name=value` or `--name=value`, `--help` lists every field
with its default), parses text into typed values (`parse_value`) and checks a whole config before
any data or model is touched (`RunConfig.check`), so a bad value is named, with what was
expected, before minutes of loading.
"""

import dataclasses
import json
import math

from keras_spectralkd.analysis.selection import parse_layer_pairs
from keras_spectralkd.distiller import MODES, normalize_layer_pairs
from keras_spectralkd.training import ema as ema_lib
from keras_spectralkd.training import optimizer as optim
from keras_spectralkd.training import schedules
from keras_spectralkd.training.distribute import STRATEGIES

DATASETS = ("imagenet", "fashion_mnist")
PRECISION_CHOICES = ("auto",) + optim.PRECISIONS
VERBOSITY = ("auto", 0, 1, 2)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def setting(help, default=dataclasses.MISSING, choices=None, low=None, high=None,
            low_open=False, high_open=False, **field_kwargs):
    """A `RunConfig` field: `help` for `--help`, valid values as `choices` or a [low, high]
    range (`*_open`: the bound itself is excluded). None is valid where it is the default."""
    metadata = {"help": help, "low": low, "high": high, "low_open": low_open,
                "high_open": high_open}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=metadata, **field_kwargs)


def _dict_setting(help):
    return setting(help, default_factory=dict)


@dataclasses.dataclass
class RunConfig:
    """Everything one training run needs; a recipe's preset fills it, `--set` overrides it.

    Model fields take timm names (`keras_spectralkd.models.list_models()`); `*_overrides` are
    extra `models.create` arguments (small models). `batch_size` is GLOBAL (over all replicas);
    the peak learning rate is `lr * batch_size / lr_batch_size` (DeiT's linear rule).
    """

    student: str = setting("The student model (a registered timm name).")
    teacher: str = setting("The teacher model (a registered timm name, or keras: the whole "
                           "Keras model saved in teacher_weights, a .keras file); unused with "
                           "mode=none.", None)
    layer_pairs: list = setting(
        "student:teacher unit pairs aligned by the spectral loss, e.g. '0:0,1:1,6:18' "
        "(spectralkd-analyze prints a suggestion); a side may name layers of a functional "
        "model, e.g. '3:conv2_block1_out'; '' for none.", default_factory=list)
    spectral_weight: float = setting("w_fft, the spectral term's weight (SPEC.md 4).", 0.2,
                                     low=0.0)
    epochs: int = setting("Training epochs.", 1, low=1)
    warmup_epochs: int = setting("Linear warmup epochs.", 0, low=0)
    batch_size: int = setting("GLOBAL batch size (all devices).", 512, low=1)
    eval_batch_size: int = setting("Validation batch size (default: batch_size).", None, low=1)
    lr: float = setting("Peak learning rate for a global batch of lr_batch_size.",
                        schedules.REFERENCE_BASE_LR, low=0.0, low_open=True)
    lr_batch_size: int = setting("The global batch size `lr` is given for; the rate scales "
                                 "linearly with batch_size / lr_batch_size.",
                                 schedules.REFERENCE_BATCH_SIZE, low=1)
    min_lr: float = setting("The cosine schedule's floor.", schedules.MIN_LR, low=0.0)
    warmup_lr: float = setting("The learning rate warmup starts from.", schedules.WARMUP_INIT_LR,
                               low=0.0)
    weight_decay: float = setting("AdamW's decoupled weight decay (none on norms, biases, "
                                  "tokens and position embeddings, as timm).", 0.05, low=0.0)
    mode: str = setting("The Distiller's mode: soft/hard: CE + logit KD + spectral; fft: CE + "
                        "spectral; none: CE only.", "soft", choices=MODES)
    alpha: float = setting("Weight of the logit KD term (CE gets 1 - alpha).", 0.9, low=0.0,
                           high=1.0)
    beta: float = setting("Global weight of the spectral term.", 1.0, low=0.0)
    temperature: float = setting("Soft-KD temperature.", 1.0, low=0.0, low_open=True)
    label_smoothing: float = setting("Label smoothing of the CE term.", 0.1, low=0.0, high=1.0,
                                     high_open=True)
    drop_path_rate: float = setting("The student's stochastic depth rate.", 0.0, low=0.0,
                                    high=1.0, high_open=True)
    ema_decay: float = setting("EMA decay of the student per optimizer step (0: no EMA).",
                               ema_lib.EMA_DECAY, low=0.0, high=1.0, high_open=True)
    dataset: str = setting("imagenet (folders or TFDS under data_dir) or fashion_mnist (the "
                           "full set when installed, else the subset shipped with the package).",
                           "imagenet", choices=DATASETS)
    image_size: int = setting("Input side in pixels.", 224, low=1)
    train_size: int = setting("fashion_mnist: training images (a fixed class-balanced subset; "
                              "default: all).", None, low=1)
    validation_size: int = setting("fashion_mnist: test images (default: all).", None, low=1)
    augment: bool = setting("fashion_mnist: random shift + horizontal flip.", False)
    repeated_augmentation: int = setting("imagenet: DeiT's repeated augmentation factor "
                                         "(1: off).", 3, low=1)
    rand_augment: bool = setting("imagenet: RandAugment rand-m9-mstd0.5-inc1.", True)
    random_erasing: float = setting("imagenet: random erasing probability.", 0.25, low=0.0,
                                    high=1.0)
    mixup: float = setting("imagenet: MixUp alpha (0: off, as the paper).", 0.0, low=0.0)
    cutmix: float = setting("imagenet: CutMix alpha (0: off, as the paper).", 0.0, low=0.0)
    precision: str = setting("'auto': mixed_bfloat16 on GPUs; on a CPU with bf16 matmul units "
                             "(AVX512-BF16, AMX) the frozen teacher in bfloat16, the student in "
                             "mixed_bfloat16 (TensorFlow: without XLA, when jit_compile=auto); "
                             "float32 on other CPUs (keras_spectralkd.precision)"
                             ". mixed_float16 uses loss scaling. The spectral loss is float32 in "
                             "every case.",
                             "auto", choices=PRECISION_CHOICES)
    student_overrides: dict = _dict_setting(
        "Extra models.create arguments of the student, as JSON: '{\"depth\": 4}'.")
    teacher_overrides: dict = _dict_setting(
        "Extra models.create arguments of the teacher, as JSON.")
    teacher_weights: str = setting(
        "Teacher weights: a .keras or .weights.h5 file, a timm checkpoint (.pth/.safetensors/"
        ".bin, converted on the fly), or a timm name[.tag] (e.g. cait_s24_224.fb_dist_in1k: "
        "timm's pretrained weights from its cache, downloaded if online). A resumed run reuses "
        "the checkpoint's when not given.", None)
    data_dir: str = setting("imagenet: an image-folder root (train/, val/) or a TFDS data dir; "
                            "fashion_mnist: a folder with the idx files (optional).", None)
    data_format: str = setting("imagenet: how data_dir is laid out ('auto': folder if it has "
                               "train/).", "auto", choices=("auto", "folder", "tfds"))
    tfds_manual_dir: str = setting(
        "imagenet: folder with ILSVRC2012_img_{train,val}.tar, to prepare TFDS once.", None)
    output_dir: str = setting("Where checkpoints, logs, TensorBoard events and weights go; a run "
                              "restarted with the same output dir resumes.", None)
    steps_per_epoch: int = setting(
        "Limit the optimizer steps per epoch (default: one pass over the data).", None, low=1)
    save_every_steps: int = setting("Also checkpoint every N steps (default: at epoch ends).",
                                    None, low=1)
    seed: int = setting("Seed of initialisation, shuffling, augmentation.", 0, low=0)
    deterministic: bool = setting("imagenet: run the per-image transform on one thread; the "
                                  "default parallel map gives the same batches (docs/data.md).",
                                  False)
    tensorboard: bool = setting(
        "Write TensorBoard logs (with SpectralTensorBoard's spectral panels).", True)
    validation_every: int = setting("Evaluate on the validation set every N epochs (and always "
                                    "after the last): N > 1 saves time in short runs.", 1, low=1)
    cache_teacher: bool = setting(
        "fashion_mnist without augment: compute the frozen teacher's logits and paired maps "
        "once per training image and feed them to the Distiller instead of a teacher forward "
        "per step (the same loss; keras_spectralkd.teacher_cache).", False)
    spectral_every_n_epochs: int = setting("Spectral TensorBoard panels every N epochs.", 1,
                                           low=1)
    strategy: str = setting("Data parallelism (see keras_spectralkd.training.distribute).",
                            "auto", choices=STRATEGIES)
    jit_compile: object = setting("Compile the step with XLA: auto, true or false.", "auto",
                                  choices=("auto", True, False))
    verbose: object = setting("fit's verbosity: auto (a progress bar on a terminal, one line "
                              "per epoch otherwise), 0, 1 or 2.", "auto", choices=VERBOSITY)

    def to_dict(self):
        return dataclasses.asdict(self)

    def check(self):
        """Checks every field; raises ValueError naming the first bad one. Returns self."""
        for field in dataclasses.fields(self):
            _check_field(field, getattr(self, field.name))
        pairs = normalize_layer_pairs(self.layer_pairs)
        if self.mode != "none" and not self.teacher:
            raise ValueError(f"mode={self.mode!r} needs a teacher model; set teacher=<timm name>.")
        if self.mode == "none":
            pairs = []  # no teacher, no pairs: a recipe's pairs do not stop a control run
        if self.mode == "fft" and not pairs:
            raise ValueError("mode='fft' is CE + the spectral term, which needs layer_pairs.")
        if self.cache_teacher and (self.dataset != "fashion_mnist" or self.augment):
            raise ValueError(
                f"cache_teacher=true needs the same image at every visit (dataset=fashion_mnist, "
                f"augment=false); got dataset={self.dataset!r}, augment={self.augment!r}: "
                "a cached teacher output would not match an augmented image.")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs={self.warmup_epochs} must be at most "
                             f"epochs={self.epochs}.")
        return dataclasses.replace(self, layer_pairs=pairs)

    def label(self):
        """The run's method in the Distiller's words: its mode, '+spectral' with layer pairs
        under a logit-KD mode (SpectralKD itself is 'soft+spectral')."""
        spectral = self.layer_pairs and self.beta and self.spectral_weight
        if self.mode in ("soft", "hard") and spectral:
            return f"{self.mode}+spectral"
        return self.mode


def fields():
    return dataclasses.fields(RunConfig)


def field(name):
    """The `RunConfig` field `name`; ValueError listing the valid names otherwise."""
    for candidate in fields():
        if candidate.name == name:
            return candidate
    raise ValueError(f"Unknown setting {name!r}; valid settings: "
                     f"{', '.join(f.name for f in fields())}.")


def _type_name(field_):
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            list: "student:teacher pairs such as 0:0,3:5", dict: "a JSON object"}.get(
                field_.type, "a value")


def _expected(field_):
    meta = field_.metadata
    if "choices" in meta:
        return "one of " + ", ".join(_show(c) for c in meta["choices"])
    low, high = meta["low"], meta["high"]
    if low is None and high is None:
        return _type_name(field_)
    left = "(" if meta["low_open"] else "["
    right = ")" if meta["high_open"] else "]"
    if high is None:
        return f"{_type_name(field_)} {'>' if meta['low_open'] else '>='} {_show(low)}"
    return f"{_type_name(field_)} in {left}{_show(low)}, {_show(high)}{right}"


def _show(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _check_field(field_, value):
    meta = field_.metadata
    if value is None and field_.default is None:
        return
    bad = ValueError(f"{field_.name}={value!r} is not valid; expected {_expected(field_)}.")
    if "choices" in meta:
        if not any(value == c and type(value) is type(c) for c in meta["choices"]):
            raise bad
        return
    if field_.type is bool and not isinstance(value, bool):
        raise bad
    if field_.type in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if field_.type is int and int(value) != value:
            raise bad
        if not math.isfinite(value):
            raise bad
        low, high = meta["low"], meta["high"]
        if low is not None and (value < low or (meta["low_open"] and value == low)):
            raise bad
        if high is not None and (value > high or (meta["high_open"] and value == high)):
            raise bad
    if field_.type is str and not isinstance(value, str):
        raise bad
    if field_.type is dict and not isinstance(value, dict):
        raise bad
    if field_.type is list and not isinstance(value, (list, tuple)):
        raise bad


def parse_value(name, text):
    """`text` (from a command line) as the value of setting `name`, typed and checked."""
    field_ = field(name)
    text = text.strip()
    if field_.default is None and text.lower() == "none":
        return None
    if "choices" in field_.metadata:
        for choice in field_.metadata["choices"]:
            if text.lower() == _show(choice).lower():
                value = choice
                break
        else:
            value = int(text) if text.isdigit() else text
    elif field_.type is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(f"{name}={text!r} is not valid; expected true or false.")
        value = text.lower() in _TRUE
    elif field_.type in (int, float):
        try:
            value = float(text) if field_.type is float else int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not valid; expected {_expected(field_)}.") from None
    elif field_.type is list:
        value = parse_pairs(text) if text else []
    elif field_.type is dict:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name}={text!r} is not valid JSON ({error.msg}); expected an "
                             "object like '{\"depth\": 4}'.") from None
    else:
        value = text
    _check_field(field_, value)
    return value


def parse_pairs(text):
    """`"0:0,3:5"` -> `[(0, 0), (3, 5)]`; an item's side that is not a whole number is a layer
    name (`"3:conv2_block1_out"` -> `(3, "conv2_block1_out")`), checked by the Distiller.

    All-numeric text goes through `analysis.parse_layer_pairs` (its errors, docs/errors.md A1).
    """
    items = [item.strip().split(":") for item in text.split(",")]
    if not any(len(parts) == 2 and any(p.strip() and not p.strip().lstrip("-").isdigit()
                                       for p in parts) for parts in items):
        return parse_layer_pairs(text)
    pairs = []
    for parts in items:
        sides = [p.strip() for p in parts]
        if len(sides) != 2 or not all(sides):
            raise ValueError(
                f"Bad layer pair {':'.join(parts).strip()!r} in {text!r}; expected "
                "'student:teacher' with unit indices or layer names, e.g. '3:conv2_block1_out'."
            )
        pairs.append(tuple(int(p) if p.isdigit() else p for p in sides))
    return pairs


def describe_fields(defaults):
    """`--help`'s list: every field, its default in `defaults` (a RunConfig), what it is."""
    lines = []
    for field_ in fields():
        default = getattr(defaults, field_.name)
        if field_.type is list:
            default = ",".join(f"{s}:{t}" for s, t in default) or "''"
        elif field_.type is dict:
            default = json.dumps(default) if default else "{}"
        lines.append(f"  {field_.name} (default {_show(default)}; {_expected(field_)})\n"
                     f"      {field_.metadata['help']}")
    return "\n".join(lines)


@dataclasses.dataclass
class Recipe:
    """A named setting and its presets.

    Attributes:
        name: the recipe's name ("deit_tiny").
        description: one line for `--help`.
        paper: the `RunConfig` of the recipe's own numbers (the "paper" preset).
        presets: more presets, name -> dict of `RunConfig` fields replacing the paper's.
        teacher_source: how to obtain the teacher's weights (shown when they are missing).
    """

    name: str
    description: str
    paper: RunConfig
    presets: dict = dataclasses.field(default_factory=dict)
    teacher_source: str = ""

    def config(self, preset="paper", **changes):
        """The preset's config with `changes` applied (not checked: see `RunConfig.check`)."""
        if preset != "paper" and preset not in self.presets:
            raise ValueError(
                f"Unknown preset {preset!r} for recipe {self.name!r}; expected one of "
                f"{['paper'] + sorted(self.presets)}."
            )
        for name in changes:
            field(name)
        config = dataclasses.replace(self.paper)
        if preset != "paper":
            config = dataclasses.replace(config, **self.presets[preset])
        return dataclasses.replace(config, **changes)
