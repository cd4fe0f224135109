"""Start n threads at one instant (a barrier) and collect what each returned or raised: the race
harness shared by the claim and output-guard tests."""

from __future__ import annotations

import threading


def release_together(fn, n: int) -> list:
    """Call fn(i) for i in range(n) from n threads released together; result or exception per i."""
    barrier = threading.Barrier(n)
    results = [None] * n

    def one(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # returned, so the caller's assertions show it
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
