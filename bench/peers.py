"""The peer users would otherwise pick: LiteLLM's proxy, configured with the same models.

It lives in its own venv (bench/.venv-peers, made on first use) so it never touches the project's. Its
models routes answer from its config; the upstream `api_base` is a closed loopback port that is never
called, and the environment keeps it offline (local cost map, no telemetry, no database).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from procs import HOST, Server, free_port, http_ok

VENV = Path(__file__).resolve().parent / ".venv-peers"
MASTER_KEY = "sk-bench-litellm-master-0000"
UNUSED_UPSTREAM = "http://127.0.0.1:9/v1"  # discard port on loopback: nothing is listening, nothing is sent


# The suite's (tests/litellm_proxy.py), in the user's cache.
TESTS_VENV = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modeldex-tests" / "litellm-1.108.7"


def ensure_litellm() -> Path:
    """The litellm executable: the peers venv's, else the test suite's, else installed into the peers venv."""
    binary = VENV / "bin" / "litellm"
    if binary.exists():
        return binary
    if (TESTS_VENV / "bin" / "litellm").exists():
        return TESTS_VENV / "bin" / "litellm"
    print(f"bench: installing litellm[proxy] into {VENV} (once; takes a few minutes)", file=sys.stderr)
    if not (VENV / "bin" / "pip").exists():
        _run([sys.executable, "-m", "venv", str(VENV)])
    _run([str(VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"])
    if not binary.exists():
        raise RuntimeError("pip installed litellm[proxy] but there is no litellm executable")
    return binary


def _run(argv: list[str]) -> None:
    """Run an install step; a failure says what the tool said, not only its exit code."""
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        said = (result.stderr or result.stdout).strip().splitlines()
        raise RuntimeError(f"{' '.join(argv[:3])} failed: {said[-1] if said else result.returncode}")


def write_config(directory: Path, model_ids: list[str], routes: dict[str, str] | None = None) -> Path:
    """config.yaml (JSON is YAML) listing the same models, and a master key; `routes` (model -> an upstream's
    OpenAI base URL, asked for model `m`) for the gateway scenarios."""
    config = {
        "model_list": [{"model_name": model_id,
                        "litellm_params": {"model": f"openai/{model_id}", "api_base": UNUSED_UPSTREAM,
                                           "api_key": "x"}}
                       for model_id in model_ids] + [
                       {"model_name": model_id, "litellm_params": {"model": "openai/m", "api_base": base,
                                                                   "api_key": "x"}}
                       for model_id, base in (routes or {}).items()],
        "general_settings": {"master_key": MASTER_KEY},
        "litellm_settings": {"telemetry": False},
    }
    path = directory / "litellm-config.yaml"
    path.write_text(json.dumps(config, indent=1))
    return path


def write_log_config(directory: Path) -> Path:
    """Uvicorn logging without the access log, as modeldex runs with --no-access-log."""
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "WARNING"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    }
    path = directory / "litellm-logging.json"
    path.write_text(json.dumps(config))
    return path


def offline_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("MODELDEX_", "LITELLM_", "OPENAI_")) and name != "DATABASE_URL"}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
                "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true", "DISABLE_ADMIN_UI": "True",
                "HF_HUB_OFFLINE": "1", "NO_PROXY": "*", "no_proxy": "*"})
    return env


def start_litellm(directory: Path, model_ids: list[str], routes: dict[str, str] | None = None
                  ) -> tuple[Server, str, float]:
    """Start the proxy (one worker); returns it, its base URL and its startup time (to an authorized list)."""
    binary = ensure_litellm()
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(binary), "--config", str(write_config(directory, model_ids, routes)), "--host", HOST, "--port", str(port),
            "--num_workers", "1", "--log_config", str(write_log_config(directory))]
    server = Server("litellm", argv, directory / "litellm.log", env=offline_env(), cwd=directory)
    base = f"http://{HOST}:{port}"
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    startup = server.wait_ready(lambda: http_ok(f"{base}/v1/models", headers), timeout=180)
    return server, base, startup
