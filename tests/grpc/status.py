"""Calls `Tasks.List` on a node until it answers with the status code CUTTLE_EXPECT names (OK,
UNAVAILABLE, …), for at most CUTTLE_WAIT_SECS: prints what it got and exits 0 once it has it.

Settings: CUTTLE_GRPC_TARGET (plain HTTP/2), CUTTLE_KEY, CUTTLE_PROTO_DIR, CUTTLE_EXPECT,
CUTTLE_WAIT_SECS.
"""

import os
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(__file__))
from client import generate  # noqa: E402


def main():
    generate(os.environ["CUTTLE_PROTO_DIR"])
    from cuttle.v1 import tasks_pb2, tasks_pb2_grpc

    tasks = tasks_pb2_grpc.TasksStub(grpc.insecure_channel(os.environ["CUTTLE_GRPC_TARGET"]))
    want = os.environ["CUTTLE_EXPECT"]
    deadline = time.time() + float(os.environ.get("CUTTLE_WAIT_SECS", "30"))
    got = None
    while time.time() < deadline:
        started = time.time()
        try:
            tasks.List(tasks_pb2.ListTasksRequest(limit=1),
                       metadata=[("x-api-key", os.environ["CUTTLE_KEY"])], timeout=60)
            got = "OK"
        except grpc.RpcError as e:
            got = e.code().name
            detail = e.details()
        took = time.time() - started
        print(f"{got} after {took:.2f} s", flush=True)
        if got == want:
            print("all checks passed", flush=True)
            return 0
        time.sleep(0.2)
    print(f"FAIL: never {want}; last {got}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
