"""The ServerApp: rounds of federated LoRA with lorakit clients, aggregated by lorakit_flower.strategies.

Messages (every client is a `lorakit fl-client` node):
- "train": content {"arrays": the global adapter tensors (empty in round 1: clients initialise from `seed`),
  "config": {server-round, strategy, seed, local-steps, lr, freeze-a}}; reply {"arrays": trained tensors (FFA-LoRA:
  B only), "metrics": {num-examples, train-loss}}.
- "evaluate": content {"arrays", "config"}; reply {"metrics": {num-examples, eval-loss}}: the global adapter's mean
  loss on the client's held-out data. Round 0 evaluates the seeded initial adapter.
- FedSmoothLoRA (strategy "fedsmooth", fedsmooth.py) adds "merged" to both: the earlier rounds' global factors that
  the backbone absorbed (the client adds s (B_m A_m + B_s A_s) to its W0), and to "config" the round's zeta, gamma and
  calibration batches; its replies are the rank-r SVDs of the clients' updates.
Each reply is checked (names and shapes against the global adapter, NaN/Inf, a norm bound) and a bad one is
dropped, naming the node. A round waits at most round-timeout seconds, so a dead client does not stall it.
The per-round history (eval loss weighted by examples, bytes down and up, clients used) goes to result-file.
"""

from __future__ import annotations

import json
import time
from logging import INFO, WARNING

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from . import fedsmooth as FS
from . import strategies as S

app = ServerApp()


def to_numpy(arr: Array) -> np.ndarray:
    """An Array as float64 (bfloat16 arrives as numpy void bytes: ml_dtypes reads them)."""
    if arr.dtype == "bfloat16":
        import ml_dtypes

        return arr.numpy().view(ml_dtypes.bfloat16).astype(np.float64)
    return arr.numpy().astype(np.float64)


def array_record(tensors: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v, dtype=np.float32)) for k, v in tensors.items()})


def nbytes(tensors: dict[str, np.ndarray]) -> int:
    """Bytes of the tensors as they travel (float32)."""
    return sum(4 * v.size for v in tensors.values())


def wait_for_nodes(grid: Grid, n: int, timeout: float) -> list[int]:
    start = time.time()
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= n:
            return nodes
        if time.time() - start > timeout:
            raise RuntimeError(f"only {len(nodes)} of min-nodes={n} lorakit clients joined within {timeout:g} s")
        time.sleep(0.5)


def broadcast(grid: Grid, nodes, kind: str, rnd: int, tensors, config: dict, timeout: float, merged=None):
    records = {"arrays": array_record(tensors), "config": ConfigRecord(config)}
    if merged:
        records["merged"] = array_record(merged)
    content = RecordDict(records)
    msgs = [Message(content, dst_node_id=n, message_type=kind, group_id=str(rnd)) for n in nodes]
    return list(grid.send_and_receive(msgs, timeout=timeout))


