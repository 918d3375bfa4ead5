"""Figures of spectral profiles (matplotlib, PNG): what the SpectralKD paper looks at.

- `plot_intensity`: frequency intensity L(X) over relative depth, several models overlaid
  (teacher and student), the layer pairs marked and joined; `IntensityPlot` keeps that figure
  to show new values of the same units (redrawn every epoch without being rebuilt).
- `plot_layer_spectra`: every unit's layer-wise spectrum S[k] over normalised frequency, one
  curve per unit coloured by relative depth (one colorbar), one panel per model; units of
  different widths (Swin stages, CaiT blocks) share the axis.
- `plot_entropy_magnitude`: channel entropy and mean |X| over relative depth.
- `save_profile_figures`: all three as PNGs in a folder.

Every function returns a `matplotlib.figure.Figure` and, given `path`, also writes it. Figures
are built with the object-oriented API (`Figure`, not `pyplot`): no global state, no GUI
backend, nothing to close, safe in callbacks and on headless machines.
"""

import os

# matplotlib is imported inside the plotting functions only: `import keras_spectralkd.analysis`
# (and so the training code, the callbacks and the tools) does not pay for it or need it.
from keras_spectralkd.analysis.record import Profile

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies and in grey.
MODEL_COLORS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P")
_DPI = 200
_RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8}


def _as_list(profiles, labels):
    if isinstance(profiles, Profile):
        profiles = [profiles]
    profiles = list(profiles)
    if not profiles:
        raise ValueError("No profiles to plot.")
    for profile in profiles:
        if not isinstance(profile, Profile):
            raise ValueError(f"Expected Profile objects; got {type(profile).__name__}.")
    if labels is None:
        labels = [p.model_name for p in profiles]
    labels = list(labels)
    if len(labels) != len(profiles):
        raise ValueError(f"Got {len(labels)} labels for {len(profiles)} profiles.")
    return profiles, labels


def _widths(profile):
    low, high = min(profile.num_channels), max(profile.num_channels)
    return f"C={low}" if low == high else f"C={low}-{high}"


def _new_figure(width, height):
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    return figure


def _finish(figure, path):
    if path is not None:
        directory = os.path.dirname(os.fspath(path))
        if directory:
            os.makedirs(directory, exist_ok=True)
        figure.savefig(path, dpi=_DPI, facecolor="white")
    return figure


def _style_axis(axis):
    axis.grid(True, color="0.9", linewidth=0.6)
    axis.set_axisbelow(True)
    for side in ("top", "right"):
        axis.spines[side].set_visible(False)


def _depth_axis(axis):
    axis.set_xlim(-0.03, 1.03)
    axis.set_xlabel("Relative depth  (unit / (units - 1))")


# === Intensity over depth ===
def plot_intensity(
    profiles, labels=None, layer_pairs=None, pairs_with=1, normalize=None, title=None, path=None
):
    """Frequency intensity L(X) of each unit over relative depth, models overlaid.

    Args:
        profiles: a `Profile` or a list (e.g. `[teacher, student]`).
        labels: legend names (default: the profiles' model names).
        layer_pairs: (student_unit, teacher_unit) pairs between `profiles[pairs_with]` (the
            student) and `profiles[0]` (the teacher): the paired units get filled markers and a
            dashed line joins each pair. With one profile, its units on the pairs' teacher side
            are marked.
        pairs_with: index in `profiles` of the student the pairs belong to (default 1; e.g. the
            SpectralKD student among several students).
        normalize: None (raw L(X)) or "mean" (each profile divided by its mean over units: the
            shapes of profiles of different widths side by side, SPEC.md 5's note).
        title: axes title (default: "Frequency intensity over depth").
        path: also write a PNG there.
    Returns:
        The `Figure`.
    """
    plot = IntensityPlot(profiles, labels, layer_pairs, pairs_with, normalize, title)
    return _finish(plot.figure, path)


