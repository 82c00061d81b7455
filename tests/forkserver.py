"""A fork server: `python -m MODULE ARGS` without paying for the interpreter start and the imports each time.

Run as `python tests/forkserver.py MODULE [PRELOAD...]` (by tests/forks.py). It imports the PRELOAD modules
once (what MODULE imports before it does its work), then reads requests (one JSON object a line: args, env,
stdout and stderr file paths) and forks a child per request. The child takes the request's environment,
stdin from /dev/null and the two files as stdout and stderr, leaves the loop and runs MODULE as `python -m`
does, at top level, and exits the way a fresh process exits (the status SystemExit or an uncaught exception
and its traceback give, non-daemon threads joined, atexit handlers run, output flushed); the server reports
its exit status. A request with `detach` (a server) is forked twice and answered with the pid at once; its
exit status goes to the test process (tests/forks.py's ForkedProcess). Nothing of a run survives into the
next one: each child is a fresh copy of the server, which never runs MODULE's code itself.

Two use it: `modeldex` (~0.7 s of CPU a run saved, about half the suite's CPU when every CLI run and server
paid it; everything modeldex reads from the environment it reads when a command runs, not at import), and
LiteLLM's proxy (importing it takes ~7 s of CPU, paid once per test process instead of at every start and
restart; it reads its LITELLM_LOCAL_* switches at import, so they are in the fork server's environment).
"""

from __future__ import annotations

import importlib
import json
import os
import sys


def _serve(preload: list[str]) -> dict:
    """In the server: answer requests until stdin closes (then exit). Returns only in a forked child."""
    sys.path[0] = os.getcwd()  # as `python -m` has it (not this file's directory)
    for module in preload:
        importlib.import_module(module)

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in requests:
        request = json.loads(line)
        if request.get("detach"):
            # A server: forked twice, so this loop goes on at once. The middle process exits as soon as the
            # server is forked; the server, orphaned, goes to the nearest subreaper: the test process,
            # which waits for it as for any child (conftest.ForkedProcess).
            read_end, write_end = os.pipe()
            middle = os.fork()
            if middle == 0:
                os.close(read_end)
                server = os.fork()
                if server == 0:
                    os.close(write_end)
                    os.setsid()  # a process group of its own, led by the server, as Popen's start_new_session
                    return request
                os.write(write_end, str(server).encode())
                os._exit(0)
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                server_pid = int(pipe.read())
            os.waitpid(middle, 0)
            replies.write(json.dumps({"pid": server_pid}).encode() + b"\n")
            replies.flush()
            continue
        pid = os.fork()
        if pid == 0:
            return request
        replies.write(json.dumps({"pid": pid}).encode() + b"\n")
        replies.flush()
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
        replies.flush()
    sys.exit(0)


_module, *_preload = sys.argv[1:]
_request = _serve(_preload)
# Only a forked child gets here: become the command's process.
os.environ.clear()
os.environ.update(_request["env"])
_stdin = os.open(os.devnull, os.O_RDONLY)
_flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if _request.get("append") else os.O_TRUNC)
_stdout = os.open(_request["stdout"], _flags, 0o600)
# A server's log takes both streams on one file description (as Popen's stderr=STDOUT).
_stderr = os.dup(_stdout) if _request["stderr"] == _request["stdout"] else os.open(_request["stderr"], _flags, 0o600)
for _fd, _target in ((_stdin, 0), (_stdout, 1), (_stderr, 2)):
    os.dup2(_fd, _target)
    os.close(_fd)
sys.argv = [_module.rpartition(".")[2], *_request["args"]]
del _request, _preload, _flags, _stdin, _stdout, _stderr, _fd, _target

import atexit  # noqa: E402
import runpy  # noqa: E402
import threading  # noqa: E402

try:
    runpy.run_module(_module, run_name="__main__", alter_sys=True)
    _code = 0
except SystemExit as _exit:
    # As the interpreter treats SystemExit: None is 0, an int is the status, anything else is printed (1).
    if _exit.code is None or isinstance(_exit.code, int):
        _code = _exit.code or 0
    else:
        print(_exit.code, file=sys.stderr)
        _code = 1
except BaseException:  # an uncaught exception: its traceback on stderr, status 1
    sys.excepthook(*sys.exc_info())
    _code = 1
# What the interpreter does on the way out, short of freeing every object one by one: in a forked copy of
# a process that imported all of modeldex, that alone takes ~0.3 s (each page touched is copied first).
threading._shutdown()  # type: ignore[attr-defined]  # wait for non-daemon threads, as at exit
atexit._run_exitfuncs()
sys.stdout.flush()
sys.stderr.flush()
os._exit(_code)
