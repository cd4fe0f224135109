"""Run under `composer -n 2` by tests/test_losses.py: each rank scores its share of one fixed batch
(unequal padding across ranks and across its microbatches) and rank 0 saves the averaged gradients.

Modes: ``ddp`` (the model's loss through DDP, one backward; also the mean loss) and ``trainer`` (one
step of a real composer.Trainer with microbatches of one sequence and SGD at lr 1, so the update is
the gradient). `make_batch` / `make_model` / `trainer_gradient` are also what the test uses for the
single-process reference."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import torch

V, K, T, B = 11, 3, 6, 4


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(V, 8)
        self.mix = torch.nn.Linear(8, 8)

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(last_hidden_state=torch.tanh(self.mix(self.emb(input_ids))))


class Student(torch.nn.Module):
    """Embedding -> linear -> output projection (``tied``: the embedding's weight, no bias), laid
    out as a Hugging Face causal LM (get_decoder, get_output_embeddings) for the fused head."""

    def __init__(self, tied: bool = False):
        super().__init__()
        self.decoder = Decoder()
        self.out = torch.nn.Linear(8, V, bias=not tied)
        if tied:
            self.out.weight = self.decoder.emb.weight

    def get_decoder(self):
        return self.decoder

    def get_output_embeddings(self):
        return self.out

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.out(self.decoder(input_ids, attention_mask).last_hidden_state))


def make_model(support: str, fused_head: bool = True, tied: bool = False):
    from trainer.config import DistillConfig
    from trainer.model import DistillationModel

    torch.manual_seed(0)
    distill = DistillConfig(
        mode="offline", kind="forward_kl", support=support, tau=2.0, chunk_size=None, fused_head=fused_head
    )
    return DistillationModel(Student(tied), distill, alpha=0.6)


def make_batch() -> dict:
    """4 sequences; rank 0 (sequences 0, 1) is mostly padding, rank 1 (2, 3) is full."""
    g = torch.Generator().manual_seed(1)
    lengths = [1, 2, T, T]
    attn = torch.tensor([[1] * n + [0] * (T - n) for n in lengths])
    ids = torch.randint(0, V, (B, T), generator=g)
    labels = torch.where(attn.bool(), torch.randint(0, V, (B, T), generator=g), torch.full((B, T), -100))
    t_ids = torch.stack([torch.randperm(V, generator=g)[:K].sort().values for _ in range(B * T)]).reshape(B, T, K)
    t_logp = torch.log_softmax(torch.randn(B, T, K, generator=g), -1)
    t_mask = attn.bool()[..., None].expand(B, T, K).clone()
    t_logp = torch.where(t_mask, t_logp, torch.tensor(float("-inf")))
    t_tail = torch.where(
        attn.bool(), torch.log(torch.rand(B, T, generator=g) * 0.3 + 0.01), torch.tensor(float("-inf"))
    )
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "labels": labels,
        "teacher_ids": t_ids,
        "teacher_logp": t_logp,
        "teacher_mask": t_mask,
        "teacher_log_tail": t_tail,
        "position_mask": attn.bool(),
    }


def trainer_gradient(model, batch: dict, microbatch: int) -> dict:
    """One step of a real composer.Trainer over the global ``batch`` (Composer's distributed sampler
    deals its sequences to the ranks: with 2, rank 0 gets lengths 1 and 6, rank 1 2 and 6) with
    microbatches of ``microbatch`` sequences, the model's `BatchCounts` callback and SGD at lr 1:
    returns the update, i.e. the gradient the Trainer applied (averaged over ranks by DDP)."""
    from composer import Trainer
    from composer.utils import dist
    from torch.utils.data import DataLoader

    from trainer.model import BatchCounts

    rows = [{k: v[i] for k, v in batch.items()} for i in range(batch["input_ids"].shape[0])]
    loader = DataLoader(
        rows,
        batch_size=len(rows) // dist.get_world_size(),
        sampler=dist.get_sampler(rows, shuffle=False),
        collate_fn=lambda xs: {k: torch.stack([x[k] for x in xs]) for k in xs[0]},
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration="1ba",
        optimizers=torch.optim.SGD(model.parameters(), lr=1.0),
        device="cpu",
        device_train_microbatch_size=microbatch,
        callbacks=[BatchCounts()],
        loggers=[],
        progress_bar=False,
        log_to_console=False,
    )
    trainer.fit()
    return {n: before[n] - p.detach() for n, p in model.named_parameters()}


def main(out_path: str, support: str, mode: str = "ddp", head: str = "fused") -> None:
    """``head``: fused | unfused | fused-tied | unfused-tied (`make_model`'s fused_head and tied)."""
    from composer.devices import DeviceCPU
    from composer.utils import dist

    dist.initialize_dist(DeviceCPU())
    rank, world = dist.get_global_rank(), dist.get_world_size()
    model = make_model(support, fused_head=head.startswith("fused"), tied=head.endswith("tied"))
    per = B // world
    shard = {k: v[rank * per : (rank + 1) * per] for k, v in make_batch().items()}
    if mode == "trainer":
        grads = trainer_gradient(model, make_batch(), microbatch=1)
        if rank == 0:
            torch.save({"grads": grads}, out_path)
        return
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    loss = model.loss(ddp(shard), shard)["total"]
    loss.backward()  # DDP averages the gradients over the ranks
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    own = torch.tensor([float(loss)])
    ranks = [torch.zeros(1) for _ in range(world)]
    torch.distributed.all_gather(ranks, own)
    if rank == 0:
        torch.save(
            {
                "grads": {n: p.grad for n, p in model.named_parameters()},
                "loss": float(mean_loss) / world,
                "rank_losses": [float(r) for r in ranks],
            },
            out_path,
        )


def launch_two_ranks(tmp_path, *args: str) -> dict:
    """`composer -n 2 tests/dist_loss_worker.py OUT split ARGS...` (gloo); rank 0's saved result."""
    import os
    import socket
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / f"{'-'.join(args)}.pt"
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    composer = os.path.join(os.path.dirname(sys.executable), "composer")
    cmd = [composer, "-n", "2", "--master_port", str(port), os.path.abspath(__file__), str(out), "split", *args]
    p = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return torch.load(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
