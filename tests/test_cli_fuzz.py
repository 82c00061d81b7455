"""A property of the whole command line: whatever the arguments and files (binary, huge, malformed YAML or
JSON, unknown keys), a command ends with a status, and a failure is one `Error:` line, never a traceback.

The many random runs are in-process (click's runner: ~10 ms a run, not a new interpreter's ~0.5 s); a
handful of the nastiest files then go through the real `modeldex` process.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeldex.cli.main import cli

from .conftest import run_cli

# Commands that would start a server or talk to the network are left out: what they do with their arguments
# before that is the same code (option parsing, the database) as the others'.
SKIPPED = {("serve",), ("upstreams", "sync-now"), ("check",)}  # check: grades a server over the network
# Options whose free-text values would make the command contact that text as a host: given from a fixed set
# of addresses that fail fast instead (a refused port, no scheme, a scheme that is not HTTP).
ADDRESSES = ["http://127.0.0.1:1", "http://127.0.0.1:1/v1", "localhost:8000", "ftp://127.0.0.1/", "", "http://"]
# Commands whose status 1 is a verdict with a report on stdout (`auth explain`: the token would be refused).
VERDICTS = {("auth", "explain")}
ADDRESS_OPTIONS = {"--url", "--base-url", "--issuer", "--jwks-url"}


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        elif (*path, name) not in SKIPPED:
            found.append(((*path, name), command))
    return found


COMMANDS = _commands(cli)


def _files(folder: Path) -> list[str]:
    """Files a user might hand any argument by mistake, or on purpose."""
    files = {
        "binary.bin": bytes(range(256)) * 64,
        "latin1.yaml": "models:\n  - id: caf\u00e9\n".encode("latin-1"),
        "huge.yaml": b"models:\n  - id: m\n    description: " + b"x" * 4_000_000 + b"\n",  # one 4 MB value
        "many.yaml": b"models:\n" + b"  - id: m\n    owned_by: x\n" * 5_000,  # one id 5,000 times
        "malformed.yaml": b"models: [\n  - id: a\n  owned_by: {\n",
        "malformed.json": b'{"models": [{"id": "a", "owned_by": }]}',
        "unknown.json": b'{"models": [{"id": "a", "owned_by": "x", "colour": "red"}], "extras": 1}',
        "unknown-section.yaml": b"widgets:\n  - a\n",
        "deep.yaml": b"[" * 5000,
        "aliases.yaml": b"a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                        b"models: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "scalar.yaml": b"42\n",
        "nul.yaml": b"models:\n  - id: a\x00b\n",
        "empty.yaml": b"",
        "bom.yaml": b"\xef\xbb\xbfmodels: []\n",
        "tags.yaml": b"models:\n  - !!python/object/apply:os.system [echo hi]\n",
        "key.txt": b"sk-mdx-" + b"a" * 52 + b"\n",
        "two-lines.txt": b"one\ntwo\n",
    }
    paths = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths.append(str(folder / name))
    (folder / "a-folder").mkdir(exist_ok=True)
    return [*paths, str(folder / "a-folder"), str(folder / "missing" / "x.yaml"), "-"]


def _words(paths: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(  # no NUL: a command line cannot hold one
        st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=40),
        st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="\x00"),
                max_size=8),
        st.sampled_from(["caf\udce9", "\udcff\udcfe"]),  # bytes that are not UTF-8, as Python's argv holds them
        st.sampled_from(paths),
        st.sampled_from(["MiniMax-M3", "MiniMax-M2", "admin", "read", "off", "unlimited", "600/m", "0", "-1",
                         "99999999999999999999999", "1e309", "nan", "2027-13-45", "*", "a/b", "..", "--", "-"]),
        st.integers().map(str),
    )


@st.composite
def command_lines(draw: st.DrawFn, paths: list[str], database_urls: list[str]) -> list[str]:
    path, command = draw(st.sampled_from(COMMANDS))
    words = _words(paths)
    options = [p for p in command.params if isinstance(p, click.Option)]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    argv: list[str] = []
    if draw(st.booleans()):
        argv += ["--database-url", draw(st.sampled_from(database_urls))]  # the group's option
    argv += list(path)
    for _argument in arguments:
        if draw(st.integers(0, 9)):  # now and then one is missing
            argv.append(draw(words))
    for option in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        name = draw(st.sampled_from(option.opts + option.secondary_opts))
        if option.is_flag:
            argv.append(name)
        elif option.opts[0] in ADDRESS_OPTIONS:
            argv += [name, draw(st.sampled_from(ADDRESSES))]
        elif option.opts[0] == "--database-url":
            argv += [name, draw(st.sampled_from(database_urls))]
        else:
            argv += [name, draw(words)]
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(words))  # a stray extra argument
    return argv


def assert_one_line_failure(status: int, stderr: str, argv: list[str], stdout: str = "") -> None:
    """Success, or a failure whose only error is one `Error:` line (with click's usage lines for a usage
    error, status 2). A verdict command's "no" (status 1, its report on stdout, notes on stderr) is an
    answer, not an error."""
    assert "Traceback" not in stderr, (argv, stderr)
    if status == 0 or (status == 1 and stdout.strip() and "Error:" not in stderr and any(
            argv[i:i + len(command)] == list(command) for command in VERDICTS for i in range(len(argv)))):
        return
    assert status in (1, 2), (argv, status, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, (argv, stderr)
    assert stderr.rstrip("\n").endswith(errors[0]), (argv, stderr)  # nothing after it


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "cwd").mkdir()
    return folder, _files(folder)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_random_command_lines_fail_in_one_line(data: st.DataObject, fuzz_folder: tuple[Path, list[str]]) -> None:
    folder, paths = fuzz_folder
    database = f"sqlite:///{folder}/catalog.db"
    database_urls = [database, f"sqlite:///{folder}/missing/x.db", "mysql://u:p@h/db", "not a url",
                     "postgresql://nobody@127.0.0.1:1/none", "sqlite://"]
    argv = data.draw(command_lines(paths, database_urls))
    env = {"MODELDEX_DATABASE_URL": database, "MODELDEX_URL": None, "MODELDEX_API_KEY": None,
           "MODELDEX_API_KEY_FILE": None, "XDG_DATA_HOME": str(folder / "xdg")}
    with contextlib.chdir(folder / "cwd"):  # a random relative path (`-o x`) is written there, nowhere else
        result = CliRunner().invoke(cli, argv, env=env, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"modeldex {argv} raised:\n{trace}")
    assert_one_line_failure(result.exit_code, result.stderr, argv, result.stdout)


@pytest.mark.cli_process
def test_the_nastiest_files_through_the_real_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = {Path(p).name: p for p in _files(tmp_path)}
    database = f"sqlite:///{tmp_path}/catalog.db"
    for name in ("binary.bin", "huge.yaml", "many.yaml", "malformed.json", "a-folder"):
        argv = ["catalog", "apply", paths[name], "--prune"]
        result = run_cli(database, *argv, check=False)
        assert result.returncode == 1 if name != "a-folder" else result.returncode == 2, (name, result.stderr)
        assert_one_line_failure(result.returncode, result.stderr, argv)
    result = run_cli(database, "keys", "list", "--url", "http://127.0.0.1:1", "--api-key-file", paths["binary.bin"],
                     check=False)
    assert_one_line_failure(result.returncode, result.stderr, ["--api-key-file", "binary.bin"])
    assert result.returncode == 2
    assert os.path.exists(f"{tmp_path}/catalog.db")
    # An argument in another encoding than UTF-8 (a Latin-1 terminal): it reached SQLite and raised.
    latin1 = run_cli(database, "routes", "remove", os.fsdecode(b"caf\xe9"), "x", check=False)
    assert_one_line_failure(latin1.returncode, latin1.stderr, ["routes", "remove", "caf\\xe9"])
    assert latin1.returncode == 2 and latin1.stderr == "Error: argument 3 is not UTF-8 text\n"
