"""The deterministic trainer: one run, in this process or as one rank of a DDP run.

What it writes into the run folder is described in rundir.py.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from noisefloor import __version__, atomic
from noisefloor.config import RunConfig, minimum_training_bytes
from noisefloor.digest import TensorDigest
from noisefloor.errors import UserError, notice
from noisefloor.rundir import TRAINER_DONE_FIELDS, RunDir, exclusive, write_line
from noisefloor.train import determinism, distributed, launch, state
from noisefloor.train.data import Data, ShuffledStream, prepare_data
from noisefloor.train.devices import require_device, resolve_device, uses_cuda
from noisefloor.train.distributed import SINGLE, Ranks
from noisefloor.train.evaluate import autocast, logits_for_loss, split_loss
from noisefloor.train.model import CUDA_ATTENTION_BACKENDS, GPTModel, build_model, export_state, load_state, place_on

ProgressCallback = Callable[[dict[str, Any]], None]


# ---------------------------------------------------------------- helpers


def require_compiler(config: RunConfig) -> None:
    """Refuse torch.compile where inductor cannot build CPU kernels: with ATEN_CPU_CAPABILITY=default it still
    emits at::vec code, which the non-vector headers lack (torch 2.13), and fails with a C++ compile error."""
    if config.train.compile and config.train.device != "cuda" and os.environ.get("ATEN_CPU_CAPABILITY", "").lower() == "default":
        raise UserError("[train] compile = true cannot build CPU kernels with ATEN_CPU_CAPABILITY=default "
                        "(a torch.compile limitation); unset ATEN_CPU_CAPABILITY or set train.compile = false")


def machine_memory_bytes(config: RunConfig) -> tuple[int, str]:
    """Total memory a run of `config` allocates from: (bytes, what it is). RAM is capped by a cgroup limit."""
    if uses_cuda(config):
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory, "GPU memory"
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total, "memory"


def require_memory(config: RunConfig) -> None:
    """Refuse a config whose least memory exceeds the machine's, before anything is allocated or written.

    A CUDA run is checked only in the process that trains it: a sweep runner, or the launcher of a torchrun
    (DDP) run, that asked the GPU would hold a CUDA context on it for nothing. Sweep workers check their own
    runs; DDP runs on CUDA go unchecked."""
    require_device(config.train.device)
    if uses_cuda(config) and config.train.world_size > 1:
        return
    available, what = machine_memory_bytes(config)
    processes = config.train.world_size if what == "memory" else 1  # DDP on CPU: all ranks share the RAM
    needed = minimum_training_bytes(config) * processes
    if needed > available:
        gib = lambda n: f"{n / 2**30:,.1f} GiB"
        raise UserError(f"this config needs at least {gib(needed)} of {what} to train (weights, gradients, AdamW moments, "
                        f"logits and attention scores of one microbatch), this machine has {gib(available)}; "
                        "use a smaller model, microbatch_size or context_length")


def learning_rate(config: RunConfig, step: int) -> float:
    """Constant, or linear warmup then cosine decay in the form `lr_schedule` names:
    'noisefloor' and 'book' from initial_learning_rate up to learning_rate and down to
    min_learning_rate (the same curve, rounded as each computes it), 'blog' as the blog's trainer."""
    t = config.train
    if not t.schedule_learning_rate:
        return t.learning_rate
    if t.lr_schedule == "blog":
        return _blog_schedule(t.learning_rate, t.steps, t.warmup_period_percent)[step]
    warmup = int(t.warmup_period_percent / 100.0 * t.steps)
    if t.lr_schedule == "book":  # appendix D: the increment first, the cosine's factors in its order
        if step < warmup:
            return t.initial_learning_rate + step * ((t.learning_rate - t.initial_learning_rate) / warmup)
        progress = (step - warmup) / (t.steps - warmup)
        return t.min_learning_rate + (t.learning_rate - t.min_learning_rate) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup:
        return t.initial_learning_rate + step * (t.learning_rate - t.initial_learning_rate) / warmup
    progress = (step - warmup) / max(1, t.steps - warmup)
    return t.min_learning_rate + 0.5 * (t.learning_rate - t.min_learning_rate) * (1.0 + math.cos(math.pi * progress))


