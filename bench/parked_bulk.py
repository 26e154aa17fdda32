#!/usr/bin/env python3
"""A bulk echo through one TLS 1.3 connection after it has been idle (bench/parked_bulk.sh).

parked_bulk.py PORT SERVER_PID MB IDLE_S CERTS_DIR: a client with CERTS_DIR's client
certificate makes one round trip, stays idle IDLE_S seconds (long enough for mtls server to
park the connection), then sends MB MiB while a thread reads the echo; prints the wall time,
MB/s and the server's CPU seconds per GiB over the transfer. Benchmark code, not part of mtls.
"""
import os
import socket
import ssl
import sys
import threading
import time

port, pid, mb, idle, certs = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                              float(sys.argv[4]), sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(os.path.join(certs, "ca.pem"))
ctx.load_cert_chain(os.path.join(certs, "client-chain.pem"), os.path.join(certs, "client.key"))
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="server.test")
s.sendall(b"x")
s.recv(1)
time.sleep(idle)


def cpu():
    f = open("/proc/%d/stat" % pid).read().split(")")[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


total = mb * 1024 * 1024
got = [0]


def reader():
    while got[0] < total:
        d = s.recv(65536)
        if not d:
            break
        got[0] += len(d)


c0, t0 = cpu(), time.time()
th = threading.Thread(target=reader)
th.start()
buf = b"b" * 65536
sent = 0
while sent < total:
    s.sendall(buf)
    sent += len(buf)
th.join()
t1, c1 = time.time(), cpu()
if got[0] != total:
    sys.exit("echoed %d of %d bytes" % (got[0], total))
print("mb=%d seconds=%.2f mb_per_s=%.1f server_cpu_s_per_gb=%.2f"
      % (mb, t1 - t0, mb / (t1 - t0), (c1 - c0) / (mb / 1024)))
