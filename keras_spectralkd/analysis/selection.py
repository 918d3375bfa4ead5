"""From a teacher's intensity profile to the Distiller's layer pairs (SPEC.md section 6).

The guideline: profile the teacher with L(X); keep the units at both ends of its U-shaped
profile (the first k and the last m by position, where intensity is high); map them to the
student by position, the first k teacher units to the student's first k units and the last m
to its last m, order kept. `select_layer_pairs` does this; `num_front`/`num_back` fix k and m,
and whichever is left as None is found from the profile by the rule below.

The automatic rule (deterministic, no tuning constant):
1. Teacher and student with the same number of units (e.g. Swin-S -> Swin-T, 4 stages each):
   every unit i is paired with unit i. Position mapping is then exact and there is no middle to
   drop; this is SPEC.md 6's "align stage i with stage i" and the paper's Swin setting.
2. Otherwise, a teacher unit is "high" when its intensity is above the mean intensity of the
   profile. k is the length of the run of high units at the start of the profile, m the length
   of the run at its end: the two arms of the U. The mean is the natural level for a U whose
   arms are short and whose floor is long (as CaiT's): it sits just above the floor, so an arm
   that rises gradually is kept whole. (The midpoint (min + max) / 2 sits higher and cuts the
   first units of a gradual rise; tests/analysis/test_selection.py shows the difference.) The
   rule is invariant to scaling and offsetting the profile. A profile whose spread is within
   1e-6 of its largest value is flat (float noise): no unit is high.
3. Each end keeps at least one unit: the first+last pairing is the smallest SpectralKD setting
   (the follow-up's logs, SPEC.md 7), and a flat profile should still give it.
4. k + m may not exceed the shallower model's units; while it does, the innermost selected unit
   (unit k-1 or unit T-m) with the lower intensity is dropped (the back one on ties), never
   going below one unit per end. Counts passed explicitly are never trimmed.

For a CaiT-S24-like profile (high in its first 2 and last 6 blocks) and a 12-block DeiT this
gives k=2, m=6: student 0 1 6 7 8 9 10 11 <- teacher 0 1 18 19 20 21 22 23 (SPEC.md 4).

Profiles made by layer names (`profile_model(layer_names=...)`, any functional Keras model) give
pairs of layer names on their side, ready for `Distiller(layer_pairs=...)` as they are: the
teacher's names from its profile, the student's from a named student profile or a list of the
student's layer names given as `student_depth`.

Pairs of unit indices travel on the command line as `student:teacher` items:
`--layer_pairs=0:0,1:1,6:18`;
`format_layer_pairs` writes that text and `parse_layer_pairs` reads it (the recipes use both).
"""

import numpy as np

# Relative spread below which a profile counts as flat (float32 resolution is ~6e-8).
FLAT_TOLERANCE = 1e-6

# SPEC.md 4: the paper's pairs, (student unit, teacher unit).
# DeiT-Tiny/Small (12 blocks) <- CaiT-S24 (24 blocks): both ends of CaiT's U-shaped profile.
DEIT_FROM_CAIT_S24_PAIRS = ((0, 0), (1, 1)) + tuple((6 + i, 18 + i) for i in range(6))
# Swin-T <- Swin-S: stage i <- stage i.
SWIN_STAGE_PAIRS = ((0, 0), (1, 1), (2, 2), (3, 3))


def high_intensity_mask(values):
    """Boolean mask of the units whose intensity is above the profile's mean (rule step 2).

    Args:
        values: 1-D sequence of numbers (the intensities over depth).
    Returns:
        (len(values),) bool array; all False for a flat profile (spread <= 1e-6 of its largest
        magnitude).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"Expected a non-empty 1-D profile; got shape {values.shape}.")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"The profile has non-finite values: {values.tolist()}.")
    # Differences at float32 resolution are noise, not a U (e.g. a randomly initialised CaiT,
    # whose LayerScale of 1e-5 leaves every block's output almost equal): treat it as flat.
    if values.max() - values.min() <= FLAT_TOLERANCE * np.abs(values).max():
        return np.zeros(values.shape, dtype=bool)
    return values > values.mean()


def profile_ends(intensity):
    """(k, m): lengths of the high-intensity runs at the start and the end of a profile.

    Steps 2 and 3 of the module's rule: units above the mean intensity, leading and trailing
    runs, at least 1 each (for a profile of one unit: (1, 0)).
    """
    intensity = np.asarray(intensity, dtype=np.float64)
    high = high_intensity_mask(intensity)
    n = len(intensity)
    if n == 1:
        return 1, 0
    if high.all():
        return n, n
    return max(int(np.argmin(high)), 1), max(int(np.argmin(high[::-1])), 1)


def select_layer_pairs(teacher_profile, student_depth, num_front=None, num_back=None):
    """Chooses (student_unit, teacher_unit) pairs from the teacher's intensity profile.

    Args:
        teacher_profile: a `Profile` of every teacher unit (units 0..depth-1), or a 1-D
            sequence of intensities, one per teacher unit in order.
        student_depth: the student's number of units (an int, or a backbone / `Profile` whose
            `num_units` / `depth` gives it), or the list of the student layers' names to pair
            (their number is the depth; the pairs then name them).
        num_front: k, teacher units taken from the start (None: found by the rule).
        num_back: m, teacher units taken from the end (None: found by the rule).
    Returns:
        Sorted list of `(student_unit, teacher_unit)` tuples, ready for
        `Distiller(layer_pairs=...)`: ints, or layer names on a side profiled (or given) by
        names.
    """
    intensity = _teacher_intensity(teacher_profile)
    teacher_names = getattr(teacher_profile, "layer_names", None)
    student_names = _student_names(student_depth)
    pairs = _select(intensity, len(student_names) if student_names else student_depth,
                    num_front, num_back)
    return [
        (student_names[s] if student_names else s, teacher_names[t] if teacher_names else t)
        for s, t in pairs
    ]


def _student_names(student):
    """The student's layer names, from a named `Profile` or a list of names; else None."""
    names = getattr(student, "layer_names", None)
    if names is None and isinstance(student, (list, tuple)) and student:
        if not all(isinstance(name, str) and name for name in student):
            raise ValueError(
                f"`student_depth` as a list must hold the student's layer names; got {student!r}."
            )
        names = list(student)
    return list(names) if names else None