def run_rounds(grid: Grid, cfg: dict) -> list[dict]:
    """The whole federation; returns the history (one entry per round, round 0 = before training)."""
    strategy = str(cfg["strategy"])
    if strategy not in ("fedavg", "ffa", "fair", "fedsmooth"):
        raise ValueError(f'strategy="{strategy}": expected fedavg, ffa, fair or fedsmooth')
    smooth = FS.FedSmoothState() if strategy == "fedsmooth" else None
    rounds = int(cfg["num-server-rounds"])
    nodes = wait_for_nodes(grid, int(cfg["min-nodes"]), float(cfg["wait-nodes-timeout"]))
    timeout = float(cfg["round-timeout"])
    base = {"strategy": strategy, "seed": int(cfg["seed"]), "freeze-a": strategy == "ffa"}
    train_cfg = {**base, "local-steps": int(cfg["local-steps"]), "lr": float(cfg["lr"])}
    global_tensors: dict[str, np.ndarray] = {}
    history = []

    def merged() -> dict[str, np.ndarray]:
        return smooth.merged if smooth else {}

    def smooth_cfg(rnd: int) -> dict:
        if not smooth:
            return {}
        mode, z0, zmin = str(cfg["fedsmooth-zeta-mode"]), float(cfg["fedsmooth-zeta"]), float(cfg["fedsmooth-zeta-min"])
        z = FS.zeta(rnd, rounds, mode, z0, zmin)
        return {"zeta": z, "gamma": float(cfg["fedsmooth-gamma"]), "ga-batches": int(cfg["fedsmooth-ga-batches"])}

    def evaluate(rnd: int) -> float | None:
        ecfg = {**base, "server-round": rnd}
        replies = broadcast(grid, nodes, MessageType.EVALUATE, rnd, global_tensors, ecfg, timeout, merged())
        pairs = []
        for r in replies:
            if r.has_error():
                log(WARNING, "node %s: evaluate failed: %s", r.metadata.src_node_id, r.error.reason)
                continue
            m = r.content["metrics"]
            pairs.append((float(m["num-examples"]), float(m["eval-loss"])))
        if not pairs:
            return None
        n = sum(w for w, _ in pairs)
        return sum(w * loss for w, loss in pairs) / n

    history.append({"round": 0, "eval_loss": evaluate(0), "bytes_down": 0, "bytes_up": 0, "clients": 0})
    log(INFO, "[lorakit %s] round 0: eval loss %s", strategy, history[-1]["eval_loss"])
    for rnd in range(1, rounds + 1):
        nodes = sorted(grid.get_node_ids()) or nodes  # a client that rejoined has a new node id
        t0 = time.time()
        down = (nbytes(global_tensors) + nbytes(merged())) * len(nodes)
        tcfg = {**train_cfg, **smooth_cfg(rnd), "server-round": rnd}
        replies = broadcast(grid, nodes, MessageType.TRAIN, rnd, global_tensors, tcfg, timeout, merged())
        expected = smooth.expected_shapes() if smooth else ({k: v.shape for k, v in global_tensors.items()} or None)
        updates, up, rejected = [], 0, []
        for r in replies:
            node = r.metadata.src_node_id
            if r.has_error():
                rejected.append(f"node {node}: client error: {r.error.reason}")
                continue
            tensors = {k: to_numpy(a) for k, a in r.content["arrays"].items()}
            up += nbytes(tensors)
            why = S.check_update(tensors, expected, float(cfg["max-norm"]))
            if why is None and expected is None and updates:
                first = {k: v.shape for k, v in updates[0][1].items()}  # round 1: clients must agree among themselves
                why = S.check_update(tensors, first, float(cfg["max-norm"]))
            if why is not None:
                rejected.append(f"node {node}: update rejected: {why}")
                continue
            updates.append((float(r.content["metrics"]["num-examples"]), tensors))
        for line in rejected:
            log(WARNING, "[lorakit %s] round %d: %s", strategy, rnd, line)
        if updates and smooth:
            global_tensors = smooth.aggregate(updates)
        elif updates:
            global_tensors = S.aggregate(
                strategy,
                updates,
                lam=float(cfg["fair-lambda"]),
                steps=int(cfg["fair-steps"]),
                lr=float(cfg["fair-lr"]),
            )
        loss = evaluate(rnd)
        history.append(
            {
                "round": rnd,
                "eval_loss": loss,
                "bytes_down": down,
                "bytes_up": up,
                "clients": len(updates),
                # the nodes that replied, as strings (JSON readers lose 64-bit integers)
                "nodes": [str(r.metadata.src_node_id) for r in replies if not r.has_error()],
                "lora_modules": len(S.lora_pairs(global_tensors)),  # A/B pairs the rule saw (FFA-LoRA: none, B only)
                "rejected": rejected,
                "seconds": round(time.time() - t0, 3),
            }
        )
        log(INFO, "[lorakit %s] round %d: %d updates, eval loss %s", strategy, rnd, len(updates), loss)
    return history


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = dict(context.run_config)
    history = run_rounds(grid, cfg)
    if cfg.get("result-file"):
        with open(str(cfg["result-file"]), "w") as f:
            json.dump({"strategy": cfg["strategy"], "config": cfg, "history": history}, f, indent=1)
