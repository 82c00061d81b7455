"""The README, run as written (issue 14): its first-run output and every ```console block, in order, against a
fresh server, so that what it shows cannot drift from what the code does.

In a ```console block a line starting with `$ ` is a command (continued by a trailing `\\`, or by a here
document up to its delimiter); the lines after it, up to the next `$ `, are its output. A block whose first
line is `# NAME.yaml` is saved as that file when reached. A ```python block followed by a ```text block is run
with the venv's Python, and prints the text. Commands run in one bash, as a reader would in a second
terminal: the venv's `bin` on PATH, the server's catalog (MODELDEX_DATABASE_URL), the README's port replaced by
the test's, and the README's admin key by the one the server showed. Outputs are compared after normalising
request ids, times, dates and secrets; `...` stands for any text within a line, and alone on a line for any
lines.
"""

from __future__ import annotations

import os
import pty
import re
import select
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, cli_env, wait_until
from .postgres import free_port

README = ROOT / "README.md"
README_PORT = "8000"
README_DATABASE = "/root/.local/share/modeldex/catalog.db"
BIN = Path(sys.executable).parent


@dataclass
class Step:
    line: int  # in README.md, for messages
    kind: str  # "command", "file" or "python"
    text: str  # the command, the file's content, or the program
    expected: str | None = None
    file_name: str | None = None


@dataclass
class Block:
    line: int
    language: str
    lines: list[str]


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if current is None:
            opening = re.fullmatch(r"```(\w*)\s*", line)
            if opening:
                current = Block(number, opening.group(1), [])
        elif line.strip() == "```":
            blocks.append(current)
            current = None
        else:
            current.lines.append(line)
    assert current is None, f"README.md: the block opened on line {current.line} is not closed"
    return blocks


def console_steps(block: Block) -> list[Step]:
    steps: list[Step] = []
    lines = block.lines
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("$ "):
            assert not steps and not line.strip(), f"README.md:{block.line + 1 + index}: output before any command"
            index += 1
            continue
        start = index
        command = [line[2:]]
        index += 1
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        while index < len(lines) and (command[-1].endswith("\\") or heredoc):
            command.append(lines[index])
            index += 1
            if heredoc and lines[index - 1].strip() == heredoc.group(1):
                heredoc = None
        output: list[str] = []
        while index < len(lines) and not lines[index].startswith("$ "):
            output.append(lines[index])
            index += 1
        steps.append(Step(block.line + 1 + start, "command", "\n".join(command), "\n".join(output)))
    return steps


def readme_steps(text: str) -> list[Step]:
    blocks = fenced_blocks(text)
    steps: list[Step] = []
    for position, block in enumerate(blocks):
        if block.language == "console":
            steps.extend(console_steps(block))
        elif block.lines and (named := re.fullmatch(r"# ([\w.-]+\.(?:yaml|yml|json))", block.lines[0].strip())):
            steps.append(Step(block.line, "file", "\n".join(block.lines) + "\n", file_name=named.group(1)))
        elif block.language == "python" and position + 1 < len(blocks) and blocks[position + 1].language == "text":
            steps.append(Step(block.line, "python", "\n".join(block.lines), "\n".join(blocks[position + 1].lines)))
    return steps


def first_run_block(text: str) -> str:
    """The README's ```text block of what `serve` shows on its first start."""
    found = [block for block in fenced_blocks(text)
             if block.language == "text" and any("listening on" in line for line in block.lines)]
    assert len(found) == 1, "README.md should show serve's first-run output once"
    return "\n".join(found[0].lines)


NORMALISE = [
    (re.compile(r"req_[0-9a-f]{32}"), "req_<id>"),
    (re.compile(r"sk-mdx-[A-Za-z0-9]{52}"), "sk-mdx-<secret>"),
    (re.compile(r"sk-mdx-[A-Za-z0-9]{12}\.\.\."), "sk-mdx-<prefix>..."),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"), "YYYY-MM-DD hh:mm:ssZ"),
    (re.compile(r"(?im)^date: .*$"), "date: <date>"),
    (re.compile(r'"at":\d+(\.\d+)?'), '"at":<time>'),
]


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n")
    for pattern, replacement in NORMALISE:
        text = pattern.sub(replacement, text)
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def matches(expected: str, actual: str) -> bool:
    """Whether `actual` is what `expected` shows, both normalised; `...` is any text, alone on a line any lines."""
    pattern = []
    for line in normalise(expected).split("\n"):
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*?".join(re.escape(piece) for piece in line.split("...")) + "\n")
    return re.fullmatch("".join(pattern), normalise(actual) + "\n", re.DOTALL) is not None


