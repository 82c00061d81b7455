"""A real OpenID Connect provider for the tests: panva's `oidc-provider` from npm (the library behind
many Node identity servers), run by `tests/idp/server.mjs` with Node.

It is installed on first use into the user's cache (`~/.cache/modeldex-tests/oidc-provider-VERSION/`, shared by
every clone, as the LiteLLM venv is), and run from `.node-oidc/` beside the repo's `.venv/` (git-ignored),
whose `node_modules` links there. The tests
hold its private keys (they generate them and hand them to it), so they can both get tokens the proper
way (the client_credentials grant) and forge the ones an attacker would send. Restarting it with other
keys on the same port is a key rotation.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from .postgres import free_port
from .tool_cache import CACHE, install_once, run_installer

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / ".node-oidc"
VERSION = "9.6.0"
PACKAGE = f"oidc-provider@{VERSION}"
CACHE_DIR = CACHE / f"oidc-provider-{VERSION}"
SCRIPT = Path(__file__).resolve().parent / "idp" / "server.mjs"
AUDIENCE = "https://modeldex.test"
SECRET = "client-secret-" + "x" * 32


def ensure_installed() -> Path:
    """The folder holding oidc-provider, installing it first if needed (a few seconds from npm)."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"the identity provider tests need Node.js 20+ and npm ({' and '.join(missing)} not found)")

    def install() -> None:
        CACHE_DIR.mkdir(exist_ok=True)
        (CACHE_DIR / "package.json").write_text('{"name": "modeldex-test-idp", "private": true}\n')
        run_installer(["npm", "install", "--no-audit", "--no-fund", "--silent", PACKAGE], PACKAGE, timeout=600,
                      cwd=CACHE_DIR)

    install_once(CACHE_DIR, PACKAGE, install)
    NODE_DIR.mkdir(exist_ok=True)
    with open(ROOT / ".node-oidc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # ES modules resolve packages from the script's own folder: the script runs from there, beside a link
        # to the installed packages.
        modules, target = NODE_DIR / "node_modules", CACHE_DIR / "node_modules"
        if not (modules.is_symlink() and modules.readlink() == target):
            if modules.is_symlink():
                modules.unlink()
            else:  # absent, or installed in the folder itself by an earlier version of this file
                shutil.rmtree(modules, ignore_errors=True)
            modules.symlink_to(target)
        shutil.copyfile(SCRIPT, NODE_DIR / "server.mjs")
    return NODE_DIR


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    @property
    def public(self) -> Any:
        return self.private.public_key()

    def private_jwk(self) -> dict[str, Any]:
        maker = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[self.alg]
        jwk: dict[str, Any] = maker.to_jwk(self.private, as_dict=True)  # type: ignore[attr-defined]
        jwk.pop("key_ops", None)  # oidc-provider wants `use` alone
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=self.alg, headers={"kid": self.kid, **(headers or {})})


def new_key(kid: str, alg: str) -> SigningKey:
    if alg == "RS256":
        return SigningKey(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=2048))
    if alg == "ES256":
        return SigningKey(kid, alg, ec.generate_private_key(ec.SECP256R1()))
    return SigningKey(kid, alg, ed25519.Ed25519PrivateKey.generate())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"", hmac_key: bytes | None = None) -> str:
    """A token as an attacker writes it: any header, any claims, any (or an HMAC) signature."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@dataclass
class Client:
    id: str
    alg: str
    groups: list[str] | None = None


class IdentityProvider:
    """oidc-provider on a fixed port (kept across restarts: the issuer URL must not change)."""

    def __init__(self, tmp: Path, clients: list[Client], keys: list[SigningKey], ttl: int = 300,
                 jwks_max_age: int | None = None) -> None:
        self.dir = ensure_installed()
        self.tmp = tmp
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients = clients
        self.keys = keys
        self.ttl = ttl
        self.jwks_max_age = jwks_max_age  # Cache-Control: max-age on its key set, when given
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = tmp / "idp.log"
        self.start()

    def start(self) -> None:
        config = {"issuer": self.issuer, "port": self.port, "audience": AUDIENCE, "ttl": self.ttl,
                  "keys": [key.private_jwk() for key in self.keys],
                  "clients": [{"id": c.id, "secret": SECRET, "alg": c.alg, "groups": c.groups} for c in self.clients]}
        if self.jwks_max_age is not None:
            config["jwks_max_age"] = self.jwks_max_age
        config_path = self.tmp / "idp.json"
        config_path.write_text(json.dumps(config))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["node", "server.mjs", str(config_path)], cwd=self.dir, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        with httpx.Client(timeout=1) as http:  # one client for the polls: making one costs ~20 ms of CPU
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"oidc-provider exited:\n{self.log_path.read_text()}")
                try:
                    if http.get(self.issuer + "/.well-known/openid-configuration").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"oidc-provider did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def rotate(self, keys: list[SigningKey]) -> None:
        """Serve (and sign with) other keys from now on, as a provider rotating its keys does."""
        self.stop()
        self.keys = keys
        self.start()

    def token(self, client_id: str) -> str:
        """An access token for `client_id` through the client_credentials grant."""
        response = httpx.post(self.issuer + "/token", timeout=10, data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET,
            "scope": "models", "resource": AUDIENCE})
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def jwks_requests(self) -> int:
        return int(httpx.get(self.issuer + "/__jwks_requests", timeout=5).json()["count"])

    def key(self, alg: str) -> SigningKey:
        return next(key for key in self.keys if key.alg == alg)
