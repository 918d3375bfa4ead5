"""ImageNet-1k from an image-folder tree or from TFDS (`imagenet2012` with a manual dir).

Two sources, one result (`ImageData`, with DeiT's train and eval transforms):
- an image-folder tree, `root/train/<wnid>/*.JPEG` and `root/val/<wnid>/*.JPEG` (the layout of
  torchvision's `ImageFolder`, which the reference reads); classes are the sorted folder names,
  so labels match timm's ImageNet class order;
- TFDS `imagenet2012`, prepared once from the two ILSVRC2012 tars placed in a manual dir
  (TFDS cannot download ImageNet). TFDS' labels are the same sorted-wnid order.
Images stay encoded until the random crop, which decodes only the crop window of a JPEG.
"""

import os

import numpy as np
import tensorflow as tf

from keras_spectralkd.data import pipeline, transforms

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")

HOW_TO_GET_IMAGENET = (
    "Get ImageNet-1k (ILSVRC2012) from https://image-net.org (registration required), then "
    "either (a) extract it as an image-folder tree DATA_DIR/train/<wnid>/*.JPEG and "
    "DATA_DIR/val/<wnid>/*.JPEG (sort the validation images into wnid folders, e.g. with the "
    "widely used valprep.sh) and pass --data_dir=DATA_DIR, or (b) put ILSVRC2012_img_train.tar "
    "and ILSVRC2012_img_val.tar in a directory MANUAL and pass --data_format=tfds "
    "--tfds_manual_dir=MANUAL --data_dir=TFDS_DATA_DIR (prepared once, ~150 GB)."
)


# === Image-folder trees ===
def list_image_folder(root, split):
    """Lists `root/split/<class>/<image>`; returns (paths, labels, class_names), sorted.

    Raises:
        FileNotFoundError: `root/split` is missing, or holds no class folder with images.
    """
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"No {split!r} folder at {directory!r}: expected an image-folder tree "
            f"{root}/{split}/<class>/<image>. {HOW_TO_GET_IMAGENET}"
        )
    class_names = sorted(
        entry.name for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )
    paths, labels = [], []
    for label, name in enumerate(class_names):
        files = sorted(
            entry.path for entry in os.scandir(os.path.join(directory, name))
            if entry.is_file() and entry.name.lower().endswith(IMAGE_EXTENSIONS)
        )
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise FileNotFoundError(
            f"{directory!r} holds no images in class folders ({directory}/<class>/*.JPEG). "
            f"{HOW_TO_GET_IMAGENET}"
        )
    return paths, labels, class_names


def read_image_file(path, label):
    """`(path, label) -> (encoded bytes, label)`: the `load` step of folder pipelines."""
    return tf.io.read_file(path), label


def image_folder_examples(root, split, class_names=None):
    """((paths, labels) numpy arrays, count, class_names) for `root/split`; the pipelines
    read the files with `read_image_file` after shuffling the paths.

    `class_names`: the training classes, to check the split has the same ones.
    """
    paths, labels, names = list_image_folder(root, split)
    if class_names is not None and list(names) != list(class_names):
        raise ValueError(
            f"The class folders of {os.path.join(root, split)!r} ({len(names)}) differ from "
            f"the training ones ({len(class_names)}); both splits need the same classes."
        )
    return (np.asarray(paths), np.asarray(labels, np.int64)), len(paths), names