class Shell:
    """One bash, as the reader's second terminal: variables set by one command are there for the next."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.pending = b""

    def run(self, command: str, timeout: float = 30) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        marker = f"__readme_step_done_{uuid.uuid4().hex}__".encode()
        # stdin from /dev/null: a command that asks must not read the rest of this script.
        self.process.stdin.write(b"{\n" + command.encode() + b"\n} </dev/null 2>&1\nprintf '\\n%s\\n' " + marker + b"\n")
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while marker not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.process.stdout], [], [], remaining)[0]:
                raise AssertionError(f"no end to {command!r} within {timeout} s:\n{self.pending.decode(errors='replace')}")
            chunk = os.read(self.process.stdout.fileno(), 65536)
            assert chunk, f"bash ended during {command!r}"
            self.pending += chunk
        output, self.pending = self.pending.split(marker, 1)
        self.pending = self.pending.lstrip(b"\n")
        return output.decode(errors="replace").removesuffix("\n")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=10)


class TerminalServer:
    """`modeldex serve` (the installed script) with a terminal as its output, as in the Quick start."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.port = port
        self.output = b""
        master, terminal = pty.openpty()
        self.process = subprocess.Popen([str(BIN / "modeldex"), "serve", "--port", str(port)], env=env,
                                        stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
                                        start_new_session=True)
        os.close(terminal)
        self.reader = threading.Thread(target=self._read, args=(master,), daemon=True)
        self.reader.start()
        started = wait_until(lambda: b"Started worker-1" in self.output or self.process.poll() is not None, 30)
        assert started is not None and self.process.poll() is None, self.text()

    def _read(self, master: int) -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        os.close(master)

    def text(self) -> str:
        return self.output.decode(errors="replace").replace("\r\n", "\n")

    def admin_key(self) -> str:
        found = re.search(r"created an admin key.*?\n\s*(sk-mdx-\w+)", self.text(), re.DOTALL)
        assert found, self.text()
        return found.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self.reader.join(timeout=5)


@dataclass
class Run:
    steps: list[tuple[Step, str]]  # each with what it printed
    first_run: str  # what serve showed, up to its "listening on" line


def catalog_version(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT version FROM catalog_state").fetchone()[0])


def run_readme(text: str, tmp: Path) -> Run:
    database = tmp / "catalog.db"
    env = cli_env(f"sqlite:///{database}")
    for name in ("MINIMAX_API_KEY", "PYTHONPATH"):
        env.pop(name, None)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["LOGNAME"] = env["USER"] = "root"  # the README's `changes` shows its writer as cli:root
    port = free_port()
    readme_key = re.search(r"sk-mdx-\w{52}", first_run_block(text))
    assert readme_key, "the first-run output should show a key"
    server = TerminalServer(env, port)
    shell = Shell(tmp, env)
    http = httpx.Client(timeout=5)
    try:
        admin = server.admin_key()
        shown = server.text()
        first_run = shown[:shown.index("\n", shown.index("listening on"))]
        first_run = first_run.replace(str(database), README_DATABASE).replace(f":{port}", f":{README_PORT}")

        def served_is_current() -> bool:
            answer = http.get(f"http://127.0.0.1:{port}/readyz", headers={"Authorization": f"Bearer {admin}"})
            return bool(answer.json().get("version") == catalog_version(database))

        results: list[tuple[Step, str]] = []
        for step in readme_steps(text):
            # What the CLI wrote is served within 0.2 s; a reader types slower than that, a script does not.
            assert wait_until(served_is_current, 5) is not None, "the server did not catch up with the catalog"
            if step.kind == "file":
                assert step.file_name is not None
                (tmp / step.file_name).write_text(step.text)
                results.append((step, ""))
                continue
            program = f"python - <<'__README_PY__'\n{step.text}\n__README_PY__"
            command = program if step.kind == "python" else step.text
            command = command.replace(readme_key.group(0), admin)
            command = command.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")
            command = command.replace(f"localhost:{README_PORT}", f"localhost:{port}")
            output = shell.run(command).replace(f":{port}", f":{README_PORT}")
            results.append((step, output))
        return Run(results, first_run)
    finally:
        http.close()
        shell.close()
        server.stop()


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_readme(README.read_text(), tmp_path_factory.mktemp("readme"))


def test_the_readme_runs_as_written(readme_run: Run) -> None:
    readme = README.read_text()
    problems = []
    if not matches(first_run_block(readme), readme_run.first_run):
        problems.append(f"serve's first-run output\n--- README shows:\n{first_run_block(readme)}\n"
                        f"--- serve showed:\n{readme_run.first_run}")
    for step, output in readme_run.steps:
        if step.expected is not None and not matches(step.expected, output):
            problems.append(f"README.md:{step.line}: $ {step.text}\n--- README shows:\n{step.expected}\n"
                            f"--- it printed:\n{output}")
    assert not problems, "\n\n".join(problems)
    assert sum(step.kind == "command" for step, _ in readme_run.steps) >= 15, "the walk-through lost its commands"


def test_drifted_outputs_are_caught(readme_run: Run) -> None:
    """The comparison is strict enough to catch the drift issue 14 found, and any changed line."""
    outputs = {step.text.split("#")[0].strip(): output for step, output in readme_run.steps}
    keys_list = outputs["modeldex keys list"]
    # The README before issue 14 showed `keys list` without the SEES and RATE LIMIT columns, and `keys
    # create` without the key's policy.
    assert not matches("NAME   SCOPE  KEY                     CREATED               REVOKED\n...", keys_list)
    created = next(output for command, output in outputs.items() if "keys create" in command)
    assert not matches("created read key 'app'; its secret is shown only once", created)
    for step, output in readme_run.steps:
        if step.expected and step.expected.strip() and step.expected.strip().split("\n")[0] != "...":
            drifted = "x" + step.expected.lstrip()
            assert not matches(drifted, output), f"README.md:{step.line}: a changed output still matches"
    assert not matches("first\n...\nlast", "first\nmiddle\nother")
    assert matches("first\n...\nlast", "first\nmiddle\nlast")
