#!/usr/bin/env python3
"""Timing of the RTP streams a server sent, from a pcap (classic format, IPv4/UDP).

Usage: rtp_timing.py CAPTURE.pcap FIRST_PORT LAST_PORT
Considers packets whose UDP source port is even and within [FIRST_PORT, LAST_PORT] (the
server's RTP range). For every stream (source port, destination) it measures each packet's
deviation from the 20 ms grid anchored at the stream's first packet, gaps between packets,
and sequence/timestamp continuity. Prints one line of figures; no dependencies.
"""
import struct
import sys


def packets(path, first, last):
    b = open(path, "rb").read()
    magic = b[:4]
    le = magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    e = "<" if le else ">"
    link = struct.unpack(e + "I", b[20:24])[0]
    skip = {1: 14, 113: 16, 276: 20, 0: 4}.get(link, 14)
    off = 24
    while off + 16 <= len(b):
        sec, frac, incl, _ = struct.unpack(e + "IIII", b[off:off + 16])
        data = b[off + 16:off + 16 + incl]
        off += 16 + incl
        t = sec + frac / (1e9 if nanos else 1e6)
        ip = data[skip:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        udp = ip[ihl:]
        if len(udp) < 20:
            continue
        sport, dport = struct.unpack(">HH", udp[:4])
        if not (first <= sport <= last) or sport % 2:
            continue
        rtp = udp[8:]
        if rtp[0] >> 6 != 2 or 200 <= rtp[1] <= 204:
            continue
        seq, ts = struct.unpack(">HI", rtp[2:8])
        yield (sport, dport), t, seq, ts, rtp[1] & 0x7F


def main():
    path, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    streams = {}
    for key, t, seq, ts, pt in packets(path, first, last):
        streams.setdefault(key, []).append((t, seq, ts, pt))
    devs, gaps_over_40, seq_jumps, ts_jumps, n = [], 0, 0, 0, 0
    for pkts in streams.values():
        audio = [p for p in pkts if p[3] in (0, 8)]
        if len(audio) < 10:
            continue
        t0 = audio[0][0]
        for i, (t, seq, ts, _) in enumerate(audio):
            n += 1
            devs.append(abs((t - t0) - i * 0.020) * 1000.0)
            if i:
                pt_, pseq, pts, _ = audio[i - 1]
                if t - pt_ > 0.040:
                    gaps_over_40 += 1
                if (seq - pseq) & 0xFFFF != 1:
                    seq_jumps += 1
                if (ts - pts) & 0xFFFFFFFF != 160:
                    ts_jumps += 1
    devs.sort()
    if not devs:
        print("streams=0 packets=0")
        return
    p = lambda q: devs[min(len(devs) - 1, int(len(devs) * q))]
    print(
        "streams=%d packets=%d grid_dev_ms_p50=%.2f p99=%.2f max=%.2f gaps_over_40ms=%d seq_jumps=%d ts_jumps=%d"
        % (len(streams), n, p(0.5), p(0.99), devs[-1], gaps_over_40, seq_jumps, ts_jumps)
    )


if __name__ == "__main__":
    main()
