"""Cost of moving one large file through each kind of location, measured side by side.

Puts a file of ``--mb`` MiB (random bytes) and gets it back through: a local directory
(``LocalStorage``: copy to a temporary name and rename), the driver's file service on 127.0.0.1
(``DriverFilesStorage``), and moto's S3 server (``RemoteStorage`` over pyarrow, moto in a child
process). The median of ``--runs`` runs per operation; ratios are to the local copy.

    python bench/storage.py [--mb 100] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from s3server import MotoS3, with_env  # noqa: E402

from elearn.storage.driverfs import DriverFiles, new_token  # noqa: E402
from elearn.storage.stores import open_storage  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "big.bin")
        with open(src, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))
        moto = MotoS3(os.path.join(tmp, "moto.log")).start()
        restore = with_env(moto.env())
        service = DriverFiles({"app": os.path.join(tmp, "driver")}, new_token(), host="127.0.0.1").start()
        try:
            moto.create_bucket("bench")
            stores = {
                "local copy": open_storage(os.path.join(tmp, "local")),
                "driver file service": open_storage(os.path.join(tmp, "driver", "x"),
                                                    driver=service.endpoint("127.0.0.1")),
                "S3 (moto)": open_storage("s3://bench/x"),
            }
            rows = []
            for name, st in stores.items():
                puts, gets = [], []
                for i in range(args.runs):
                    puts.append(timed(lambda: st.put_file(src, "big.bin")))
                    back = os.path.join(tmp, f"back-{i}.bin")
                    gets.append(timed(lambda: st.get_file("big.bin", back)))
                    assert os.path.getsize(back) == os.path.getsize(src)
                    os.unlink(back)
                rows.append((name, statistics.median(puts), statistics.median(gets)))
        finally:
            service.stop()
            restore()
            moto.stop()
    base_put, base_get = rows[0][1], rows[0][2]
    print(f"{args.mb} MiB file, median of {args.runs} runs")
    print("| location | put | get | put / local | get / local | put MiB/s | get MiB/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, put, get in rows:
        print(f"| {name} | {put:.2f} s | {get:.2f} s | {put / base_put:.1f} | {get / base_get:.1f} | "
              f"{args.mb / put:.0f} | {args.mb / get:.0f} |")


if __name__ == "__main__":
    main()
