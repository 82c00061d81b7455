"""Tokens from an identity provider against API keys: retrieve and list on one `modeldex serve`, with an
API key and with a JWT (ES256, from an issuer configured with its public key), in alternating rounds of
the same run, so both meet the same machine state.

    .venv/bin/python bench/identity.py [--seconds 2] [--rounds 3] [--connections 16]

Two figures per scenario: requests per second (the client is Python/aiohttp, so this is a floor that
the client may bound), and the server's CPU time per request (its processes' utime+stime from /proc,
which neither the client nor other load on a shared machine distorts much: on a busy machine, read the
CPU ratio). The bar (issue 15): JWT ≥ 0.9× the API key. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import jwt
import uvloop
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

sys.path.insert(0, str(Path(__file__).parent))
from modeldex_server import cli, create_key, make_catalog, start_modeldex
from procs import cpu_seconds, process_tree, stop_all

ISSUER = "https://login.bench.test"
AUDIENCE = "modeldex"
SCENARIOS = (("retrieve", "/v1/models/MiniMax-M3"), ("list", "/v1/models"))


async def load(url: str, token: str, seconds: float, connections: int) -> int:
    """Requests answered 200 within `seconds`, with `connections` kept-alive connections."""
    headers = {"authorization": f"Bearer {token}"}
    deadline = time.perf_counter() + seconds
    done = [0]

    async def worker(session: aiohttp.ClientSession) -> None:
        while time.perf_counter() < deadline:
            async with session.get(url, headers=headers) as response:
                assert response.status == 200, await response.text()
                await response.read()
                done[0] += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(worker(session) for _ in range(connections)))
    return done[0]


def server_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=1.0, help="per round and credential")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="modeldex-bench-identity-"))
    url = make_catalog(work / "db")
    key = create_key(url, "bench").split()[0]
    signing = ec.generate_private_key(ec.SECP256R1())
    pem = work / "issuer.pem"
    pem.write_bytes(signing.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    cli("issuers", "add", "bench", "--issuer", ISSUER, "--public-key", str(pem), "--audience", AUDIENCE,
        "--algorithm", "ES256", "--database-url", url)
    now = int(time.time())
    token = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "iat": now, "exp": now + 3600},
                       signing, algorithm="ES256")
    server, base, _startup = start_modeldex(url, 1, work, probe="/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        rows = []
        for name, path in SCENARIOS:
            rates: dict[str, list[float]] = {"API key": [], "JWT": []}
            cpu: dict[str, list[float]] = {"API key": [], "JWT": []}
            uvloop.run(load(base + path, token, 0.5, args.connections))  # warm-up: the token verified once
            for _ in range(args.rounds):
                for credential, bearer in (("API key", key), ("JWT", token)):
                    cpu_before = server_cpu(server.pid)
                    count = uvloop.run(load(base + path, bearer, args.seconds, args.connections))
                    rates[credential].append(count / args.seconds)
                    cpu[credential].append((server_cpu(server.pid) - cpu_before) / count * 1e6)
            rows.append((name, statistics.median(rates["API key"]), statistics.median(rates["JWT"]),
                         statistics.median(cpu["API key"]), statistics.median(cpu["JWT"])))
        print(f"{args.rounds} alternating rounds of {args.seconds:g} s per credential, {args.connections} "
              "connections, 1 worker; medians\n")
        print("| scenario | API key req/s | JWT req/s | JWT/key | server CPU per request: key | JWT | key/JWT |")
        print("|---|---|---|---|---|---|---|")
        for name, key_rate, jwt_rate, key_cpu, jwt_cpu in rows:
            print(f"| {name} | {key_rate:.0f} | {jwt_rate:.0f} | {jwt_rate / key_rate:.2f}× "
                  f"| {key_cpu:.1f} µs | {jwt_cpu:.1f} µs | {key_cpu / jwt_cpu:.2f}× |")
    finally:
        stop_all()


if __name__ == "__main__":
    main()
