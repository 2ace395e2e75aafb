"""Watches a node's gRPC health (grpc.health.v1.Health/Watch, no key) until it says
NOT_SERVING: prints each status it hears and exits 0 once it has heard SERVING and then
NOT_SERVING, 1 if the stream ends or CUTTLE_WAIT_SECS pass first.

Settings: CUTTLE_GRPC_TARGET (host:port, plain HTTP/2), CUTTLE_WAIT_SECS, and a file named by
CUTTLE_READY_FILE, written once SERVING was heard (so the caller knows when to stop the node).
"""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main():
    channel = grpc.insecure_channel(os.environ["CUTTLE_GRPC_TARGET"])
    health = health_pb2_grpc.HealthStub(channel)
    seen = []
    try:
        for answer in health.Watch(health_pb2.HealthCheckRequest(service="cuttle.v1.Tasks"),
                                   timeout=float(os.environ.get("CUTTLE_WAIT_SECS", "60"))):
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            print(status, flush=True)
            seen.append(status)
            if status == "SERVING":
                with open(os.environ["CUTTLE_READY_FILE"], "w") as f:
                    f.write("serving\n")
            if status == "NOT_SERVING" and "SERVING" in seen:
                return 0
    except grpc.RpcError as e:
        print(f"the stream ended: {e.code().name} {e.details()}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
