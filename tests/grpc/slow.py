"""Clients of the public gRPC listener that misbehave on purpose, frame by frame (the h2
package): each must be cut off in time, and the listener must keep serving. Run by
tests/tests/grpc.rs against a node whose header and body deadlines are 1 s.

Settings: CUTTLE_GRPC_HOST, CUTTLE_GRPC_PORT (plain HTTP/2), CUTTLE_KEY, CUTTLE_LIMIT_SECS (what
each misbehaving client may hold the node at most). Prints one line per check; exits non-zero
with the reason on the first failure.
"""

import os
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events

HOST = os.environ["CUTTLE_GRPC_HOST"]
PORT = int(os.environ["CUTTLE_GRPC_PORT"])
LIMIT = float(os.environ.get("CUTTLE_LIMIT_SECS", "5"))


def check(cond, what):
    if not cond:
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}", flush=True)


def closed_within(sock, seconds):
    """Seconds until the node closed `sock` (reading and dropping what it sent), or None."""
    started = time.time()
    sock.settimeout(0.2)
    while time.time() - started < seconds:
        try:
            if sock.recv(65536) == b"":
                return time.time() - started
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.time() - started
    return None


def connect():
    return socket.create_connection((HOST, PORT), timeout=5)


def h2_connection(sock):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return conn


def main():
    # 1. A TCP connection that never says anything.
    s = connect()
    took = closed_within(s, LIMIT)
    check(took is not None, f"a silent connection is closed (after {took} s)")

    # 2. HTTP/2 started, but no call ever.
    s = connect()
    h2_connection(s)
    took = closed_within(s, LIMIT)
    check(took is not None, f"an HTTP/2 connection with no call is closed (after {took} s)")

    # 3. A call whose one message never arrives whole: 5 bytes say 10 follow, 2 come.
    s = connect()
    conn = h2_connection(s)
    conn.send_headers(1, [
        (":method", "POST"), (":scheme", "http"), (":authority", f"{HOST}:{PORT}"),
        (":path", "/cuttle.v1.Tasks/Get"), ("content-type", "application/grpc"),
        ("te", "trailers"), ("x-api-key", os.environ["CUTTLE_KEY"]),
    ])
    conn.send_data(1, b"\x00\x00\x00\x00\x0a\x0a\x02")
    s.sendall(conn.data_to_send())
    started = time.time()
    status = None
    s.settimeout(0.5)
    while status is None and time.time() - started < LIMIT:
        try:
            data = s.recv(65536)
        except socket.timeout:
            continue
        if not data:
            break
        for event in conn.receive_data(data):
            headers = getattr(event, "headers", None)
            if headers:
                found = dict((bytes(k), bytes(v)) for k, v in headers)
                status = found.get(b"grpc-status", status)
        s.sendall(conn.data_to_send())
    took = time.time() - started
    check(status == b"4", f"a request that never arrives whole ends DEADLINE_EXCEEDED "
                          f"(grpc-status {status!r} after {took:.1f} s)")
    print("all checks passed", flush=True)


if __name__ == "__main__":
    main()
