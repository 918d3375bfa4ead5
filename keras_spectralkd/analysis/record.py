"""The `Profile` record: per-unit spectral statistics of one model, and its JSON and CSV forms.

What the numbers mean is in `keras_spectralkd.analysis.profile` (and SPEC.md section 5); this
module only holds, checks, derives views from and (de)serialises them. JSON and CSV keep every
float exactly (they are written with `repr`, which round-trips).
"""

import csv
import dataclasses
import io
import json
import os

import numpy as np

from keras_spectralkd.analysis.statistics import DEFAULT_ENTROPY_BINS

_FORMAT = "keras_spectralkd.profile/1"
# The CSV columns in order (see `Profile.to_csv`).
_CSV_COLUMNS = [
    "unit", "relative_depth", "num_channels", "grid_h", "grid_w", "intensity", "entropy",
    "magnitude", "entropy_min", "entropy_max", "spectrum",
]


@dataclasses.dataclass
class Profile:
    """Per-unit spectral statistics of one model over a set of images.

    Attributes:
        model_name: a label for the model (its name by default).
        depth: the model's total number of units (blocks or stages); with `units` it gives each
            unit's relative depth, also when only a subset was profiled.
        units: the 0-based unit indices profiled, in order.
        num_channels: C of each unit's map.
        grids: (h, w) of each unit's map.
        spectra: per unit, the channel spectrum S[k], k = 0..C-1, a float64 array of length C.
        intensity: (num_units,) L(X) = mean_k S[k].
        entropy: (num_units,) mean per-token channel entropy in bits, or None if not computed.
        magnitude: (num_units,) mean |X|.
        num_images: how many images were analysed.
        entropy_bins: histogram bins of the entropy.
        entropy_ranges: per unit, the (min, max) histogram range used (None if no entropy).
        layer_names: per unit, the layer it was read from, for a model profiled by layer names
            (`profile_model(layer_names=...)`; units are then positions 0..len-1 in that list),
            else None (units are a backbone's unit indices).
    """

    model_name: str
    depth: int
    units: list
    num_channels: list
    grids: list
    spectra: list
    intensity: np.ndarray
    entropy: np.ndarray | None
    magnitude: np.ndarray
    num_images: int
    entropy_bins: int = DEFAULT_ENTROPY_BINS
    entropy_ranges: list | None = None
    layer_names: list | None = None

    def __post_init__(self):
        self.units = [int(u) for u in self.units]
        self.num_channels = [int(c) for c in self.num_channels]
        self.grids = [tuple(int(v) for v in g) for g in self.grids]
        self.spectra = [np.asarray(s, dtype=np.float64) for s in self.spectra]
        self.intensity = np.asarray(self.intensity, dtype=np.float64)
        self.magnitude = np.asarray(self.magnitude, dtype=np.float64)
        if self.entropy is not None:
            self.entropy = np.asarray(self.entropy, dtype=np.float64)
        if self.entropy_ranges is not None:
            self.entropy_ranges = [tuple(float(v) for v in r) for r in self.entropy_ranges]
        if self.layer_names is not None:
            self.layer_names = [str(name) for name in self.layer_names]
        n = len(self.units)
        per_unit = ("num_channels", "grids", "spectra", "intensity", "magnitude", "entropy",
                    "entropy_ranges", "layer_names")
        lengths = {
            name: len(getattr(self, name))
            for name in per_unit
            if getattr(self, name) is not None  # entropy and its ranges are optional
        }
        wrong = {k: v for k, v in lengths.items() if v != n}
        if wrong:
            raise ValueError(
                f"Profile of {n} units (units={self.units}) has fields of other lengths: {wrong}."
            )
        for unit in self.units:
            if not 0 <= unit < self.depth:
                raise ValueError(
                    f"Unit {unit} is outside 0..{self.depth - 1} (depth={self.depth})."
                )
        for unit, channels, spectrum in zip(self.units, self.num_channels, self.spectra):
            if spectrum.shape != (channels,):
                raise ValueError(
                    f"Unit {unit}: spectrum has shape {spectrum.shape}, expected ({channels},)."
                )

    def __len__(self):
        return len(self.units)

    def unit_of(self, unit_or_name):
        """The unit index of a unit index or, for a profile by layer names, of a layer name."""
        if isinstance(unit_or_name, str):
            if self.layer_names is None or unit_or_name not in self.layer_names:
                known = "none (profiled by unit index)" if self.layer_names is None else (
                    ", ".join(self.layer_names))
                raise ValueError(
                    f"{unit_or_name!r} is not a layer of the profile of {self.model_name!r}; "
                    f"its layers: {known}."
                )
            return self.units[self.layer_names.index(unit_or_name)]
        return int(unit_or_name)

    # === Derived views ===
    @property
    def relative_depth(self):
        """(num_units,) position of each unit in [0, 1]: unit / (depth - 1); first 0, last 1.

        Profiles of different depths are aligned on this axis (first with first, last with last).
        """
        if self.depth == 1:
            return np.zeros(len(self.units))
        return np.asarray(self.units, dtype=np.float64) / (self.depth - 1)

    def normalized_frequency(self, position):
        """`fftfreq(C)[:C//2]` of the unit at `position` (0..len-1): cycles/channel, [0, 0.5)."""
        channels = self.num_channels[position]
        return np.fft.fftfreq(channels)[: channels // 2]

    def half_spectrum(self, position):
        """S[k], k = 0..C//2-1, of the unit at `position`: the layer-wise spectrum (SPEC.md 5).

        The channel signal is real, so S is symmetric (S[k] = S[C-k]) and the first half carries
        everything.
        """
        channels = self.num_channels[position]
        return self.spectra[position][: channels // 2]

    # === Serialisation ===
    def to_dict(self):
        """A JSON-ready dict (floats kept exactly: json writes repr, which round-trips)."""
        return {
            "format": _FORMAT,
            "model_name": self.model_name,
            "depth": int(self.depth),
            "num_images": int(self.num_images),
            "entropy_bins": int(self.entropy_bins),
            "layer_names": None if self.layer_names is None else list(self.layer_names),
            "units": [
                {
                    "unit": unit,
                    "relative_depth": float(rel),
                    "num_channels": channels,
                    "grid": list(grid),
                    "intensity": float(self.intensity[i]),
                    "entropy": None if self.entropy is None else float(self.entropy[i]),
                    "magnitude": float(self.magnitude[i]),
                    "entropy_range": (
                        None if self.entropy_ranges is None else list(self.entropy_ranges[i])
                    ),
                    "spectrum": [float(v) for v in self.spectra[i]],
                }
                for i, (unit, rel, channels, grid) in enumerate(
                    zip(self.units, self.relative_depth, self.num_channels, self.grids)
                )
            ],
        }

    @classmethod
    def from_dict(cls, data):
        if data.get("format") != _FORMAT:
            raise ValueError(
                f"Not a keras_spectralkd profile: format={data.get('format')!r}, "
                f"expected {_FORMAT!r}."
            )
        rows = data["units"]
        has_entropy = all(row["entropy"] is not None for row in rows) and bool(rows)
        has_ranges = all(row.get("entropy_range") is not None for row in rows) and bool(rows)
        return cls(
            model_name=data["model_name"],
            depth=data["depth"],
            units=[row["unit"] for row in rows],
            num_channels=[row["num_channels"] for row in rows],
            grids=[row["grid"] for row in rows],
            spectra=[row["spectrum"] for row in rows],
            intensity=[row["intensity"] for row in rows],
            entropy=[row["entropy"] for row in rows] if has_entropy else None,
            magnitude=[row["magnitude"] for row in rows],
            num_images=data["num_images"],
            entropy_bins=data["entropy_bins"],
            entropy_ranges=[row["entropy_range"] for row in rows] if has_ranges else None,
            layer_names=data.get("layer_names"),
        )

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    def to_csv(self):
        """One row per unit; the first line is a `#` comment holding the model-level fields as JSON.

        Columns: unit, relative_depth, num_channels, grid_h, grid_w, intensity, entropy (empty if
        not computed), magnitude, entropy_min, entropy_max, spectrum (the C values of S,
        space-separated). Readable with `pandas.read_csv(path, comment="#")`.
        """
        header = self.to_dict()  # the model-level fields, in `to_dict`'s order
        rows = header.pop("units")
        buffer = io.StringIO()
        buffer.write("# " + json.dumps(header) + "\n")
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(_CSV_COLUMNS)
        for row in rows:
            limits = row["entropy_range"] or ("", "")
            writer.writerow(
                [
                    row["unit"],
                    repr(row["relative_depth"]),
                    row["num_channels"],
                    row["grid"][0],
                    row["grid"][1],
                    repr(row["intensity"]),
                    "" if row["entropy"] is None else repr(row["entropy"]),
                    repr(row["magnitude"]),
                    *(repr(v) if v != "" else "" for v in limits),
                    " ".join(repr(v) for v in row["spectrum"]),
                ]
            )
        return buffer.getvalue()

    @classmethod
    def from_csv(cls, text):
        lines = text.splitlines()
        if not lines or not lines[0].startswith("#"):
            raise ValueError(
                "Not a keras_spectralkd profile CSV: the first line must be '# {...}'."
            )
        header = json.loads(lines[0][1:])
        reader = csv.DictReader(lines[1:])
        if reader.fieldnames != _CSV_COLUMNS:
            raise ValueError(
                f"Profile CSV columns are {reader.fieldnames}, expected {_CSV_COLUMNS}."
            )
        units = []
        for row in reader:
            has_range = row["entropy_min"] != ""
            units.append(
                {
                    "unit": int(row["unit"]),
                    "num_channels": int(row["num_channels"]),
                    "grid": [int(row["grid_h"]), int(row["grid_w"])],
                    "intensity": float(row["intensity"]),
                    "entropy": float(row["entropy"]) if row["entropy"] != "" else None,
                    "magnitude": float(row["magnitude"]),
                    "entropy_range": (
                        [float(row["entropy_min"]), float(row["entropy_max"])]
                        if has_range
                        else None
                    ),
                    "spectrum": [float(v) for v in row["spectrum"].split()],
                }
            )
        return cls.from_dict(dict(header, units=units))

    def save(self, path):
        """Writes `path`; the format follows the extension: `.json` or `.csv`."""
        path = os.fspath(path)
        if path.endswith(".json"):
            text = self.to_json()
        elif path.endswith(".csv"):
            text = self.to_csv()
        else:
            raise ValueError(f"Profile path {path!r} must end in .json or .csv.")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "w") as file:
            file.write(text)
        return path

    @classmethod
    def load(cls, path):
        """Reads a profile written by `save` (`.json` or `.csv`)."""
        path = os.fspath(path)
        with open(path) as file:
            text = file.read()
        if path.endswith(".json"):
            return cls.from_dict(json.loads(text))
        if path.endswith(".csv"):
            return cls.from_csv(text)
        raise ValueError(f"Profile path {path!r} must end in .json or .csv.")
