"""A training script of your own, swept by noisefloor (README: "Your own trainer").

    noisefloor sweep --command 'python examples/train.py --init-seed {init_seed} --train-seed {train_seed} --out {run_dir}' \
        --init-seeds 42,22,67 --train-seeds 23,67 --intervention 'no-dropout=--dropout 0'

A tiny next-token model on real GPT-2 BPE text (tiktoken r50k_base = gpt2) (the Python docs that ship with CPython); seconds per run on a CPU.
"""
import argparse, json, os

import tiktoken, torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisefloor import seeding
from noisefloor.train.data import builtin_documents

p = argparse.ArgumentParser()
p.add_argument("--init-seed", type=int, required=True)
p.add_argument("--train-seed", type=lambda s: None if s == "none" else int(s))  # "none": no re-seed
p.add_argument("--out", required=True)
p.add_argument("--dropout", type=float, default=0.2)
p.add_argument("--steps", type=int, default=80)
p.add_argument("--lr", type=float, default=1.0)
args = p.parse_args()
os.makedirs(args.out, exist_ok=True)
torch.set_num_threads(1)  # CPU results depend on the thread count

text = "\n".join(builtin_documents()[:12])
vocab, ids = torch.unique(torch.tensor(tiktoken.get_encoding("r50k_base").encode_ordinary(text)), return_inverse=True)
windows = ids[: len(ids) // 33 * 33].view(-1, 33)
split = len(windows) * 9 // 10
train_set = torch.utils.data.TensorDataset(windows[:split])

seeding.init(args.init_seed)  # 1. seed the weight init ...
model = torch.nn.Sequential(torch.nn.Embedding(len(vocab), 32), torch.nn.Dropout(args.dropout), torch.nn.Linear(32, len(vocab)))
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{args.out}/init.safetensors")
loader = torch.utils.data.DataLoader(train_set, batch_size=8, shuffle=True, generator=seeding.train(args.train_seed))  # 2. ... then the loop

loss_of = lambda w: F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
step = 0
with open(f"{args.out}/metrics.jsonl", "w") as metrics:
    while step < args.steps:
        for (batch,) in loader:
            loss = loss_of(batch)
            model.zero_grad(), loss.backward()
            with torch.no_grad():  # plain SGD (torch.optim's first use costs seconds of imports)
                [w.sub_(args.lr * w.grad) for w in model.parameters()]
            step += 1
            metrics.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
            if step == args.steps:
                break
model.eval()
with torch.no_grad():
    test_loss = loss_of(windows[split:]).item()
save_file(model.state_dict(), f"{args.out}/model.safetensors")
with open(f"{args.out}/result.json", "w") as f:
    json.dump({"test_loss": test_loss}, f)
