"""Text continuation for `noisefloor smoke`: greedy by default, seeded sampling optional."""

from __future__ import annotations

import torch

from noisefloor.train.devices import resolve_device
from noisefloor.train.evaluate import autocast, load_model, resolve_weights
from noisefloor.train.tokenizer import get_tokenizer


@torch.no_grad()
def continue_text(target: str, prompt: str, max_new_tokens: int = 40, temperature: float = 0.0,
                  top_k: int | None = None, seed: int = 0, config_path: str | None = None) -> str:
    """`temperature` 0 means greedy; otherwise sample from a generator seeded with `seed`."""
    config, weights = resolve_weights(target, config_path)
    device = resolve_device(config.train.device)
    model = load_model(config, weights, device)
    tokenizer = get_tokenizer(config.model.vocab_size)
    prompt_ids = tokenizer.encode_ordinary(prompt) or [tokenizer.eot_token]
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    for _ in range(max_new_tokens):
        window = ids[:, -config.model.context_length:]
        with autocast(device, config.train.precision):
            logits = model(window)[:, -1, :].float()
        if temperature <= 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits / temperature, dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)
        ids = torch.cat([ids, next_id], dim=1)
    return tokenizer.decode(ids[0].tolist())
