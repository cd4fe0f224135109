"""The perfect-teacher toy: how much each KD form biases a student against a truncated teacher.

`python -m bench.kd_toy` prints the table. A teacher that knows the true next-token distribution p
of C contexts is truncated top-p-k (as the pipeline stores it); a student with free logits (one
row per context, no model to limit it) is trained on (1 - alpha) * LM + alpha * KD, the LM term on
tokens sampled from p. With unlimited capacity the best student is q = p, so what it ends with,
the excess cross-entropy KL(p || q) averaged over contexts, is the bias of the KD form plus the
LM term's sampling noise (the LM-only row). `toy_excess` is also what tests/test_losses.py runs on
the shipped pd_best settings.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from schemas.codecs import lossless_decoded
from schemas.truncation import truncate_tensor
from trainer.losses import LossSpec, TeacherBatch, distill_loss


def true_distributions(contexts: int, vocab: int, seed: int, spread: float = 4.0) -> torch.Tensor:
    """[C, V] log-probabilities with a heavy, LLM-like tail (Gaussian logits, std ``spread``)."""
    g = torch.Generator().manual_seed(seed)
    return torch.log_softmax(torch.randn(contexts, vocab, generator=g, dtype=torch.float64) * spread, -1)


def truncated_teacher(log_p: torch.Tensor, top_p: float, top_k: int) -> TeacherBatch:
    """The stored teacher signal for each context, as the collator hands it over ([1, C, K])."""
    dec = lossless_decoded(truncate_tensor(log_p.float(), top_p, top_k))
    contexts = log_p.shape[0]
    return TeacherBatch.from_kept([dec], contexts, top_k, np.ones((1, contexts), dtype=bool))


def toy_excess(
    *,
    kind: str = "forward_kl",
    support: str = "full",
    tail: bool = False,
    tau: float = 1.0,
    tau_squared: bool = False,
    alpha: float = 0.9,
    contexts: int = 32,
    vocab: int = 1000,
    top_p: float = 0.95,
    top_k: int = 50,
    steps: int = 150,
    samples: int = 16,
    lr: float = 0.2,
    seed: int = 0,
) -> dict:
    """Train the free student; return {"excess": mean KL(p || q) in nats, "dropped": mean tail mass}.

    Single-threaded (restored after): ~1 s of CPU; thread pools only add overhead at this size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _toy(
            kind, support, tail, tau, tau_squared, alpha, contexts, vocab, top_p, top_k, steps, samples, lr, seed
        )
    finally:
        torch.set_num_threads(threads)


def _toy(kind, support, tail, tau, tau_squared, alpha, contexts, vocab, top_p, top_k, steps, samples, lr, seed):
    log_p = true_distributions(contexts, vocab, seed)
    teacher = truncated_teacher(log_p, top_p, top_k)
    expand = TeacherBatch(
        *(
            v.expand(samples, *v.shape[1:])
            for v in (teacher.ids, teacher.logp, teacher.mask, teacher.log_tail, teacher.position_mask)
        )
    )
    spec = LossSpec(kind=kind, support=support, tau=tau, tail=tail, tau_squared=tau_squared)
    x = torch.zeros(1, contexts, vocab, requires_grad=True)
    opt = torch.optim.Adam([x], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)  # decays the LM term's sampling noise
    g = torch.Generator().manual_seed(seed + 1)
    p = log_p.exp().float()
    for _ in range(steps):
        labels = torch.multinomial(p, samples, replacement=True, generator=g).T  # [S, C]
        logits = x.expand(samples, contexts, vocab)
        res = distill_loss(logits, labels, expand, spec, alpha=alpha)
        opt.zero_grad()
        res.loss.backward()
        opt.step()
        sched.step()
    log_q = torch.log_softmax(x.detach()[0].double(), -1)
    excess = float((log_p.exp() * (log_p - log_q)).sum(-1).mean())
    dropped = float(teacher.log_tail.double().exp().mean())
    return {"excess": excess, "dropped": dropped}


FORMS = [  # (label, settings)
    ("LM only", dict(alpha=0.0)),
    ("full, tau 1", dict(support="full", tau=1.0)),
    ("full, tau 2", dict(support="full", tau=2.0)),
    ("full + tail bucket, tau 2", dict(support="full", tail=True, tau=2.0)),
    ("kept, tau 1", dict(support="kept", tau=1.0)),
    ("kept, tau 2", dict(support="kept", tau=2.0)),
    ("split, tau 1", dict(support="split", tau=1.0)),
    ("split, tau 2", dict(support="split", tau=2.0)),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kd_toy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="forward_kl")
    ap.add_argument("--seeds", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"perfect-teacher toy: 32 contexts, V 1000, top-0.95-50, alpha 0.9 (LM only: 0), kind {args.kind}")
    print(f"{'form':28s} {'excess KL(p||q), nats':>22s}")
    for label, kw in FORMS:
        t0 = time.perf_counter()
        vals = [toy_excess(kind=args.kind, seed=s, **kw) for s in range(args.seeds)]
        ex = np.array([v["excess"] for v in vals])
        print(
            f"{label:28s} {ex.mean():22.4f}   (dropped mass {vals[0]['dropped']:.3f}, {time.perf_counter() - t0:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
