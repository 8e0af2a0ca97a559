"""Average the weights of checkpoints fine-tuned from one model (a "model soup") into one checkpoint.

    python models/average.py A.ckpt B.ckpt [C.ckpt ...] --out soup.ckpt [--weights 0.5 0.5]

Why: two fine-tunes of the same weights can be good at different things (session 7: sim-v2 at
coarse samplings, its 128-frame crop fine-tune at puffs). Networks fine-tuned from one starting
point usually lie in one basin of the loss, so the mean of their weights is a network as fast as
either that often keeps the strengths of both (Wortsman et al., "Model soups", ICML 2022), unlike
an ensemble, which costs one network run per member. Batch-norm running statistics are averaged
with the same weights (``num_batches_tracked`` is taken from the first checkpoint).

The output holds the averaged ``state_dict`` and the first checkpoint's ``casparks`` metadata
(network, pre-processing, classes: these must be the same in all inputs, which is checked), with
``casparks["averaged_from"]`` listing the inputs and their weights. Like ``weights.ckpt`` from
``models/sim-v1/gpu_train.sh``, it loads with ``--model soup.ckpt`` everywhere and can be bundled.
A checkpoint that is itself a bundled model's name (e.g. ``sim-v2``) is read from the package.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def read(name: str) -> tuple[str, dict]:
    from casparks.models import resolve_model

    path = resolve_model(name).checkpoint  # a bundled model's name, a .ckpt file or a run folder
    return str(path), torch.load(path, map_location="cpu", weights_only=False)


def average(checkpoints: list[dict], weights: list[float]) -> dict[str, torch.Tensor]:
    """Weighted mean of the floating-point tensors of each state_dict (others from the first)."""
    first = checkpoints[0]["state_dict"]
    for ckpt in checkpoints[1:]:
        if ckpt["state_dict"].keys() != first.keys():
            raise SystemExit("the checkpoints hold different networks (their state_dict keys differ)")
    out = {}
    for key, value in first.items():
        if value.is_floating_point():
            out[key] = sum(w * c["state_dict"][key].double() for w, c in zip(weights, checkpoints)).to(value.dtype)
        else:
            out[key] = value.clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", help=".ckpt files, run folders or bundled model names (at least 2)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--weights", type=float, nargs="+", help="one per checkpoint (default: equal); normalised to sum 1")
    args = parser.parse_args()
    if len(args.checkpoints) < 2:
        raise SystemExit("give at least 2 checkpoints")
    weights = args.weights or [1.0] * len(args.checkpoints)
    if len(weights) != len(args.checkpoints) or min(weights) < 0 or sum(weights) <= 0:
        raise SystemExit("--weights: one non-negative number per checkpoint, not all 0")
    weights = [w / sum(weights) for w in weights]
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose another --out")

    loaded = [read(name) for name in args.checkpoints]
    meta = loaded[0][1]["casparks"]
    for path, ckpt in loaded[1:]:
        for key in ("preprocessing", "classes"):
            if ckpt["casparks"].get(key) != meta.get(key):
                raise SystemExit(f"{path}: its {key} differs from {loaded[0][0]}'s; only fine-tunes of one model average")
        if ckpt["casparks"]["config"].get("network") != meta["config"].get("network"):
            raise SystemExit(f"{path}: its network differs from {loaded[0][0]}'s")
    state = average([c for _, c in loaded], weights)
    meta = dict(meta, averaged_from=[{"checkpoint": p, "weight": w} for (p, _), w in zip(loaded, weights)])
    tmp = args.out.with_name(args.out.name + ".part")
    torch.save({"state_dict": state, "casparks": meta}, tmp)
    tmp.replace(args.out)
    print(f"{args.out}: mean of {', '.join(f'{p} × {w:.2f}' for (p, _), w in zip(loaded, weights))}")


if __name__ == "__main__":
    main()
