"""Latency on the wire: from a tcpdump capture of one server port, the time
from each request's first segment to its answer's first segment, per
connection (one request at a time on each, as wrk sends them). It sees
neither the load generator's own delays nor the server's after its answer
left, which wrk's own percentiles include.

  wire.py CAPTURE PORT   (a classic pcap file, as `tcpdump -w` writes)

Prints "wire: N answers, p50 … p99 … max … ms".
"""
import struct, sys


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        scale = 1e9 if magic == 0xA1B23C4D else 1e6
        link = struct.unpack("<I", head[20:24])[0]
        ip_at = {1: 14, 113: 16, 0: 4}[link]  # Ethernet (lo), Linux cooked, BSD loopback
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            sec, frac, kept, _ = struct.unpack("<IIII", record)
            data = f.read(kept)
            ip = data[ip_at:]
            ihl = (ip[0] & 15) * 4
            tcp = ip[ihl:]
            src, dst = struct.unpack(">HH", tcp[:4])
            data_at = (tcp[12] >> 4) * 4
            length = struct.unpack(">H", ip[2:4])[0] - ihl - data_at
            yield sec + frac / scale, src, dst, length, tcp[data_at:data_at + 8]


def main(path, port):
    asked = {}
    waits = []
    for t, src, dst, length, start in packets(path):
        if length == 0:
            continue
        if dst == port and (start.startswith(b"POST ") or start.startswith(b"GET ")):
            asked[src] = t
        elif src == port and start.startswith(b"HTTP/") and dst in asked:
            waits.append(t - asked.pop(dst))
    waits.sort()
    if not waits:
        print("wire: no answers in the capture")
        return
    at = lambda q: waits[min(len(waits) - 1, int(q * len(waits)))] * 1000
    print(f"wire: {len(waits)} answers, p50 {at(0.5):.2f} ms, p99 {at(0.99):.2f} ms, max {waits[-1] * 1000:.2f} ms")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
