"""Throwaway gRPC server for devstack tests: serves only grpc.health.v1 on MEDBENCH_GRPC_PORT."""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> int:
    name = os.environ["MEDBENCH_SERVICE_NAME"]
    port = int(os.environ["MEDBENCH_GRPC_PORT"])
    # Per-service behaviour, so one stack can mix healthy and broken fakes.
    behaviour = os.environ.get(f"FAKE_HEALTH_{name.upper()}", "serving")
    peers = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith("MEDBENCH_PEERS__"))
    print(f"{name}: pid={os.getpid()} behaviour={behaviour} peers={' '.join(peers)}", flush=True)
    if behaviour == "exit":
        print(f"{name}: exiting on purpose", flush=True)
        return 3

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if behaviour == "serving"
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    servicer.set("", status)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"{name}: listening on 127.0.0.1:{port}", flush=True)

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    stopping.wait()
    server.stop(grace=1).wait()
    print(f"{name}: stopped cleanly", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
