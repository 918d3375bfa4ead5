"""CI's verdict from pytest's JUnit XML files: counts, and every skip and expected failure held
against an allowed list.

    python .ci/junit_summary.py .ci/allowed_skips.txt .ci/results/tensorflow.xml ...

Each file is one backend's run, named `<backend>.xml`. Prints each backend's skips and xfails with
their reasons (allowed or NOT ALLOWED), then one line "N passed, N failed, N skipped, N xfailed"
(with ", N not allowed" when some skip or xfail is not). Exits 1 when a test failed or errored, a
skip or an xfail is not allowed on that backend, or no test passed; else 0. An xfail is judged
like a skip: a test that stops being run must say why, whichever way it stops.
"""

import ast
import os
import re
import sys
import xml.etree.ElementTree as ET


def read_allowed(path):
    """[(set of backends, compiled reason pattern, why)] from the allowed-skips file."""
    rules = []
    with open(path) as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [field.strip() for field in line.split(" | ")]
            if len(fields) != 3 or not all(fields):
                raise ValueError(
                    f"{path}:{number}: expected 'BACKENDS | REASON | WHY', got {line!r}."
                )
            backends, reason, why = fields
            rules.append((set(backends.split(",")), re.compile(reason), why))
    return rules


def read_results(path):
    """[(test id, outcome, message)] of one JUnit file; outcome is passed, failed, skipped or
    xfailed (pytest writes an xfail as <skipped type="pytest.xfail">)."""
    results = []
    for case in ET.parse(path).getroot().iter("testcase"):
        test = "::".join(part for part in (case.get("classname"), case.get("name")) if part)
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", child.get("message", "")
                break
            if child.tag == "skipped":
                xfail = child.get("type") == "pytest.xfail"
                outcome, message = ("xfailed" if xfail else "skipped"), child.get("message", "")
                if message == "collection skipped":
                    message = _collection_skip_reason(child.text or "")
        results.append((test, outcome, message))
    return results


def _collection_skip_reason(text):
    """A skipped module's reason: pytest writes `(path, line, "Skipped: reason")` as the text."""
    try:
        reason = ast.literal_eval(text.strip())[2]
    except (ValueError, SyntaxError, TypeError, IndexError):
        return text.strip()
    return reason.removeprefix("Skipped: ")


def is_allowed(rules, backend, reason):
    return any(backend in backends and pattern.fullmatch(reason) for backends, pattern, _ in rules)


def main(argv):
    if len(argv) < 2:
        print("usage: python .ci/junit_summary.py ALLOWED_SKIPS JUNIT_XML...", file=sys.stderr)
        return 2
    rules = read_allowed(argv[0])
    counts = dict.fromkeys(("passed", "failed", "skipped", "xfailed"), 0)
    not_allowed = 0
    for path in argv[1:]:
        backend = os.path.splitext(os.path.basename(path))[0]
        skips = []
        for test, outcome, message in read_results(path):
            counts[outcome] += 1
            if outcome in ("skipped", "xfailed"):
                allowed = is_allowed(rules, backend, message)
                not_allowed += not allowed
                kind = "" if outcome == "skipped" else "xfail "
                skips.append(f"  {'allowed' if allowed else 'NOT ALLOWED'}: {kind}{test}: "
                             f"{message}")
        print(f"skips and xfails on {backend}: {len(skips)}")
        for skip in skips:
            print(skip)
    line = ", ".join(f"{count} {outcome}" for outcome, count in counts.items())
    print(line + (f", {not_allowed} not allowed" if not_allowed else ""))
    return 1 if counts["failed"] or not_allowed or counts["passed"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
