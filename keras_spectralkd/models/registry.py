"""Model names (timm's) -> constructors: `create("cait_s24_224")` builds one with random weights.

Each family module registers its presets with `register(name, cls, **defaults)` at import time.
`keras_spectralkd.models.create` (loader.py) builds through this and loads weights too.
"""

_REGISTRY = {}


def register(name, cls, family, **defaults):
    """Registers preset `name`: `cls(**defaults)`; `family` selects the timm weight converter."""
    if name in _REGISTRY:
        raise ValueError(f"Model name {name!r} is already registered.")
    _REGISTRY[name] = (cls, family, dict(defaults))


def list_models():
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def model_family(name):
    """`"vit"`, `"cait"` or `"swin"` for a registered name."""
    return _lookup(name)[1]


def model_class(name):
    """The backbone class that builds `name` (e.g. `CaiT` for "cait_s24_224")."""
    return _lookup(name)[0]


def model_defaults(name):
    """The constructor arguments of preset `name` (a copy)."""
    return dict(_lookup(name)[2])


def _lookup(name):
    if name not in _REGISTRY:
        raise ValueError(
            f"Unknown model name {name!r}; expected one of: {', '.join(list_models())}."
        )
    return _REGISTRY[name]


def create(name, num_classes=1000, image_size=None, drop_path_rate=0.0, dtype=None, **overrides):
    """Builds model `name` (a timm name, e.g. `deit_tiny_patch16_224`) with random weights.

    Args:
        name: a registered model name (see `list_models()`).
        num_classes: size of the classification head (0 or None: no head, pooled features out).
        image_size: input side in pixels; defaults to the preset's (224).
        drop_path_rate: stochastic-depth rate, linearly increasing over depth as in timm.
        dtype: a dtype policy name (e.g. "mixed_bfloat16") or None for the global policy.
        **overrides: any other constructor argument of the family (depth, embed_dim, num_heads,
            patch_size, window_size, ...), for small custom models.
    """
    cls, _, defaults = _lookup(name)
    config = dict(defaults)
    config.update(num_classes=num_classes, drop_path_rate=drop_path_rate)
    if image_size is not None:
        config["image_size"] = image_size
    if dtype is not None:
        config["dtype"] = dtype
    config.update(overrides)
    config.setdefault("name", name)
    try:
        return cls(**config)
    except TypeError as error:
        raise TypeError(f"create({name!r}, ...): {error}") from error