class IntensityPlot:
    """`plot_intensity`'s figure, kept to be shown again with new values of the same units.

    Drawing a kept figure again skips building the axes, ticks, legend and a line per curve and
    per paired unit. A figure shown every epoch (`SpectralTensorBoard`) is built once and then
    `update`d: the curves, the paired units' markers and the pair connectors take the new
    values, the y axis is autoscaled again and the title replaced, so that drawing it gives the
    image a new `plot_intensity` of the same profiles would.

    Args: those of `plot_intensity`, less `path`.

    Attributes:
        figure: the `Figure`.
    """

    def __init__(
        self, profiles, labels=None, layer_pairs=None, pairs_with=1, normalize=None, title=None
    ):
        import matplotlib
        from matplotlib.lines import Line2D

        profiles, labels = _as_list(profiles, labels)
        if normalize not in (None, "mean"):
            raise ValueError(f"`normalize` must be None or 'mean'; got {normalize!r}.")
        self._normalize = normalize
        self._layout = _intensity_layout(profiles)
        with matplotlib.rc_context(_RC):
            self.figure = _new_figure(5.0, 3.2)
            axis = self._axis = self.figure.add_subplot()
            _style_axis(axis)
            curves = []
            self._curves = []
            for index, (profile, label) in enumerate(zip(profiles, labels)):
                values = self._values(profile)
                color = MODEL_COLORS[index % len(MODEL_COLORS)]
                marker = MODEL_MARKERS[index % len(MODEL_MARKERS)]
                (line,) = axis.plot(
                    profile.relative_depth, values, color=color, marker=marker, markersize=4,
                    markerfacecolor="white", markeredgewidth=1.0, linewidth=1.4,
                    label=f"{label}  ({len(profile)} units, {_widths(profile)})", zorder=3,
                )
                self._curves.append(line)
                curves.append((profile, values, color, marker))
            # (Line2D, [(profile index, position), ...]): what each pair artist shows.
            self._pair_artists = []
            if layer_pairs:
                if len(curves) > 1 and not 1 <= pairs_with < len(curves):
                    raise ValueError(
                        f"`pairs_with`={pairs_with} must index a student profile: "
                        f"1..{len(curves) - 1}."
                    )
                student_index = pairs_with if len(curves) > 1 else None
                self._pair_artists = _mark_pairs(
                    axis, curves, student_index, [tuple(p) for p in layer_pairs]
                )
            _depth_axis(axis)
            axis.set_ylabel(
                "Intensity L(X) / mean over units"
                if normalize == "mean"
                else "Frequency intensity L(X)"
            )
            # y given: matplotlib then does not re-place the title above top tick labels (there
            # are none) at every draw, the same image for less work.
            axis.set_title(title or _INTENSITY_TITLE, y=1.0)
            handles, names = axis.get_legend_handles_labels()
            if layer_pairs:
                handles.append(Line2D(
                    [], [], color="0.45", linestyle="--", linewidth=0.8, marker="o",
                    markerfacecolor="0.45", markeredgecolor="0.45", markersize=4,
                ))
                names.append(f"selected layer pairs ({len(layer_pairs)})")
            axis.legend(handles, names, frameon=False, loc="best")

    def fits(self, profiles):
        """True when `update` can show `profiles`: as many as the plot was built with, with the
        same units, depths and widths (the legend and the pair markers name them)."""
        return _intensity_layout(_as_list(profiles, None)[0]) == self._layout

    def update(self, profiles, title=None):
        """Shows `profiles`' values (see `fits`). Returns the `Figure`."""
        profiles, _ = _as_list(profiles, None)
        layout = _intensity_layout(profiles)
        if layout != self._layout:
            raise ValueError(
                "IntensityPlot.update needs profiles with the units, depths and widths the plot "
                f"was built with: {self._layout} (units, depth, channels per profile); got "
                f"{layout}. Build a new plot for these."
            )
        values = [self._values(profile) for profile in profiles]
        for line, profile_values in zip(self._curves, values):
            line.set_ydata(profile_values)
        for line, points in self._pair_artists:
            line.set_ydata([values[index][position] for index, position in points])
        self._axis.relim()
        self._axis.autoscale_view()
        # set_text, not set_title: set_title would restyle the title from the global rcParams.
        self._axis.title.set_text(title or _INTENSITY_TITLE)
        return self.figure

    def _values(self, profile):
        values = profile.intensity
        return values / values.mean() if self._normalize == "mean" else values


_INTENSITY_TITLE = "Frequency intensity over depth"


def _intensity_layout(profiles):
    """What fixes an intensity figure's artists and legend: per profile, units, depth, widths."""
    return [
        (list(profile.units), int(profile.depth), [int(c) for c in profile.num_channels])
        for profile in profiles
    ]


def _mark_pairs(axis, curves, student_index, layer_pairs):
    """Fills the paired units' markers and joins each pair; `student_index` may be None (then
    only the teacher's units are marked). `curves[i]` is (profile, values, color, marker), the
    teacher's first.

    Returns:
        [(Line2D, [(profile index, position), ...])]: each artist and the points it shows.
    """
    artists = []

    def mark(index, role, unit, pair):
        """Fills the marker of `unit` on curve `index`; returns its (x, y) and position."""
        profile, values, color, marker = curves[index]
        if unit not in profile.units:
            raise ValueError(
                f"Layer pair {pair}: {role} unit {unit} is not in the {role} profile (units "
                f"{profile.units})."
            )
        position = profile.units.index(unit)
        x, y = profile.relative_depth[position], values[position]
        (line,) = axis.plot(x, y, marker=marker, color=color, markersize=5.5, zorder=4)
        artists.append((line, [(index, position)]))
        return x, y, position

    for student_unit, teacher_unit in layer_pairs:
        pair = f"({student_unit}, {teacher_unit})"
        tx, ty, j = mark(0, "teacher", teacher_unit, pair)
        if student_index is not None:
            sx, sy, i = mark(student_index, "student", student_unit, pair)
            (line,) = axis.plot(
                [sx, tx], [sy, ty], color="0.45", linestyle="--", linewidth=0.8, zorder=2
            )
            artists.append((line, [(student_index, i), (0, j)]))
    return artists


