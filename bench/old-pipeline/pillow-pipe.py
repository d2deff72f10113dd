"""Pillow's preprocessing in a long-lived process, for the in-process reference.

usage: pillow-pipe.py
Reads requests from standard input: a 4-byte little-endian length, then that
many bytes of an encoded photo. Answers each on standard output: 4 bytes
little-endian float32 milliseconds (perf_counter around decode..contiguous
CHW float32 copy, the old server's preprocessing run in-process), then the
(3, 224, 224) float32 tensor, 602112 bytes. Stops when standard input ends.
No gRPC, no sockets: what Pillow alone costs per photo, timed inside Python.
"""
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from server import SIZE, reference_preprocess  # noqa: E402  (server.py's own loader of test/pil/reference.py)


def main():
    preprocess = reference_preprocess(SIZE)
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = inp.read(4)
        if len(head) < 4:
            return
        (n,) = struct.unpack("<I", head)
        data = inp.read(n)
        t = time.perf_counter()
        _, chw = preprocess(data)
        chw = np.ascontiguousarray(chw, dtype=np.float32)
        ms = (time.perf_counter() - t) * 1000
        out.write(struct.pack("<f", ms))
        out.write(chw.tobytes())
        out.flush()


main()
