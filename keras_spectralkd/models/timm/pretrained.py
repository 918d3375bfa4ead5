"""Pretrained teachers the timm way: `from_timm("cait_s24_224")` without a checkpoint file.

timm names its weights `architecture.tag` (`swin_small_patch4_window7_224.ms_in1k`; no tag means
timm's default tag). This module asks timm where a name's weights live (its `pretrained_cfg`:
a Hugging Face Hub repository, or a URL for older entries), looks in timm's own caches (the
Hugging Face cache, `HF_HUB_CACHE`, or torch hub's `checkpoints/` folder), downloads there only
when the host answers, and lets timm itself load the file, so timm's checkpoint filters apply
exactly as for a timm user. The result is a state dict for `convert.from_timm`.

Offline, `huggingface_hub` retries for about 25 s before giving up; we test the host first (a
3 s TCP connect, or `HF_HUB_OFFLINE=1`) and fail at once with `PretrainedWeightsUnavailable`,
whose one-line message names the file to download and where to put it.
"""

import os
import socket
import urllib.parse

from keras_spectralkd.models import registry

__all__ = [
    "PretrainedWeightsUnavailable",
    "split_name",
    "is_timm_pretrained_name",
    "locate",
    "fetch",
    "load_pretrained_state_dict",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".pth.tar", ".keras", ".h5")
CONNECT_TIMEOUT_S = 3.0
# What timm's `load_state_dict_from_hf` tries, in order, when the config names no file.
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


class PretrainedWeightsUnavailable(OSError):
    """timm's pretrained weights are neither cached on this machine nor downloadable now."""


# === Names ===
def split_name(name):
    """`"arch.tag"` -> `("arch", "tag")`; `"arch"` -> `("arch", None)`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"A timm model name must be a non-empty string; got {name!r}.")
    architecture, _, tag = name.partition(".")
    return architecture, tag or None


def is_timm_pretrained_name(value):
    """True when `value` reads as a timm name (`arch` or `arch.tag`) of one of our models
    rather than a file: no such file, no checkpoint suffix, no folder, a registered arch."""
    if not isinstance(value, str) or os.path.exists(value) or os.sep in value:
        return False
    if value.endswith(CHECKPOINT_SUFFIXES):
        return False
    return split_name(value)[0] in registry.list_models()


def _import_timm(name):
    try:
        import timm  # noqa: F401
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise ImportError(
            f"from_timm({name!r}) without a checkpoint asks timm for its pretrained weights, but "
            "timm is not installed: pip install timm, or pass a checkpoint file."
        ) from None
    return get_pretrained_cfg


def _pretrained_cfg(name):
    get_pretrained_cfg = _import_timm(name)
    import timm

    architecture, _ = split_name(name)
    registry.model_family(architecture)  # a clear error for names we cannot build
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is None:
        tags = timm.list_pretrained(f"{architecture}.*") or ["(none)"]
        raise ValueError(
            f"timm has no pretrained weights named {name!r}; expected one of: {', '.join(tags)}."
        )
    return cfg.to_dict()


# === Where the weights are ===
def locate(name):
    """Where timm would fetch `name`'s weights from and cache them; touches no network.

    Returns:
        dict with `source` ("hf-hub" or "url"), `urls` (download URLs to try, in order),
        `cached` (a local path or None) and `cache_hint` (where a copied file is found).
    """
    cfg = _pretrained_cfg(name)
    from timm.models._builder import _resolve_pretrained_source

    source, location = _resolve_pretrained_source(cfg)
    if source == "hf-hub":
        import huggingface_hub
        from huggingface_hub import constants

        repo_id, filenames = location, HF_FILENAMES
        if isinstance(location, tuple):
            repo_id, filename = location
            filenames = (filename,)
        repo_id, _, revision = repo_id.partition("@")
        revision = revision or "main"
        cached = None
        for filename in filenames:
            path = huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision)
            if isinstance(path, str) and os.path.isfile(path):
                cached = path
                break
        endpoint = constants.ENDPOINT.rstrip("/")
        folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"))
        return {
            "source": source,
            "repo_id": repo_id,
            "revision": revision,
            "filenames": filenames,
            "urls": [f"{endpoint}/{repo_id}/resolve/{revision}/{f}" for f in filenames],
            "cached": cached,
            "cache_hint": f"the Hugging Face cache folder {folder} (copy it from a machine where "
            f"`huggingface-cli download {repo_id} {filenames[0]}` ran)",
        }
    if source == "url":
        import torch.hub

        url = location
        path = os.path.join(
            torch.hub.get_dir(), "checkpoints", os.path.basename(urllib.parse.urlparse(url).path)
        )
        return {
            "source": source,
            "urls": [url],
            "cached": path if os.path.isfile(path) else None,
            "cache_hint": path,
        }
    raise ValueError(f"timm's config for {name!r} names no downloadable weights (source {source!r}).")


def _offline_reason(url):
    """None when the host of `url` accepts a TCP connection within CONNECT_TIMEOUT_S."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{parsed.hostname}:{port} cannot be reached ({error.__class__.__name__}: {error})"


def fetch(name):
    """The local path of `name`'s timm weights: from timm's cache, or downloaded into it.

    Raises:
        PretrainedWeightsUnavailable: not cached and the host is unreachable (at once).
        ValueError: `name` is not one of our models, or timm has no such pretrained tag.
        ImportError: timm is not installed.
    """
    where = locate(name)
    if where["cached"]:
        return where["cached"]
    reason = _offline_reason(where["urls"][0])
    if reason:
        raise PretrainedWeightsUnavailable(
            f"from_timm({name!r}): timm's pretrained weights are not cached on this machine and "
            f"cannot be downloaded ({reason}). Download {where['urls'][0]} and pass the file "
            f"(from_timm({split_name(name)[0]!r}, 'PATH'), --checkpoint=PATH or "
            f"--teacher_weights=PATH), or put it in {where['cache_hint']}."
        )
    if where["source"] == "url":
        from timm.models._hub import download_cached_file

        return download_cached_file(where["urls"][0], check_hash=False, progress=True)
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for filename in where["filenames"]:
        try:
            return hf_hub_download(where["repo_id"], filename, revision=where["revision"])
        except EntryNotFoundError:
            continue
    raise PretrainedWeightsUnavailable(
        f"from_timm({name!r}): {where['repo_id']} has none of {list(where['filenames'])}."
    )


def load_pretrained_state_dict(name):
    """timm's pretrained state dict for `name` (numpy arrays), as a timm user gets it.

    The file comes from `fetch`; timm itself loads it into its model
    (`pretrained_cfg_overlay=dict(file=...)`), so its checkpoint filters (old layouts, renamed
    keys) apply, and the model's `state_dict()` is returned.
    """
    path = fetch(name)
    import timm

    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))
    return {key: value.detach().cpu().numpy() for key, value in model.state_dict().items()}
