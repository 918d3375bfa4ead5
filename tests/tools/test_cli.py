"""keras_spectralkd.tools.cli: one-line errors, exit 2 for usage errors, 1 for failures."""

import pytest

from keras_spectralkd.tools import cli


def _tool(body):
    parser = cli.parser("spectralkd-demo", "A demo tool.")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--kwargs", type=cli.json_object, default=None)
    return lambda argv: cli.run(parser, lambda args: body(args), argv)


def _raise(error):
    def body(args):
        raise error

    return body


@pytest.mark.parametrize("argv, expected", [
    ([], "usage error: the following arguments are required: --count"),
    (["--count=x"], "usage error: argument --count: invalid int value: 'x'"),
    (["--count=1", "--kwargs={bad"], "usage error: argument --kwargs: '{bad' is not valid JSON"),
    (["--count=1", "--kwargs=[1]"], "usage error: argument --kwargs: '[1]' is JSON but not an "
                                    "object"),
    (["--count=1", "--bogus=2"], "usage error: unrecognized arguments: --bogus=2"),
])
def test_usage_errors_exit_2_with_one_line(argv, expected, capsys):
    assert _tool(lambda args: 0)(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"spectralkd-demo: {expected}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("error, status, expected", [
    (cli.UsageError("--model='x' is not a registered model"), 2,
     "usage error: --model='x' is not a registered model (see spectralkd-demo --help)"),
    (FileNotFoundError("--checkpoint='c.pth' does not exist."), 1,
     "error: --checkpoint='c.pth' does not exist."),
    (ValueError("two\n  lines"), 1, "error: two lines"),
    (KeyError("a missing key"), 1, "error: a missing key"),
    (ZeroDivisionError("division by zero"), 1,
     "internal error: ZeroDivisionError: division by zero (rerun with SPECTRALKD_TRACEBACK=1"),
])
def test_failures_exit_1_or_2_with_one_line(error, status, expected, capsys, monkeypatch):
    monkeypatch.delenv("SPECTRALKD_TRACEBACK", raising=False)
    assert _tool(_raise(error))(["--count=1"]) == status
    err = capsys.readouterr().err
    assert err.startswith(f"spectralkd-demo: {expected}"), err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_success_help_and_traceback_switch(capsys, monkeypatch):
    assert _tool(lambda args: None)(["--count=3"]) == 0
    assert _tool(lambda args: 0)(["--help"]) == 0
    assert "--count" in capsys.readouterr().out
    monkeypatch.setenv("SPECTRALKD_TRACEBACK", "1")
    with pytest.raises(ZeroDivisionError):
        _tool(_raise(ZeroDivisionError("x")))(["--count=1"])
