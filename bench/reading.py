"""What reading with integrity checks costs, measured in one run (no teacher).

1. Compressed files are checked whole before use (`pipelines.readers`: the end of every gzip
   member / zstd frame must be seen): one extra decompression pass. Printed: documents/s of
   `read_unit` on a `.jsonl.zst` and a `.jsonl.gz`, the time of the integrity pass alone and its
   share of the reader's time. The cost to hold against it: the real SmolLM2-135M teacher
   forwards ~290 tokens/s on 2 cores, i.e. it spends hours on what the reader reads in a second.
2. Byte-range units of a remote JSONL file (`s3://` on a local moto server, started here):
   documents/s of `read_unit` over the file's units, and the same file read from local disk,
   as a ratio. fsspec's `readline` on a remote file copies up to a whole block (s3fs: 50 MB) per
   line; the reader reads 64 KiB at a time from the block cache instead.

Usage: python -m bench.reading [--documents 16000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

WORDS = (
    "the of and to in is was for on that with as by at from river mountain city music science history language "
    "school market ocean forest train garden winter summer light stone paper window story number"
).split()


def corpus(n: int) -> bytes:
    rng = random.Random(0)
    return "".join(
        json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(100, 300)))}) + "\n" for _ in range(n)
    ).encode()


def timed(fn) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(3):
        t = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - t)
    return best, n


def read_all(uri: str, bytes_per_unit: int = 64 << 20) -> int:
    from pipelines.sources import Doc, expand_inputs, plan_units, read_unit

    units = plan_units(expand_inputs([uri]), 50_000, bytes_per_unit)
    return sum(isinstance(item, Doc) for u in units for item in read_unit(u, "text"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--documents", type=int, default=16000)
    args = ap.parse_args(argv)
    import zstandard

    body = corpus(args.documents)
    tmp = tempfile.mkdtemp(prefix="bench-reading-")
    print(f"corpus: {args.documents} documents, {len(body) / 1e6:.1f} MB of JSONL")
    from pipelines.readers import count_lines

    print("| input | read_unit documents/s | integrity pass alone (s) | share of read_unit time |")
    print("|---|---|---|---|")
    for comp, data in (
        ("zst", zstandard.ZstdCompressor(write_checksum=True).compress(body)),
        ("gz", gzip.compress(body)),
    ):
        path = os.path.join(tmp, f"a.jsonl.{comp}")
        with open(path, "wb") as f:
            f.write(data)
        t_read, n = timed(lambda: read_all(path))
        t_check, m = timed(lambda: count_lines(path, comp))
        assert n == m == args.documents
        print(
            f"| .jsonl.{comp} ({len(data) / 1e6:.1f} MB) | {n / t_read:,.0f} | {t_check:.3f} | {t_check / t_read:.0%} |"
        )

    port = free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    os.environ.update(env)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import boto3

        from schemas import storage

        for attempt in range(600):  # moto takes a while to start on a busy machine
            try:
                boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1").create_bucket(
                    Bucket="bench-reading"
                )
                break
            except Exception:
                if attempt == 599:
                    raise
                time.sleep(0.2)
        storage.write_bytes_atomic("s3://bench-reading/a.jsonl", body)
        local = os.path.join(tmp, "a.jsonl")
        with open(local, "wb") as f:
            f.write(body)
        t_s3, n = timed(lambda: read_all("s3://bench-reading/a.jsonl"))
        t_local, m = timed(lambda: read_all(local))
        assert n == m == args.documents
        print()
        print("| input | read_unit documents/s | same file on local disk, documents/s | time ratio s3 / local |")
        print("|---|---|---|---|")
        print(f"| .jsonl byte ranges on s3 (moto) | {n / t_s3:,.0f} | {m / t_local:,.0f} | {t_s3 / t_local:.2f} |")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