@functools.lru_cache(maxsize=4)
def _blog_schedule(peak: float, steps: int, warmup_percent: float) -> tuple[float, ...]:
    """The learning rate of every step as the blog's trainer sets it: torch's LinearLR (start factor 1e-5,
    over (steps x percent) // 100 steps) then CosineAnnealingLR (floor peak / 10), chained by SequentialLR
    and stepped after each optimizer step. torch updates these recursively, step by step, so this does the
    same arithmetic in the same order (a closed form differs in the last bits); tests hold it to torch's."""
    warmup = int((steps * warmup_percent) // 100)
    start, end, floor, decay = 0.00001, 1.0, peak / 10, steps - warmup
    lr = peak * start if warmup else peak
    rates = [lr]
    for epoch in range(1, steps):  # the scheduler's step count after `epoch` optimizer steps
        if epoch < warmup:
            lr = lr * (1.0 + (end - start) / (warmup * start + (epoch - 1) * (end - start)))
        elif epoch == warmup:  # SequentialLR hands over at the milestone with the cosine's closed form at 0
            lr = floor + (peak - floor) * (1 + math.cos(math.pi * 0 / decay)) / 2
        else:
            k = epoch - warmup
            lr = (1 + math.cos(math.pi * k / decay)) / (1 + math.cos(math.pi * (k - 1) / decay)) * (lr - floor) + floor
        rates.append(lr)
    return tuple(rates)


def _peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(device), "peak_memory_kind": "cuda_allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak_memory_kind": "process_max_rss"}


def initial_model(config: RunConfig) -> GPTModel:
    """Seed with init_seed and build: exactly what a run starts from."""
    determinism.seed_everything(config.train.init_seed)
    return build_model(config.model, config.train.init_seed)


# ---------------------------------------------------------------- the trainer


