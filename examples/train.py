"""Your own training script, swept by noisefloor (docs/your-own-trainer.md).

    noisefloor sweep --command 'python examples/train.py --init-seed {init_seed} --train-seed {train_seed} --out {run_dir}' \
        --init-seeds 42,22,67 --train-seeds 23,67 --intervention 'no-dropout=--dropout 0'

A small next-token model on GPT-2 BPE tokens (tiktoken's r50k_base, the same ranks as gpt2) of the Python
documentation that ships with CPython; a few seconds a run on one CPU core.
"""
import argparse, itertools, json, os

import tiktoken, torch
import torch.nn.functional as F
from safetensors.torch import save_file

from noisefloor import seeding
from noisefloor.train.data import builtin_documents

p = argparse.ArgumentParser()
p.add_argument("--init-seed", type=int, required=True)
p.add_argument("--train-seed", type=lambda s: None if s == "none" else int(s))  # noisefloor passes "none": no re-seed
p.add_argument("--out", required=True)
p.add_argument("--dropout", type=float, default=0.2)
p.add_argument("--steps", type=int, default=80)
p.add_argument("--lr", type=float, default=1.0)
args = p.parse_args()
os.makedirs(args.out, exist_ok=True)
torch.set_num_threads(1)  # CPU results depend on the thread count: fix it

tokens = tiktoken.get_encoding("r50k_base").encode_ordinary("\n".join(builtin_documents()[:12]))
vocab, ids = torch.unique(torch.tensor(tokens), return_inverse=True)  # keep only the token ids the text uses
windows = ids[: len(ids) // 33 * 33].view(-1, 33)
split = len(windows) * 9 // 10  # the last 10% of windows is the test split

seeding.init(args.init_seed)  # 1. the weight init follows the init seed ...
model = torch.nn.Sequential(torch.nn.Embedding(len(vocab), 32), torch.nn.Dropout(args.dropout), torch.nn.Linear(32, len(vocab)))
save_file(model.state_dict(), f"{args.out}/init.safetensors")
generator = seeding.train(args.train_seed)  # 2. ... dropout masks and data order the train seed
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(windows[:split]), batch_size=8, shuffle=True, generator=generator)

loss_of = lambda w: F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten())
with open(f"{args.out}/metrics.jsonl", "w") as metrics:  # optional: noisefloor's live view shows it
    for step, (batch,) in zip(range(1, args.steps + 1), itertools.chain.from_iterable(itertools.repeat(loader))):
        loss = loss_of(batch)
        model.zero_grad(), loss.backward()
        with torch.no_grad():  # plain SGD: torch.optim's first use imports for seconds, longer than this run
            for w in model.parameters():
                w -= args.lr * w.grad
        metrics.write(json.dumps({"step": step, "loss": loss.item()}) + "\n")
model.eval()
with torch.no_grad():
    test_loss = loss_of(windows[split:]).item()
save_file(model.state_dict(), f"{args.out}/model.safetensors")
with open(f"{args.out}/result.json", "w") as f:
    json.dump({"test_loss": test_loss}, f)