# === TFDS ===
def tfds_builder(data_dir, manual_dir=None, name="imagenet2012"):
    """The TFDS builder of `name`, prepared from `manual_dir` if it is not prepared yet."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=data_dir)
    if not _is_prepared(builder):
        config = tfds.download.DownloadConfig(manual_dir=manual_dir)
        try:
            # Fails at once (TFDS checks the manual dir first) when the tars are not there.
            builder.download_and_prepare(download_config=config)
        except (AssertionError, FileNotFoundError, OSError) as error:
            raise FileNotFoundError(
                f"TFDS dataset {name!r} is not prepared in {data_dir!r} and could not be "
                f"prepared from tfds_manual_dir={manual_dir!r} ({' '.join(str(error).split())})"
                f". {HOW_TO_GET_IMAGENET}"
            ) from error
    return builder


def _is_prepared(builder):
    is_prepared = getattr(builder, "is_prepared", None)
    if is_prepared is not None:
        return is_prepared()
    return tf.io.gfile.exists(os.path.join(builder.data_dir, "dataset_info.json"))


def tfds_examples(builder, split, *, shuffle_files=False, shuffle_seed=None):
    """(dataset of (encoded bytes, label), count) of one TFDS split, images left encoded."""
    import tensorflow_datasets as tfds

    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed)
    dataset = builder.as_dataset(
        split=split,
        shuffle_files=shuffle_files,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
    )
    dataset = dataset.map(lambda example: (example["image"], example["label"]))
    return dataset, _split_size(builder, split, dataset)


def _split_size(builder, split, dataset):
    try:
        return int(builder.info.splits[split].num_examples)
    except KeyError:  # no metadata (e.g. under tfds.testing.mock_data): count
        cardinality = int(dataset.cardinality())
        if cardinality >= 0:
            return cardinality
        return int(dataset.reduce(0, lambda count, _: count + 1))


# === The DeiT datasets ===
def imagenet_data(
    data_dir,
    *,
    batch_size,
    eval_batch_size=None,
    data_format="auto",
    tfds_manual_dir=None,
    image_size=224,
    train_transform=None,
    eval_transform=None,
    seed=0,
    repeated_augmentation=1,
    mixup_alpha=0.0,
    cutmix_alpha=0.0,
    deterministic=False,
    train_split=None,
    val_split=None,
):
    """ImageNet-1k with DeiT's transforms, as an `ImageData`.

    Args:
        data_dir: the image-folder root (with `train/` and `val/`) or the TFDS data dir.
        batch_size: the global training batch size.
        eval_batch_size: the validation batch size (default: `batch_size`).
        data_format: "folder", "tfds" or "auto" (a folder if `data_dir/train` exists).
        tfds_manual_dir: where the ILSVRC2012 tars are, to prepare TFDS the first time.
        image_size: training and eval resolution (224).
        train_transform, eval_transform: override DeiT's (`TrainTransform`/`EvalTransform`).
        seed: the run's seed (shuffles, augmentation).
        repeated_augmentation: DeiT's repeated augmentation factor (3 in the reference's DDP).
        mixup_alpha, cutmix_alpha: MixUp / CutMix on the training batches (`MixUpCutMix`);
            both 0 (the paper's setting) turns them off.
        deterministic: sequential per-image map (one thread); the parallel one (False) gives
            the same batches, faster.
        train_split, val_split: split names (default "train" and "val" for folders, "train"
            and "validation" for TFDS).
    Raises:
        FileNotFoundError: with instructions on how to get the data.
    """
    if data_dir is None or not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"ImageNet data dir {data_dir!r} does not exist. {HOW_TO_GET_IMAGENET}"
        )
    if data_format == "auto":
        data_format = "folder" if os.path.isdir(os.path.join(data_dir, "train")) else "tfds"
    if data_format not in ("folder", "tfds"):
        raise ValueError(f"data_format must be 'auto', 'folder' or 'tfds'; got {data_format!r}.")
    train_transform = train_transform or transforms.TrainTransform(image_size)
    eval_transform = eval_transform or transforms.EvalTransform(image_size)
    eval_batch_size = eval_batch_size or batch_size

    if data_format == "folder":
        train_split, val_split = train_split or "train", val_split or "val"
        train_examples, num_train, class_names = image_folder_examples(data_dir, train_split)
        val_examples, num_val, _ = image_folder_examples(data_dir, val_split, class_names)

        def examples_for_epoch(epoch):
            return train_examples

        load = read_image_file
        description = f"image folders {data_dir}/{{{train_split},{val_split}}}"
    else:
        train_split, val_split = train_split or "train", val_split or "validation"
        builder = tfds_builder(data_dir, tfds_manual_dir)
        val_examples, num_val = tfds_examples(builder, val_split)
        _, num_train = tfds_examples(builder, train_split)
        class_names = list(builder.info.features["label"].names)

        def examples_for_epoch(epoch):
            return tfds_examples(
                builder, train_split, shuffle_files=True,
                shuffle_seed=int(seed) * 1_000_003 + int(epoch),
            )[0]

        load = None
        description = f"TFDS imagenet2012 in {data_dir}"

    batch_transform = None
    if mixup_alpha > 0 or cutmix_alpha > 0:
        batch_transform = transforms.MixUpCutMix(
            len(class_names), mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha
        )

    def train(epoch, skip_batches=0):
        # Image folders shuffle all paths (as the reference's sampler); a full buffer of TFDS'
        # encoded JPEGs would hold ~140 GB, so TFDS shuffles its files and a 16k buffer (timm's
        # TFDS reader does the same).
        buffer = 16_384 if data_format == "tfds" else None
        return pipeline.train_pipeline(
            examples_for_epoch(epoch),
            train_transform,
            batch_size=batch_size,
            num_examples=num_train,
            epoch=epoch,
            seed=seed,
            skip_batches=skip_batches,
            shuffle_buffer=buffer,
            repeated_augmentation=repeated_augmentation,
            batch_transform=batch_transform,
            deterministic=deterministic,
            load=load,
        )

    return pipeline.ImageData(
        train=train,
        validation=pipeline.eval_pipeline(
            val_examples if isinstance(val_examples, tf.data.Dataset)
            else tf.data.Dataset.from_tensor_slices(val_examples),
            eval_transform, batch_size=eval_batch_size, load=load,
        ),
        num_classes=len(class_names),
        num_train_examples=num_train,
        num_validation_examples=num_val,
        batch_size=batch_size,
        steps_per_epoch=num_train // batch_size,
        class_names=class_names,
        description=description,
    )
