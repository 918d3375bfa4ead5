"""Figures of spectral profiles (matplotlib, PNG): what the SpectralKD paper looks at.

- `plot_intensity`: frequency intensity L(X) over relative depth, several models overlaid
  (teacher and student), the layer pairs marked and joined.
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
    import matplotlib
    from matplotlib.lines import Line2D

    profiles, labels = _as_list(profiles, labels)
    if normalize not in (None, "mean"):
        raise ValueError(f"`normalize` must be None or 'mean'; got {normalize!r}.")
    with matplotlib.rc_context(_RC):
        figure = _new_figure(5.0, 3.2)
        axis = figure.add_subplot()
        _style_axis(axis)
        curves = []
        for index, (profile, label) in enumerate(zip(profiles, labels)):
            values = profile.intensity
            if normalize == "mean":
                values = values / values.mean()
            color = MODEL_COLORS[index % len(MODEL_COLORS)]
            marker = MODEL_MARKERS[index % len(MODEL_MARKERS)]
            axis.plot(
                profile.relative_depth,
                values,
                color=color,
                marker=marker,
                markersize=4,
                markerfacecolor="white",
                markeredgewidth=1.0,
                linewidth=1.4,
                label=f"{label}  ({len(profile)} units, {_widths(profile)})",
                zorder=3,
            )
            curves.append((profile, values, color, marker))
        if layer_pairs:
            if len(curves) > 1 and not 1 <= pairs_with < len(curves):
                raise ValueError(
                    f"`pairs_with`={pairs_with} must index a student profile: 1..{len(curves) - 1}."
                )
            student_curve = curves[pairs_with] if len(curves) > 1 else None
            _mark_pairs(axis, curves[0], student_curve, [tuple(p) for p in layer_pairs])
        _depth_axis(axis)
        axis.set_ylabel(
            "Intensity L(X) / mean over units"
            if normalize == "mean"
            else "Frequency intensity L(X)"
        )
        axis.set_title(title or "Frequency intensity over depth")
        handles, names = axis.get_legend_handles_labels()
        if layer_pairs:
            handles.append(
                Line2D(
                    [],
                    [],
                    color="0.45",
                    linestyle="--",
                    linewidth=0.8,
                    marker="o",
                    markerfacecolor="0.45",
                    markeredgecolor="0.45",
                    markersize=4,
                )
            )
            names.append(f"selected layer pairs ({len(layer_pairs)})")
        axis.legend(handles, names, frameon=False, loc="best")
    return _finish(figure, path)


def _mark_pairs(axis, teacher_curve, student_curve, layer_pairs):
    """Fills the paired units' markers and joins each pair; `student_curve` may be None."""
    teacher, teacher_values, teacher_color, teacher_marker = teacher_curve
    teacher_position = {unit: i for i, unit in enumerate(teacher.units)}
    if student_curve is not None:
        student, student_values, student_color, student_marker = student_curve
        student_position = {unit: i for i, unit in enumerate(student.units)}
    for student_unit, teacher_unit in layer_pairs:
        if teacher_unit not in teacher_position:
            raise ValueError(
                f"Layer pair ({student_unit}, {teacher_unit}): teacher unit {teacher_unit} is not "
                f"in the teacher profile (units {teacher.units})."
            )
        j = teacher_position[teacher_unit]
        tx, ty = teacher.relative_depth[j], teacher_values[j]
        axis.plot(tx, ty, marker=teacher_marker, color=teacher_color, markersize=5.5, zorder=4)
        if student_curve is not None:
            if student_unit not in student_position:
                raise ValueError(
                    f"Layer pair ({student_unit}, {teacher_unit}): student unit {student_unit} is "
                    f"not in the student profile (units {student.units})."
                )
            i = student_position[student_unit]
            sx, sy = student.relative_depth[i], student_values[i]
            axis.plot(sx, sy, marker=student_marker, color=student_color, markersize=5.5, zorder=4)
            axis.plot([sx, tx], [sy, ty], color="0.45", linestyle="--", linewidth=0.8, zorder=2)


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
                markersize=4,
                markerfacecolor="white",
                linewidth=1.4,
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
        "intensity": os.path.join(output_dir, "intensity.png"),
        "spectra": os.path.join(output_dir, "spectra.png"),
        "entropy_magnitude": os.path.join(output_dir, "entropy_magnitude.png"),
    }
    plot_intensity(profiles, labels, layer_pairs=layer_pairs, path=paths["intensity"])
    plot_layer_spectra(profiles, labels, path=paths["spectra"])
    plot_entropy_magnitude(profiles, labels, path=paths["entropy_magnitude"])
    return paths
