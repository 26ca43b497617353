"""BatchedLBFGS: torch's L-BFGS iteration, per pair, without host reads."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.lbfgs import BatchedLBFGS


def _problems(seed: int = 0, n: int = 40, b: int = 3):
    """B smooth non-quadratic objectives f_b(x) = x A_b x / 2 - c_b x + 0.1 |x|^4."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, n, n, generator=g)
    a = a @ a.transpose(1, 2) + 0.1 * torch.eye(n)
    c = torch.randn(b, n, generator=g)
    x0 = torch.randn(b, n, generator=g)

    def f(x: torch.Tensor, i: int) -> torch.Tensor:
        return 0.5 * x @ a[i] @ x - c[i] @ x + 0.1 * (x**4).sum()

    return f, x0


def _run_batched(
    f,
    x0: torch.Tensor,
    rows: list[int],
    steps: int,
    history: int,
    static: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    x = x0[rows].clone().requires_grad_(True)
    opt = BatchedLBFGS(x.data, history=history, static=static, dtype=dtype)
    for _ in range(steps):
        x.grad = None
        sum(f(x[j], i) for j, i in enumerate(rows)).backward()
        opt.step(x.grad)
    return x.detach()


def test_matches_torch_lbfgs_row_by_row_through_a_full_history():
    """Same iteration as torch.optim.LBFGS(max_iter=1, no line search) per row. 40 steps with a
    history of 10 wrap the ring four times. Tolerance 1e-3 absolute on values of order 1, not
    exact: float32 sums in another order."""
    f, x0 = _problems()
    batched = _run_batched(f, x0, [0, 1, 2], steps=40, history=10)
    for i in range(3):
        x = x0[i].clone().requires_grad_(True)
        opt = torch.optim.LBFGS(
            [x], lr=1, max_iter=1, history_size=10, tolerance_grad=-1, tolerance_change=-1
        )

        def closure(x=x, opt=opt, i=i):
            opt.zero_grad()
            loss = f(x, i)
            loss.backward()
            return loss

        for _ in range(40):
            opt.step(closure)
        assert float((batched[i] - x.detach()).abs().max()) < 1e-3
        assert float(f(batched[i], i)) < float(f(x0[i], i))


def test_a_row_does_not_depend_on_its_batch_mates():
    f, x0 = _problems(seed=1)
    together = _run_batched(f, x0, [0, 1, 2], steps=25, history=8)
    for i in range(3):
        alone = _run_batched(f, x0, [i], steps=25, history=8)[0]
        assert float((together[i] - alone).abs().max()) < 1e-3


def test_a_non_finite_row_leaves_the_others_alone():
    f, x0 = _problems(seed=2)
    x0 = x0.clone()
    x0[1, 0] = float("nan")
    out = _run_batched(f, x0, [0, 1, 2], steps=10, history=5)
    assert torch.isnan(out[1]).any()
    assert torch.isfinite(out[[0, 2]]).all()
    clean = _run_batched(f, x0, [0, 2], steps=10, history=5)
    assert float((out[[0, 2]] - clean).abs().max()) < 1e-4


def test_static_mode_takes_the_same_steps():
    """Static mode (every step over all slots, for CUDA graphs) reads empty slots as zeros that
    drop out of the formula: the same iterates within float rounding."""
    f, x0 = _problems(seed=3)
    dynamic = _run_batched(f, x0, [0, 1, 2], steps=30, history=12)
    static = _run_batched(f, x0, [0, 1, 2], steps=30, history=12, static=True)
    assert float((dynamic - static).abs().max()) < 1e-3


def test_a_bf16_history_minimizes_as_the_float32_one():
    """The bf16 history (`Stylizer(bf16_history=True)`): half the stored bytes; after 40 steps
    each row's objective within 1 % of the float32 history's progress."""
    f, x0 = _problems(seed=3)
    rows = [0, 1, 2]
    full = _run_batched(f, x0, rows, 40, 10)
    half = _run_batched(f, x0, rows, 40, 10, dtype=torch.bfloat16)
    for j, i in enumerate(rows):
        start, a, b = float(f(x0[i], i)), float(f(full[j], i)), float(f(half[j], i))
        assert abs(b - a) <= 0.01 * abs(start - a)
    opt = BatchedLBFGS(x0.clone(), history=10, dtype=torch.bfloat16)
    assert opt.pairs.dtype == torch.bfloat16


@pytest.mark.parametrize("static", [False, True])
def test_a_reset_row_starts_afresh_as_if_alone(static):
    """Continuous batching: after 15 steps on problem 0, row 0 is reset and given problem 1's
    start; its next 25 steps match problem 1 run alone, while row 1 (problem 2) goes on
    undisturbed, as a run of its own would. Static mode too: a stream replayed by a CUDA graph
    resets rows between replays."""
    f, x0 = _problems(seed=4)
    x = x0[[0, 2]].clone().requires_grad_(True)
    opt = BatchedLBFGS(x.data, history=10, static=static)
    problems = [0, 2]

    def step() -> None:
        x.grad = None
        sum(f(x[j], i) for j, i in enumerate(problems)).backward()
        opt.step(x.grad)

    for _ in range(15):
        step()
    problems[0] = 1
    x.data[0] = x0[1]
    opt.reset(torch.tensor([True, False]))
    for _ in range(25):
        step()
    alone = _run_batched(f, x0, [1], 25, 10)[0]
    assert float((x.detach()[0] - alone).abs().max()) < 1e-3
    row1 = _run_batched(f, x0, [2], 40, 10)[0]
    assert float((x.detach()[1] - row1).abs().max()) < 1e-3