# === Layer-wise spectra ===
def plot_layer_spectra(profiles, labels=None, cmap="viridis", log_scale=True, path=None):
    """Each unit's spectrum S[k] over normalised frequency k/C, coloured by relative depth.

    Args:
        profiles: a `Profile` or a list; one panel each, sharing the y axis and the colorbar.
        labels: panel titles (default: the model names).
        cmap: a matplotlib colormap name (depth 0 -> 1).
        log_scale: logarithmic y axis (S[0], the channel mean, often dwarfs the rest).
        path: also write a PNG there.
    Returns:
        The `Figure`.
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    profiles, labels = _as_list(profiles, labels)
    colormap = matplotlib.colormaps[cmap]
    norm = Normalize(vmin=0.0, vmax=1.0)
    with matplotlib.rc_context(_RC):
        figure = _new_figure(2.2 + 2.9 * len(profiles), 3.1)
        axes = figure.subplots(1, len(profiles), sharey=True, squeeze=False)[0]
        for axis, profile, label in zip(axes, profiles, labels):
            _style_axis(axis)
            for position, depth in enumerate(profile.relative_depth):
                axis.plot(
                    profile.normalized_frequency(position),
                    profile.half_spectrum(position),
                    color=colormap(norm(depth)),
                    linewidth=1.0,
                    alpha=0.9,
                )
            axis.set_xlim(0.0, 0.5)
            axis.set_xlabel("Normalised frequency  (cycles / channel)")
            axis.set_title(f"{label}  ({len(profile)} units, {_widths(profile)})")
            if log_scale:
                axis.set_yscale("log")
        axes[0].set_ylabel("Channel spectrum S[k]")
        colorbar = figure.colorbar(
            ScalarMappable(norm=norm, cmap=colormap), ax=list(axes), pad=0.02
        )
        colorbar.set_label("Relative depth")
    return _finish(figure, path)


# === Entropy and magnitude ===
def plot_entropy_magnitude(profiles, labels=None, path=None):
    """Channel entropy (bits) and mean |X| over relative depth, models overlaid; two panels.

    Args:
        profiles: a `Profile` or a list; profiles without entropy leave the left panel empty.
        labels: legend names (default: the model names).
        path: also write a PNG there.
    Returns:
        The `Figure`.
    """
    import matplotlib

    profiles, labels = _as_list(profiles, labels)
    with matplotlib.rc_context(_RC):
        figure = _new_figure(7.6, 3.0)
        entropy_axis, magnitude_axis = figure.subplots(1, 2)
        for index, (profile, label) in enumerate(zip(profiles, labels)):
            style = dict(
                color=MODEL_COLORS[index % len(MODEL_COLORS)],
                marker=MODEL_MARKERS[index % len(MODEL_MARKERS)],
                markersize=4, markerfacecolor="white", linewidth=1.4,
                label=f"{label}  ({_widths(profile)})",
            )
            if profile.entropy is not None:
                entropy_axis.plot(profile.relative_depth, profile.entropy, **style)
            magnitude_axis.plot(profile.relative_depth, profile.magnitude, **style)
        bins = profiles[0].entropy_bins
        entropy_axis.set_ylabel(f"Channel entropy (bits, {bins} bins)")
        entropy_axis.set_title("Per-token channel entropy")
        magnitude_axis.set_ylabel("Mean |X|")
        magnitude_axis.set_title("Mean activation magnitude")
        for axis in (entropy_axis, magnitude_axis):
            _style_axis(axis)
            _depth_axis(axis)
        magnitude_axis.legend(frameon=False, loc="best")
    return _finish(figure, path)


# === All figures ===
def save_profile_figures(output_dir, profiles, labels=None, layer_pairs=None):
    """Writes intensity.png, spectra.png and entropy_magnitude.png into `output_dir`.

    Args:
        output_dir: folder (created if missing).
        profiles: a `Profile` or a list (teacher first, then student).
        labels: model names for legends and titles.
        layer_pairs: (student_unit, teacher_unit) pairs to mark on the intensity plot.
    Returns:
        Dict name -> written path.
    """
    profiles, labels = _as_list(profiles, labels)
    paths = {
        name: os.path.join(output_dir, f"{name}.png")
        for name in ("intensity", "spectra", "entropy_magnitude")
    }
    plot_intensity(profiles, labels, layer_pairs=layer_pairs, path=paths["intensity"])
    plot_layer_spectra(profiles, labels, path=paths["spectra"])
    plot_entropy_magnitude(profiles, labels, path=paths["entropy_magnitude"])
    return paths


# === Paired-seed studies ===
def plot_arm_top1(runs, per_arm, path=None):
    """Final top-1 per arm: the mean with its 95% t-interval, and one grey line per seed.

    Args:
        runs: the study's run results (dicts with `seed`, `arm`, `top1`).
        per_arm: arm -> {"top1": `statistics.mean_interval` dict}, in display order.
    """
    import numpy as np

    figure = _new_figure(6.0, 4.0)
    axis = figure.add_subplot()
    arms = list(per_arm)
    seeds = sorted({r["seed"] for r in runs})
    for seed in seeds:
        values = {r["arm"]: r["top1"] for r in runs if r["seed"] == seed}
        x = [i for i, arm in enumerate(arms) if arm in values]
        axis.plot(x, [values[arms[i]] * 100 for i in x], color="0.7", linewidth=1, marker=".",
                  zorder=1, label="one seed" if seed == seeds[0] else None)
    means = np.array([per_arm[a]["top1"]["mean"] for a in arms]) * 100
    low = np.array([per_arm[a]["top1"]["low"] for a in arms]) * 100
    high = np.array([per_arm[a]["top1"]["high"] for a in arms]) * 100
    axis.errorbar(range(len(arms)), means, yerr=np.nan_to_num(np.stack([means - low,
                                                                       high - means])),
                  fmt="o", color=MODEL_COLORS[0], capsize=6, zorder=2,
                  label="mean, 95% t-interval")
    axis.set_xticks(range(len(arms)), arms)
    axis.set_ylabel("final-epoch test top-1 (%)")
    axis.set_title(f"Student top-1 by arm ({len(seeds)} seeds, paired)")
    _style_axis(axis)
    axis.legend(loc="best")
    return _finish(figure, path)


def plot_spectral_distances(runs, arms, path=None):
    """Per epoch and arm: the L(X) level distance and the profile correlation to the teacher
    (mean over seeds; thin lines: single seeds). `runs` carry per-epoch `history` records."""
    import numpy as np

    figure = _new_figure(11.0, 4.0)
    axes = figure.subplots(1, 2, squeeze=False)[0]
    for axis, (key, label) in zip(axes, (
            ("level_distance", "L(X) level distance to the teacher (RMS)"),
            ("profile_r", "profile correlation r with the teacher"))):
        for index, arm in enumerate(arms):
            curves = np.array([[h.get(key, np.nan) for h in r["history"]]
                               for r in runs if r["arm"] == arm], dtype=np.float64)
            if not curves.size:
                continue
            epochs = np.arange(1, curves.shape[1] + 1)
            color = MODEL_COLORS[index % len(MODEL_COLORS)]
            for curve in curves:
                axis.plot(epochs, curve, color=color, alpha=0.25, linewidth=0.8)
            axis.plot(epochs, np.nanmean(curves, axis=0), color=color, linewidth=2,
                      marker="o", label=arm)
        axis.set_xlabel("epoch")
        axis.set_ylabel(label)
        _style_axis(axis)
        axis.legend()
    return _finish(figure, path)


def plot_arm_profiles(teacher_intensity, runs, arms, path=None):
    """The teacher's L(X) over relative depth, and each arm's final student profile (mean over
    seeds; thin lines: single seeds). `runs` carry `arm` and `intensity` (one value per unit)."""
    import numpy as np

    figure = _new_figure(7.5, 4.0)
    axis = figure.add_subplot()
    teacher = np.asarray(teacher_intensity, dtype=np.float64)
    axis.plot(np.linspace(0, 1, len(teacher)), teacher, color="black", linewidth=2,
              marker="s", label="teacher")
    for index, arm in enumerate(arms):
        curves = np.array([r["intensity"] for r in runs if r["arm"] == arm], dtype=np.float64)
        if not curves.size:
            continue
        depth = np.linspace(0, 1, curves.shape[1])
        color = MODEL_COLORS[index % len(MODEL_COLORS)]
        for curve in curves:
            axis.plot(depth, curve, color=color, alpha=0.25, linewidth=0.8)
        axis.plot(depth, curves.mean(axis=0), color=color, linewidth=2,
                  marker=MODEL_MARKERS[index % len(MODEL_MARKERS)], label=arm)
    axis.set_xlabel("relative depth")
    axis.set_ylabel("frequency intensity L(X)")
    axis.set_title("L(X) of the teacher and of each arm's students\n(final epoch; thin: one seed)")
    _style_axis(axis)
    # Outside the axes: the profiles fill the plot from top to bottom.
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return _finish(figure, path)
