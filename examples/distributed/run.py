"""Start the worker, service B and service A together, send a few orders, run until Ctrl-C.

    python run.py             # against `make up` (or any DashFrog at DASHFROG_KAFKA_BOOTSTRAP)
    python run.py --orders 0  # just the services

Needs Redis on 127.0.0.1:6379 (CELERY_BROKER_URL to change it).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
A_PORT, B_PORT = 8001, 8002


def start(service: str, argv: list[str]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DASHFROG_SERVICE_NAME": service, "PAYMENTS_URL": f"http://127.0.0.1:{B_PORT}"}
    return subprocess.Popen(argv, cwd=HERE, env=env)


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=5, help="orders to place once the services are up")
    args = parser.parse_args()
    children = [
        start("fulfilment", [str(BIN / "celery"), "-A", "worker", "worker", "--pool=solo", "--loglevel=INFO"]),
        start("payments", [str(BIN / "uvicorn"), "service_b:app", "--port", str(B_PORT)]),
        start("orders", [str(BIN / "uvicorn"), "service_a:app", "--port", str(A_PORT)]),
    ]
    try:
        a = f"http://127.0.0.1:{A_PORT}"
        wait_healthy(f"http://127.0.0.1:{B_PORT}")
        wait_healthy(a)
        customers = ["acme-corp", "globex", "initech"]
        for i in range(args.orders):
            order = {"items": ["sku-1", "sku-2"], "amount": 1500 if i % 5 == 4 else 40 + i,
                     "flaky_warehouse": i % 3 == 1}
            body = httpx.post(f"{a}/orders/{customers[i % 3]}", json=order, timeout=10).json()
            print(f"order for {customers[i % 3]}: {body['status']}  flow {body['flow_id']}")
        print("Ctrl-C to stop. The flows: curl 'http://127.0.0.1:8000/api/flows?name=order_fulfilment'")
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