def _select(intensity, student_depth, num_front, num_back):
    """`select_layer_pairs` on unit indices."""
    teacher_depth = len(intensity)
    student_depth = _depth_of(student_depth)
    shallower = min(teacher_depth, student_depth)
    for name, count in (("num_front", num_front), ("num_back", num_back)):
        if count is not None and (isinstance(count, bool) or not 0 <= int(count) <= shallower):
            raise ValueError(
                f"`{name}`={count!r} must be an int in 0..{shallower} (the teacher has "
                f"{teacher_depth} units, the student {student_depth})."
            )

    if num_front is None and num_back is None and teacher_depth == student_depth:
        return [(unit, unit) for unit in range(teacher_depth)]

    auto_front, auto_back = profile_ends(intensity)
    front = int(num_front) if num_front is not None else auto_front
    back = int(num_back) if num_back is not None else auto_back
    if num_front is not None and num_back is not None and front + back == 0:
        raise ValueError("`num_front` + `num_back` is 0; at least one layer pair is needed.")
    if front + back > shallower:
        if num_front is not None and num_back is not None:
            raise ValueError(
                f"`num_front`={front} + `num_back`={back} exceeds the {shallower} units of the "
                f"shallower model (teacher {teacher_depth}, student {student_depth}); the front "
                "and back pairs would overlap."
            )
        front, back = _trim(intensity, front, back, shallower, num_front is None, num_back is None)
    pairs = [(unit, unit) for unit in range(front)]
    pairs += [(student_depth - back + i, teacher_depth - back + i) for i in range(back)]
    return sorted(pairs)


def _trim(intensity, front, back, limit, trim_front, trim_back):
    """Drops the weaker innermost selected unit until front + back <= limit (rule step 4)."""
    n = len(intensity)
    while front + back > limit:
        can_front = trim_front and front > 1
        can_back = trim_back and back > 1
        if not (can_front or can_back):
            raise ValueError(
                f"Cannot fit {front} front and {back} back pairs into {limit} units; pass smaller "
                "`num_front`/`num_back`."
            )
        if can_front and can_back:
            # Innermost units of each arm: front - 1 and n - back. Drop the weaker (back on ties).
            if intensity[front - 1] < intensity[n - back]:
                front -= 1
            else:
                back -= 1
        elif can_front:
            front -= 1
        else:
            back -= 1
    return front, back


def _teacher_intensity(teacher_profile):
    if hasattr(teacher_profile, "intensity") and hasattr(teacher_profile, "units"):
        units = list(teacher_profile.units)
        if units != list(range(teacher_profile.depth)):
            raise ValueError(
                "Layer selection needs a profile of every teacher unit "
                f"0..{teacher_profile.depth - 1}; this one has units {units}."
            )
        return np.asarray(teacher_profile.intensity, dtype=np.float64)
    intensity = np.asarray(teacher_profile, dtype=np.float64)
    if intensity.ndim != 1 or intensity.size == 0:
        raise ValueError(
            "`teacher_profile` must be a Profile or a 1-D sequence of intensities; got shape "
            f"{intensity.shape}."
        )
    return intensity


def _depth_of(student_depth):
    for attribute in ("num_units", "depth"):
        if not isinstance(student_depth, (int, np.integer)) and hasattr(student_depth, attribute):
            student_depth = getattr(student_depth, attribute)
            break
    if isinstance(student_depth, bool) or not isinstance(student_depth, (int, np.integer)):
        raise ValueError(f"`student_depth` must be a positive int; got {student_depth!r}.")
    if student_depth < 1:
        raise ValueError(f"`student_depth` must be >= 1; got {student_depth}.")
    return int(student_depth)


# === Command-line form: "student:teacher,..." ===
def format_layer_pairs(pairs):
    """`[(0, 0), (6, 18)]` -> `"0:0,6:18"` (student:teacher), the recipes' `--layer_pairs` value."""
    items = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"A layer pair must be (student_unit, teacher_unit); got {pair!r}.")
        items.append(f"{int(pair[0])}:{int(pair[1])}")
    if not items:
        raise ValueError("No layer pairs to format.")
    return ",".join(items)


def parse_layer_pairs(text):
    """`"0:0,1:1,6:18"` -> `[(0, 0), (1, 1), (6, 18)]`: (student_unit, teacher_unit) tuples.

    Spaces around items are allowed; order is kept as written (the Distiller rejects unsorted or
    duplicated pairs with its own error).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"Layer pairs {text!r} are empty; expected 'student:teacher' items separated by "
            "commas, e.g. '0:0,1:1,6:18'."
        )
    pairs = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            student, teacher = int(parts[0]), int(parts[1])
        except ValueError:
            raise ValueError(
                f"Bad layer pair {item.strip()!r} in {text!r}; expected 'student:teacher' with "
                "non-negative integers, e.g. '0:0,1:1,6:18'."
            ) from None
        if student < 0 or teacher < 0:
            raise ValueError(
                f"Bad layer pair {item.strip()!r} in {text!r}: unit indices must be >= 0."
            )
        pairs.append((student, teacher))
    return pairs
