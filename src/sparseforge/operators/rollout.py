"""Training losses, rollouts, metrics and timing for learned particle simulators.

Losses (GNS, arXiv 2002.09405; GIOROM, arXiv 2407.03925):

    stepper     L = MSE(a^, (a_target - mean_a) / sqrt(std_a^2 + sigma^2))   (+ lambda MSE(x^_{t+1}, x_{t+1}))
                a_target from the noisy window (random-walk noise, see ``features``)
    decoder     L = MSE(x^_q(t), X[t]) over all N particles of a random (trajectory, frame)

Metrics:

    one-step MSE   mean over frames and particles of ||x^_{t+1} - x_{t+1}||^2 / d   (teacher forced)
    rollout MSE    mean over frames after the W + 1 seed frames and particles of ||x^_t - x_t||^2
                   (summed over dimensions)
    relative L2    mean over frames of ||X^(t) - X(t)||_F / ||X(t)||_F
    Chamfer        (mean_a min_b ||a - b||^2 + mean_b min_a ||a - b||^2) / 2 on seeded 2,048-point
                   subsamples when a cloud is larger
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.particles import Trajectory
from ..errors import UserError
from ..graph import knn
from .decoders import DenseDecoder
from .features import ParticleSimulator, integrate, random_walk_noise, target_acceleration


def stepper_loss(model: ParticleSimulator, batch: dict[str, Tensor], *, noise_std: float | None = None,
                 position_loss_weight: float = 0.0, noise_target: Literal["clean", "gns"] = "clean",
                 generator: torch.Generator | None = None) -> Tensor:
    """Normalised-acceleration MSE on a :class:`~sparseforge.data.particles.WindowBatches` batch.

    Args:
        model: a :class:`ParticleSimulator` (GIOROM or GNS).
        batch: ``position`` (P, W + 2, d) (last frame = target), ``particle_type``, ``batch``.
        noise_std: sigma of the input noise (default: the model's).
        position_loss_weight: lambda of the optional position term (0 = off, the reconstructed
            default; the GIOROM code used 1e5 or 1e9).
        noise_target: ``"clean"``: the target reaches the clean x_{t+1} from the noisy state (GIOROM);
            ``"gns"``: the target position carries the last frame's position noise, so only the
            velocity noise is corrected (the GNS reference code: a_target = a - (n_t - n_{t-1})).
    """
    raw: ParticleSimulator = getattr(model, "module", model)
    pos = batch["position"]
    window, target = pos[:, :-1], pos[:, -1]
    sigma = raw.noise_std if noise_std is None else noise_std
    noise = random_walk_noise(window.shape, sigma, dtype=window.dtype, device=window.device, generator=generator)
    noisy = window + noise
    if noise_target == "gns":
        target = target + noise[:, -1]
    elif noise_target != "clean":
        raise UserError(f"noise_target must be 'clean' or 'gns', got {noise_target!r}")
    a_target = target_acceleration(noisy, target)
    pred = model(noisy, batch["particle_type"], batch.get("batch"))
    loss = F.mse_loss(pred, raw.normalize_acceleration(a_target))
    if position_loss_weight > 0:
        loss = loss + position_loss_weight * F.mse_loss(integrate(noisy, raw.acceleration(pred)), target)
    return loss


class DecoderBatches:
    """Random (trajectory, frame) pairs for training a dense decoder; re-iterable and seeded.

    Yields ``{"traj": long (1,), "frame": long (1,)}``; :func:`decoder_loss` looks the frames up.
    """

    def __init__(self, n_trajectories: int, n_frames: int, *, batches_per_epoch: int = 100, seed: int = 0) -> None:
        if n_trajectories < 1 or n_frames < 1:
            raise UserError("DecoderBatches needs at least one trajectory and one frame")
        self.n, self.T, self.per_epoch, self.seed, self.epoch = n_trajectories, n_frames, batches_per_epoch, seed, 0

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        g = torch.Generator().manual_seed(self.seed + 7919 * self.epoch)
        self.epoch += 1
        for _ in range(self.per_epoch):
            yield {"traj": torch.randint(self.n, (1,), generator=g), "frame": torch.randint(self.T, (1,), generator=g)}


def decoder_loss(decoder: DenseDecoder, batch: dict[str, Tensor], *, trajectories: Sequence[Trajectory],
                 sparse_index: Sequence[Tensor], generator: torch.Generator | None = None) -> Tensor:
    """MSE between the decoded full cloud of one frame (from its true sparse positions) and the truth."""
    i, t = int(batch["traj"][0]), int(batch["frame"][0])
    traj, idx = trajectories[i], sparse_index[i]
    ref = traj.position[0]
    plan = decoder.prepare(ref[idx], ref, train=True, generator=generator)
    pred = decoder(plan, traj.position[t, idx])
    return F.mse_loss(pred, traj.position[t])


# --------------------------------------------------------------------------------------------- rollouts


@torch.no_grad()
def rollout(model: ParticleSimulator, seed_frames: Tensor, particle_type: Tensor, steps: int, *,
            clamp_to_bounds: bool = False, step_callback: Callable[[int], None] | None = None) -> Tensor:
    """Autoregressive rollout: (W + 1 + steps, n, d), the seed frames unchanged at the front.

    Args:
        seed_frames: (W + 1, n, d) ground-truth frames.
        steps: predicted frames.
        clamp_to_bounds: clamp predicted positions to the model's bounds.
    """
    W = model.window
    if seed_frames.dim() != 3 or seed_frames.shape[0] != W + 1:
        raise UserError(f"seed_frames must be (W + 1 = {W + 1}, n, d), got {tuple(seed_frames.shape)}")
    was = model.training
    model.eval()
    frames = list(seed_frames)
    for k in range(steps):
        window = torch.stack(frames[-(W + 1):], 1)  # (n, W + 1, d)
        nxt = model.predict_positions(window, particle_type)
        if clamp_to_bounds:
            nxt = torch.maximum(torch.minimum(nxt, model.bounds[:, 1]), model.bounds[:, 0])
        frames.append(nxt)
        if step_callback is not None:
            step_callback(k)
    model.train(was)
    return torch.stack(frames)


@torch.no_grad()
def one_step_mse(model: ParticleSimulator, trajectories: Sequence[Tensor], particle_types: Sequence[Tensor], *,
                 max_frames: int | None = None) -> float:
    """Teacher-forced one-step position MSE (per coordinate) over the given (T, n, d) trajectories."""
    W = model.window
    was = model.training
    model.eval()
    errs = []
    for x, typ in zip(trajectories, particle_types):
        ts = range(W, x.shape[0] - 1)
        if max_frames is not None and len(ts) > max_frames:
            ts = torch.linspace(W, x.shape[0] - 2, max_frames).round().long().tolist()
        for t in ts:
            window = x[t - W:t + 1].transpose(0, 1)
            errs.append(float(F.mse_loss(model.predict_positions(window, typ), x[t + 1])))
    model.train(was)
    return float(sum(errs) / max(1, len(errs)))


def rollout_mse(pred: Tensor, truth: Tensor, *, skip: int = 0) -> float:
    """Mean over frames >= ``skip`` and particles of the squared error summed over dimensions."""
    if pred.shape != truth.shape:
        raise UserError(f"prediction {tuple(pred.shape)} and truth {tuple(truth.shape)} differ in shape")
    return float(((pred[skip:] - truth[skip:]) ** 2).sum(-1).mean())


def relative_l2(pred: Tensor, truth: Tensor) -> float:
    """Mean over frames of ||X^ - X||_F / ||X||_F for (T, N, d) clouds."""
    num = (pred - truth).flatten(1).norm(dim=1)
    den = truth.flatten(1).norm(dim=1).clamp_min(1e-12)
    return float((num / den).mean())


def chamfer_distance(a: Tensor, b: Tensor, *, max_points: int = 2048, seed: int = 0) -> float:
    """Symmetric Chamfer distance (mean of the two directed mean squared NN distances)."""
    g = torch.Generator().manual_seed(seed)

    def sub(x: Tensor) -> Tensor:
        if x.shape[0] <= max_points:
            return x
        return x[torch.randperm(x.shape[0], generator=g)[:max_points].to(x.device)]

    a, b = sub(a), sub(b)
    _, dab = knn(b, a, 1)
    _, dba = knn(a, b, 1)
    return float(0.5 * (dab.mean() + dba.mean()))


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def n_params(module: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for p in module.parameters())


def exponential_lr(total_steps: int, lr: float, lr_final: float) -> Callable[[int], float]:
    """LR multiplier decaying exponentially from 1 to ``lr_final / lr`` over ``total_steps``."""
    ratio = lr_final / lr
    return lambda k: ratio ** (min(k, total_steps) / max(1, total_steps))


@torch.no_grad()
def dense_rollout(stepper: ParticleSimulator, decoder: DenseDecoder, full: Tensor, sparse_index: Tensor,
                  particle_type: Tensor, *, steps: int | None = None, clamp_to_bounds: bool = False) -> tuple[Tensor, Tensor]:
    """Roll the stepper out on the sparse particles and decode every frame to the full cloud.

    Args:
        full: (T, N, d) ground truth (frame 0 = the reference; the first W + 1 frames seed the rollout).
        sparse_index: (n,) indices of the sparse particles.
        steps: predicted frames (default: to the end of the trajectory).

    Returns:
        (sparse rollout (W + 1 + steps, n, d), decoded cloud (W + 1 + steps, N, d)).
    """
    W = stepper.window
    steps = full.shape[0] - W - 1 if steps is None else steps
    sp = rollout(stepper, full[:W + 1, sparse_index], particle_type[sparse_index], steps, clamp_to_bounds=clamp_to_bounds)
    was = decoder.training
    decoder.eval()
    plan = decoder.prepare(full[0, sparse_index], full[0])
    dense = decoder(plan, sp)
    decoder.train(was)
    return sp, dense


@torch.no_grad()
def step_times(stepper: ParticleSimulator, window: Tensor, particle_type: Tensor, *,
               decoder: DenseDecoder | None = None, plan: Any = None, repeats: int = 5,
               warmup: int = 1) -> dict[str, float]:
    """Median seconds of one rollout step: the graph, the stepper (graph included) and the decode.

    ``window`` (n, W + 1, d) is the stepper's input; with a ``decoder`` and its ``plan`` the decoded
    cloud of the predicted state is timed too (``total`` = stepper + decode).
    """
    was = stepper.training
    stepper.eval()
    out = {"graph": median_time(lambda: stepper.graph(window[:, -1]), repeats=repeats, warmup=warmup),
           "stepper": median_time(lambda: stepper.predict_positions(window, particle_type), repeats=repeats, warmup=warmup)}
    out["total"] = out["stepper"]
    if decoder is not None:
        nxt = stepper.predict_positions(window, particle_type)
        decoder.eval()
        out["decode"] = median_time(lambda: decoder(plan, nxt), repeats=repeats, warmup=warmup)
        out["total"] = out["stepper"] + out["decode"]
    stepper.train(was)
    return out


def constant_velocity(full: Tensor, window: int) -> Tensor:
    """The reference rollout that keeps the last seed velocity: (T, N, d) like ``full``."""
    W = window
    k = torch.arange(1, full.shape[0] - W, dtype=full.dtype, device=full.device)[:, None, None]
    return torch.cat([full[:W + 1], full[W] + (full[W] - full[W - 1]) * k])


@torch.no_grad()
def compare_rollouts(reduced: ParticleSimulator, full_model: ParticleSimulator, decoder: DenseDecoder,
                     trajectories: Sequence[Trajectory], sparse_index: Sequence[Tensor], *,
                     names: tuple[str, str] = ("giorom", "gns"), timing_repeats: int = 5,
                     extra: dict[str, tuple[ParticleSimulator, DenseDecoder]] | None = None,
                     clamp_to_bounds: bool = False) -> dict[str, Any]:
    """Test a reduced-order stepper (+ decoder) against a full-cloud stepper on whole trajectories.

    Per trajectory: rollout MSE over every frame after the W + 1 seed frames (the reduced model's
    decoded full cloud and its sparse points; the full model; constant velocity), teacher-forced
    one-step MSE, Chamfer distance and relative L2 of the full clouds, and the decoder's own
    relative L2 from the true sparse frames. ``extra`` maps more names to (sparse stepper, decoder)
    pairs evaluated like the reduced model (e.g. GNS on the sparse points + IDW). Timing (first
    trajectory): median seconds per rollout step of both, measured side by side (:func:`step_times`).

    Returns:
        ``{"rows": [per-trajectory dict], "keep": first trajectory's clouds, "timing": {name: times}}``.
    """
    a, b = names
    W = reduced.window
    rows, keep = [], {}
    for k, traj in enumerate(trajectories):
        x, typ, si = traj.position, traj.particle_type, sparse_index[k]
        frames = range(W + 1, x.shape[0])
        sp, dense = dense_rollout(reduced, decoder, x, si, typ, clamp_to_bounds=clamp_to_bounds)
        full = rollout(full_model, x[:W + 1], typ, x.shape[0] - W - 1, clamp_to_bounds=clamp_to_bounds)
        decoder.eval()
        recon = decoder(decoder.prepare(x[0, si], x[0]), x[:, si])
        rows.append({
            "trajectory": k,
            f"rollout_mse/{a}": rollout_mse(dense, x, skip=W + 1),
            f"rollout_mse/{a}_sparse": rollout_mse(sp, x[:, si], skip=W + 1),
            f"rollout_mse/{b}": rollout_mse(full, x, skip=W + 1),
            "rollout_mse/const_vel": rollout_mse(constant_velocity(x, W), x, skip=W + 1),
            f"one_step_mse/{a}": one_step_mse(reduced, [x[:, si]], [typ[si]], max_frames=20),
            f"one_step_mse/{b}": one_step_mse(full_model, [x], [typ], max_frames=20),
            f"chamfer/{a}": sum(chamfer_distance(dense[t], x[t]) for t in frames) / len(frames),
            f"chamfer/{b}": sum(chamfer_distance(full[t], x[t]) for t in frames) / len(frames),
            f"rel_l2/{a}": relative_l2(dense[W + 1:], x[W + 1:]),
            f"rel_l2/{b}": relative_l2(full[W + 1:], x[W + 1:]),
            "rel_l2/decoder_only": relative_l2(recon, x),
        })
        for name, (stepper, dec) in (extra or {}).items():
            _, dx = dense_rollout(stepper, dec, x, si, typ, clamp_to_bounds=clamp_to_bounds)
            rows[-1][f"rollout_mse/{name}"] = rollout_mse(dx, x, skip=W + 1)
            rows[-1][f"chamfer/{name}"] = sum(chamfer_distance(dx[t], x[t]) for t in frames) / len(frames)
        if k == 0:
            keep = {"truth": x, a: dense, b: full, "sparse_index": si}
    x, typ, si = trajectories[0].position, trajectories[0].particle_type, sparse_index[0]
    win = x[:W + 1].transpose(0, 1)
    plan = decoder.prepare(x[0, si], x[0])
    timing = {a: step_times(reduced, win[si], typ[si], decoder=decoder, plan=plan, repeats=timing_repeats),
              b: step_times(full_model, win, typ, repeats=timing_repeats)}
    return {"rows": rows, "keep": keep, "timing": timing}


__all__ = [
    "DecoderBatches",
    "compare_rollouts",
    "constant_velocity",
    "chamfer_distance",
    "decoder_loss",
    "dense_rollout",
    "exponential_lr",
    "median_time",
    "n_params",
    "step_times",
    "one_step_mse",
    "relative_l2",
    "rollout",
    "rollout_mse",
    "stepper_loss",
]
