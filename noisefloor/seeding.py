"""Two lines for your own training script: noisefloor's split of weight init and training loop.

    from noisefloor import seeding

    seeding.init(args.init_seed)                    # before building the model
    model = build_model()
    save_file(model.state_dict(), f"{out}/init.safetensors")    # optional: lets noisefloor compare inits
    generator = seeding.train(args.train_seed)      # after building it: re-seeds the training loop
    loader = DataLoader(dataset, shuffle=True, generator=generator)

`init` seeds python `random`, numpy, torch CPU and every CUDA device from the
init seed and turns on torch's deterministic mode; `train` re-seeds them all
from the train seed (dropout masks draw from these global generators), and
returns the generator of the data order, so neither depends on how many
numbers building the model drew. With `train(None)` nothing is re-seeded and
the data order follows the init seed: noisefloor's "no re-seed" runs. The
same seeds give noisefloor's own trainer the same data-order seed.

Importing this module does not import torch; `init` and `train` do.
"""

from __future__ import annotations

from typing import Any

_init_seed: int | None = None


def init(init_seed: int, deterministic: bool = True) -> None:
    """Seed every RNG from `init_seed`; call it right before building the model.

    `deterministic` (default) also makes torch pick deterministic kernels (and sets
    CUBLAS_WORKSPACE_CONFIG, which must happen before any CUDA work), without which a
    GPU run is not repeatable bit for bit. An op without a deterministic kernel then raises.
    If you torch.compile, call torch.use_deterministic_algorithms(True) yourself as well
    (it also sets the compiler's flag, at the cost of importing the compiler).
    """
    # torch (through train/) is imported here, not at the top, so `import noisefloor.seeding` stays cheap
    from noisefloor.train import determinism

    global _init_seed
    if deterministic:
        determinism.deterministic_kernels(without_compiler=True)
    determinism.seed_everything(init_seed)
    _init_seed = init_seed


def train(train_seed: int | None) -> Any:
    """Re-seed the training loop from `train_seed` (None: leave the RNGs as they are) and return the
    `torch.Generator` for the data order: pass it to `DataLoader(..., generator=...)`, or to your own
    shuffling, never leave data order to the global RNG."""
    if _init_seed is None:
        raise RuntimeError("call seeding.init(init_seed) before building the model, then seeding.train(train_seed)")
    import torch  # as in init: `import noisefloor.seeding` stays cheap

    from noisefloor.train import determinism

    if train_seed is not None:
        determinism.seed_everything(train_seed)
    generator = torch.Generator()
    generator.manual_seed(determinism.data_seed(_init_seed, train_seed))
    return generator