class Trainer:
    """One run, in one process or as one rank of a DDP run (only rank 0 writes files)."""

    def __init__(self, config: RunConfig, run_dir: Path, progress: ProgressCallback | None = None,
                 ranks: Ranks = SINGLE, data: Data | None = None):
        self.config = config
        self.run = RunDir(Path(run_dir))
        self.progress = progress or (lambda event: None)
        self.ranks = ranks
        self.data = data  # prepared by the caller, or in _setup

    # The step loop reads these; they are set up by _setup.
    model: torch.nn.Module  # what forward/backward go through (compiled and/or DDP-wrapped)
    raw_model: GPTModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    stream: ShuffledStream
    device: torch.device
    param_names: list[str]

    @property
    def main(self) -> bool:
        return self.ranks.rank == 0

    def _setup(self, resume: bool) -> TensorDigest:
        """Model, optimizer, data stream and manifest; returns the digest of the initial weights."""
        config, t, ranks = self.config, self.config.train, self.ranks
        require_compiler(config)
        determinism.enable_deterministic_mode(t.threads)
        self.device = resolve_device(t.device, ranks.local)
        if self.data is None:
            self.data = prepare_data(config)

        model = initial_model(config)
        init_state = export_state(model)
        init_digests = state.state_digest(init_state)
        if self.main and not self.run.init_weights.exists():
            state.save_tensors(self.run.init_weights, init_state)
        if t.train_seed is not None:
            determinism.seed_everything(t.train_seed)
        if ranks.rank > 0:  # other ranks draw other dropout masks; rank 0 is exactly the single-process run
            determinism.seed_everything(determinism.derive_seed("rank", t.init_seed, t.train_seed, ranks.rank))

        place_on(model, self.device)
        self.param_names = [name for name, _ in model.named_parameters()]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay,
                                           fused=self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=t.precision == "amp-fp16")
        self.raw_model = model
        wrapped = distributed.wrap(model, self.device) if ranks.distributed else model
        self.model = torch.compile(wrapped) if t.compile else wrapped
        self.stream = ShuffledStream(self.data.train, determinism.data_seed(t.init_seed, t.train_seed))

        if resume and self.run.manifest.exists():
            previous = self.run.read_json(self.run.manifest)
            if previous.get("device", "").split(":")[0] != self.device.type:
                raise UserError(
                    f"{self.run.path} was trained on {previous.get('device')}, cannot resume on {self.device}: "
                    "results would not be bit-identical"
                )
        if self.main:
            atomic.write_json(self.run.manifest, {
                "run_id": config.digest()[:16],
                "noisefloor": __version__,
                "init_seed": t.init_seed,
                "train_seed": t.train_seed,
                "data_seed": self.stream.data_seed,
                "corpus": self.data.corpus.describe(),
                "windows": {"train": len(self.data.train), "val": len(self.data.val), "test": len(self.data.test)},
                "parameters": sum(tensor.numel() for tensor in init_state.values()),
                "init_digest": init_digests.hexdigest(),
                "init_tensors": init_digests.tensor_digests,
                "init_constant": sorted(n for n, v in init_state.items() if v.numel() and bool((v == v.flatten()[0]).all())),
                "tokens_per_step": config.tokens_per_step,
                "compile": t.compile,
                "device": str(self.device),
                "attention_backends": list(CUDA_ATTENTION_BACKENDS) if self.device.type == "cuda" else "pytorch default (CPU)",
                "vocab_rows": int(self.raw_model.tok_emb.weight.shape[0]),
                "world_size": ranks.world,
                "distributed": distributed.describe() if ranks.distributed else None,
                "environment": determinism.fingerprint(self.device),
            })
        return init_digests

    def _restore(self) -> dict[str, Any]:
        """Load the newest checkpoint; returns its JSON state (step 0 state when none)."""
        if self.main:
            state.clean_partial_checkpoints(self.run.path)
        folders = state.checkpoint_dirs(self.run.path)
        if not folders:
            if self.main:
                self.run.forget_lines()
            return {"step": 0, "train_seconds": 0.0}
        folder, (model_tensors, state_tensors, saved) = self._newest_good_checkpoint(folders)
        if saved.get("config_digest") != self.config.digest():
            raise UserError(f"{folder}: checkpoint belongs to another config; it cannot be resumed here")
        load_state(self.raw_model, model_tensors, str(folder))
        # load_state_dict moves the moments onto each parameter's device
        state.restore_optimizer(self.optimizer, self.param_names, state_tensors, saved["param_groups"])
        if saved.get("scaler"):
            self.scaler.load_state_dict(saved["scaler"])
        rng_values, rng_tensors = distributed.rng_of_rank(saved["rng"], state_tensors, self.ranks)
        determinism.restore_rng(rng_values, rng_tensors)
        if self.main:
            self.run.truncate_to_step(saved["step"])
        return saved

    def _newest_good_checkpoint(self, folders: list[Path]):
        """The newest checkpoint whose bits match its recorded digests; a bad one is skipped with a line,
        and when none is left the resume stops with one line rather than trust it."""
        for position in range(len(folders) - 1, -1, -1):
            try:
                return folders[position], state.read_checkpoint(folders[position])
            except state.CorruptCheckpoint as exc:
                if position == 0:
                    raise UserError(f"{exc}; no earlier checkpoint to fall back to: delete {folders[position]} "
                                    "to train this run again from step 0") from None
                if self.main:
                    notice(f"{exc}; falling back to {folders[position - 1].name}")

    def _checkpoint(self, step: int, train_seconds: float, model_digest: TensorDigest | None = None) -> None:
        rng_values, rng_tensors = distributed.rng_of_all_ranks(*determinism.capture_rng(), self.ranks)
        if self.main:
            optim_tensors, groups = state.optimizer_tensors(self.optimizer, self.param_names)
            saved = {
                "step": step,
                "train_seconds": train_seconds,
                "config_digest": self.config.digest(),
                "param_groups": groups,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": rng_values,
            }
            state.write_checkpoint(self.run.path, step, export_state(self.raw_model), {**optim_tensors, **rng_tensors},
                                   saved, self.config.train.keep_checkpoints, model_digest)
        distributed.barrier(self.ranks)

    def _record_digest(self, handle, step: int, digest: TensorDigest | None = None) -> TensorDigest | None:
        """Write the weights' digest at `step` (rank 0) and return it, for a checkpoint at the same step."""
        if not self.main:
            return None
        digest = digest or state.state_digest(export_state(self.raw_model))
        write_line(handle, {"step": step, "digest": digest.hexdigest(), "tensors": digest.tensor_digests})
        handle.flush()
        return digest

    def _train_step(self, step: int) -> tuple[float, float, float]:
        """One optimizer step; returns (mean loss over every rank's windows, pre-clip gradient norm, learning rate)."""
        t, ranks = self.config.train, self.ranks
        lr = learning_rate(self.config, step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro, accumulation = t.microbatch_size, t.gradient_accumulation_steps
        position = step * accumulation * ranks.world * micro  # windows every rank consumed before this step
        loss_sum = torch.zeros((), device=self.device)
        for k in range(accumulation):
            inputs, targets = self.stream.take(position + (k * ranks.world + ranks.rank) * micro, micro)
            x = torch.from_numpy(inputs).to(self.device, non_blocking=True)
            y = torch.from_numpy(targets).to(self.device, non_blocking=True)
            last = k == accumulation - 1  # DDP all-reduces the gradients on the last microbatch only
            with distributed.maybe_no_sync(self.model, ranks.distributed and not last):
                with autocast(self.device, t.precision):
                    logits = self.model(x)
                loss = F.cross_entropy(logits_for_loss(logits).flatten(0, 1), y.flatten()) / accumulation
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        loss_sum = distributed.mean_over_ranks(loss_sum, ranks)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.raw_model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
        if t.clipping_max_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.raw_model.parameters(), t.clipping_max_norm, grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        loss, norm = torch.stack((loss_sum, grad_norm.float())).tolist()  # one device sync per step, not two
        return loss, norm, lr

    def _open(self, path: Path):
        return open(path, "a") if self.main else open(os.devnull, "w")

    def run_training(self, resume: bool) -> dict[str, Any]:
        config, t = self.config, self.config.train
        init_digest = self._setup(resume)
        saved = self._restore() if resume else {"step": 0, "train_seconds": 0.0}
        distributed.barrier(self.ranks)  # every rank has read the checkpoint before rank 0 writes a newer one
        start, train_seconds = saved["step"], saved["train_seconds"]
        self.progress({"event": "start", "step": start, "steps": t.steps, "run": str(self.run.path)})

        self.model.train()
        val_loss = None
        evaluate = lambda windows: split_loss(self.raw_model, windows, t.microbatch_size, self.device, t.precision)
        with self._open(self.run.metrics) as metrics, self._open(self.run.digests) as digests:
            if start == 0 and t.digest_interval:
                self._record_digest(digests, 0, init_digest)
            for step in range(start, t.steps):
                began = time.perf_counter()
                loss, grad_norm, lr = self._train_step(step)
                elapsed = time.perf_counter() - began
                train_seconds += elapsed
                done = step + 1
                if not math.isfinite(loss) or (not math.isfinite(grad_norm) and not self.scaler.is_enabled()):
                    what = "loss" if not math.isfinite(loss) else "gradient norm"
                    return self._finish(self._result("diverged", done, train_seconds, init_digest,
                                                     error=f"non-finite {what} at step {done}"))
                record = {"step": done, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                          "tokens_per_s": config.tokens_per_step / elapsed}
                write_line(metrics, record)
                if t.eval_interval and done % t.eval_interval == 0 and done != t.steps:
                    val_loss = evaluate(self.data.val)
                    write_line(metrics, {"step": done, "val_loss": val_loss})
                    record["val_loss"] = val_loss
                metrics.flush()
                weights_digest = None  # hashed once when a digest step is also a checkpoint
                if t.digest_interval and done % t.digest_interval == 0 and done != t.steps:
                    weights_digest = self._record_digest(digests, done)
                if t.checkpoint_interval and done % t.checkpoint_interval == 0 and done != t.steps:
                    self._checkpoint(done, train_seconds, weights_digest)
                self.progress({"event": "step", "steps": t.steps, **record})

            val_loss = evaluate(self.data.val)
            write_line(metrics, {"step": t.steps, "val_loss": val_loss})
            final_state = export_state(self.raw_model)
            final_digest = state.state_digest(final_state)
            if t.digest_interval:
                self._record_digest(digests, t.steps, final_digest)
        test_loss = evaluate(self.data.test)
        if self.main:
            state.save_tensors(self.run.final_weights, final_state)
        tokens_seen = t.steps * config.tokens_per_step
        return self._finish(self._result(
            "done", t.steps, train_seconds, init_digest, test_loss=test_loss, val_loss=val_loss,
            tokens_per_s=tokens_seen / train_seconds if train_seconds else None, final_digest=final_digest.hexdigest()))

    def _result(self, status: str, step: int, train_seconds: float, init_digest: TensorDigest, **outcome) -> dict[str, Any]:
        """result.json: the same keys whatever the outcome; `outcome` fills in what this one has."""
        return {
            "status": status, "step": step, "steps": self.config.train.steps, "test_loss": None, "val_loss": None,
            "tokens_seen": step * self.config.tokens_per_step, "seconds": train_seconds, "tokens_per_s": None,
            "init_digest": init_digest.hexdigest(), "final_digest": None, "error": None, **_peak_memory(self.device),
            **outcome,
        }

    def _finish(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.main:
            self.run.write_result(result)
        self.progress({"event": result["status"], **result})
        return result


def _run(config: RunConfig, run: RunDir, progress: ProgressCallback | None, resume: bool,
         data: Data | None = None) -> dict[str, Any]:
    """In this process, or through torchrun when the run asks for several processes."""
    try:
        if config.train.world_size > 1:
            return launch.launch(run.path, config, progress)
        return Trainer(config, run.path, progress, data=data).run_training(resume=resume)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise UserError(f"{exc.filename or run.path}: {exc.strerror} while training {run.path}; "
                        f"{_what_was_kept(run)}; once fixed, continue with noisefloor train --resume {run.path}") from None


def _what_was_kept(run: RunDir) -> str:
    """What a run that stopped on a failed write still has on disk (writes are atomic: nothing half-written)."""
    checkpoints = state.checkpoint_dirs(run.path)
    if checkpoints:
        return f"kept its config and its newest checkpoint {checkpoints[-1].name}"
    return "kept its config, no checkpoint yet (a resume starts from step 0)"


def train(config: RunConfig, run_dir: str | os.PathLike[str], progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Train a new run into `run_dir` (which must not hold a run yet)."""
    run = RunDir(atomic.out_folder(run_dir))
    if run.config.exists():
        raise UserError(f"{run.path} already holds a run; resume it with --resume or choose another --out")
    # a missing device, a bad data source, context length or a model too big fails before anything is written
    require_device(config.train.device)
    require_compiler(config)
    data = prepare_data(config)
    require_memory(config)
    run.path.mkdir(parents=True, exist_ok=True)
    with exclusive(run):
        run.write_config(config.to_dict())
        return _run(config, run, progress, resume=False, data=data)


def resume(run_dir: str | os.PathLike[str], progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Continue a run from its newest checkpoint; a finished run is returned as is."""
    run = RunDir(Path(run_dir))
    if not run.path.is_dir():
        raise UserError(f"run directory not found: {run.path}")
    config = run.read_config()
    require_memory(config)
    with exclusive(run):
        finished = run.read_result(TRAINER_DONE_FIELDS)
        if finished is not None:
            return finished
        return _run(config, run, progress, resume=True)


def train_as_rank(config: RunConfig, run_dir: str | os.PathLike[str], ranks: Ranks) -> dict[str, Any] | None:
    """Train, resume or return a DDP run as one of its ranks, in a process started for it by someone else than
    noisefloor (Slurm's srun: one task per rank, on as many nodes as the job has; torch's env:// variables name
    rank 0's address, as torchrun sets them). Rank 0 owns the run folder as `train` and `resume` do, then tells
    the other ranks whether to train. Returns the run's result on rank 0, None on the others."""
    if ranks.world != config.train.world_size:
        raise UserError(f"the run asks for world_size {config.train.world_size}, but {ranks.world} processes were "
                        f"started for it; start one task per rank")
    run = RunDir(atomic.out_folder(run_dir))
    resolve_device(config.train.device, ranks.local)  # NCCL's first collective runs on the current GPU
    dist.init_process_group(distributed.backend(config.train.device))
    try:
        with ExitStack() as lock:
            finished, data = None, None
            if ranks.rank == 0:
                try:
                    finished, data = _own_run_folder(config, run, lock)
                except BaseException:
                    dist.broadcast_object_list([{"status": "not trained"}])  # the other ranks stop too
                    raise
            told = [finished]
            dist.broadcast_object_list(told)
            if told[0] is None:
                finished = Trainer(config, run.path, ranks=ranks, data=data).run_training(resume=True)
            return finished if ranks.rank == 0 else None
    finally:
        dist.destroy_process_group()


def _own_run_folder(config: RunConfig, run: RunDir, lock: ExitStack) -> tuple[dict[str, Any] | None, Data]:
    """Rank 0's part before a DDP run trains: what `train` checks, the run's lock, a new run's config.json.
    Returns the run's result when it is already done, and the prepared data."""
    require_device(config.train.device)
    require_compiler(config)
    data = prepare_data(config)
    require_memory(config)
    run.path.mkdir(parents=True, exist_ok=True)
    lock.enter_context(exclusive(run))
    if not run.config.exists():
        atomic.write_json(run.config, config.to_dict())
    return run.read_result(TRAINER_DONE_FIELDS), data
