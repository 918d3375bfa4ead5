""".ci/junit_summary.py, CI's verdict: every skip and xfail is held against
.ci/allowed_skips.txt."""

import ast
import importlib.util
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ALLOWED = REPO / ".ci" / "allowed_skips.txt"


@pytest.fixture(scope="module")
def summary():
    path = REPO / ".ci" / "junit_summary.py"
    spec = importlib.util.spec_from_file_location("junit_summary", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _junit(cases):
    body = "".join(f'<testcase classname="{c}" name="{n}" time="0">{inner}</testcase>'
                   for c, n, inner in cases)
    return f"<testsuites><testsuite>{body}</testsuite></testsuites>"


def test_skips_are_judged_per_backend(summary, tmp_path, capsys):
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("# comment\n\njax | tf\\.distribute is TF-only | TF only\n"
                       "jax | known cycle | an xfail allowed on jax\n")
    tf_only = '<skipped type="pytest.skip" message="tf.distribute is TF-only">x.py:3: ...</skipped>'
    no_timm = ("<skipped message=\"collection skipped\">('/r/tests/test_p.py', 20, \"Skipped: "
               "could not import 'timm': No module named 'timm'\")</skipped>")
    xfail = '<skipped type="pytest.xfail" message="known cycle" />'
    (tmp_path / "jax.xml").write_text(_junit([
        ("tests.test_d", "test_ok", ""),
        ("tests.test_d", "test_mirrored", tf_only),
        ("tests.test_l", "test_cycle[convert]", xfail),
    ]))
    (tmp_path / "torch.xml").write_text(_junit([
        ("tests.test_d", "test_mirrored", tf_only),  # allowed on jax only
        ("", "tests.test_p", no_timm),  # a whole module skipped at collection
        ("tests.test_d", "test_bad", '<failure message="boom">trace</failure>'),
        ("tests.test_l", "test_cycle[convert]", xfail),  # allowed on jax only
    ]))
    paths = [str(allowed), str(tmp_path / "jax.xml")]
    assert summary.main(paths) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 passed, 0 failed, 1 skipped, 1 xfailed"

    assert summary.main(paths + [str(tmp_path / "torch.xml")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "  allowed: tests.test_d::test_mirrored: tf.distribute is TF-only" in out
    assert "  NOT ALLOWED: tests.test_d::test_mirrored: tf.distribute is TF-only" in out
    assert ("  NOT ALLOWED: tests.test_p: could not import 'timm': No module named 'timm'"
            in out)
    assert "  allowed: xfail tests.test_l::test_cycle[convert]: known cycle" in out
    assert "  NOT ALLOWED: xfail tests.test_l::test_cycle[convert]: known cycle" in out
    assert out[-1] == "1 passed, 1 failed, 3 skipped, 2 xfailed, 3 not allowed"


def test_a_malformed_line_is_refused(summary, tmp_path):
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("jax | no reason given\n")
    with pytest.raises(ValueError, match=r"allowed.txt:1: expected 'BACKENDS \| REASON \| WHY'"):
        summary.read_allowed(allowed)


def _skip_reasons_in_tests():
    """Every string given as a skip/skipif/xfail `reason=` or to `pytest.skip(...)` or
    `pytest.xfail(...)` in tests/."""
    reasons = set()
    for path in (REPO / "tests").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            values = [k.value for k in node.keywords if k.arg == "reason"]
            if (isinstance(node.func, ast.Attribute) and node.func.attr in ("skip", "xfail")
                    and node.args):
                values.append(node.args[0])
            reasons.update(v.value for v in values if isinstance(v, ast.Constant))
    return reasons


def test_every_allowed_skip_is_one_the_tests_can_give(summary):
    # A reworded or removed skipif must take its line in the list with it (no stale permissions).
    reasons = _skip_reasons_in_tests()
    rules = summary.read_allowed(ALLOWED)
    assert rules
    for backends, pattern, why in rules:
        assert backends <= {"tensorflow", "jax", "torch"}, backends
        assert any(pattern.fullmatch(reason) for reason in reasons), (
            f"{ALLOWED.name}: no skip in tests/ gives a reason matching {pattern.pattern!r}"
        )
