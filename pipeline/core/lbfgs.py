"""L-BFGS for a batch of independent problems, with no host synchronization.

`torch.optim.LBFGS` treats its parameters as one vector: B pairs stacked in one tensor would share
its dot products, step length and curvature history, so each pair's result would depend on its
batch-mates. Here every dot product, step length and history entry belongs to one row b of the
(B, n) view, so a pair's iterates are what they would be alone.

The direction H g comes from the compact representation of the L-BFGS matrix (Byrd, Nocedal &
Schnabel 1994, "Representations of quasi-Newton matrices", Theorem 2.2): two batched matrix
products over the stored pairs and an m x m triangular system, instead of the two-loop
recursion's 4m small kernels per iteration, which on a GPU cost more in launches than in
arithmetic. The small m x m algebra runs in float64, where it is exact enough for any m.

Every branch of torch's implementation that reads a value on the host (`if ys > 1e-10`, the first
step's `min(1, 1/|g|_1)`, the tolerance tests) is a `torch.where` on the device here: the loop
queues work without waiting for the GPU.

The iteration is torch.optim.LBFGS(lr=1, max_iter=1, line_search_fn=None, tolerance_grad=-1,
tolerance_change=-1) called once per step: the first step is -g scaled by min(1, 1/|g|_1), later
steps the quasi-Newton direction with unit length; a curvature pair (s, y) is kept only when
y.s > 1e-10, and H0 = y.s / y.y of the newest kept pair. One difference: torch keeps the last
`history` kept pairs; this keeps the kept pairs among the last `history` steps (a skipped pair
leaves its slot empty). They agree unless pairs are skipped.
"""

from __future__ import annotations

import torch

from .device import bmm_float32

# Elements per chunk of the stored vectors (see BatchedLBFGS.pairs).
CHUNK = 4096


class BatchedLBFGS:
    """Minimizes B independent objectives over the rows of `x` (B, ...), updated in place."""

    def __init__(
        self,
        x: torch.Tensor,
        history: int = 100,
        static: bool = False,
        dtype: torch.dtype | None = None,
    ):
        """`static`: every step does the same operations on the same tensors (the products run
        over all `history` slots, empty ones included), so that a CUDA graph can capture a step
        and replay it. Otherwise only the slots written so far are read.

        `dtype`: the stored curvature pairs' (default x's). bfloat16 halves the history's memory
        (at 512 px and 100 pairs, 630 MB of float32) and the bytes each iteration's products read;
        the products sum in float32 either way, and the gradient and the step stay in x's dtype."""
        self.x = x
        b, n = x.shape[0], x[0].numel()
        self.m = history
        self.static = static
        # Slot i holds (s_i, y_i) as rows 2i and 2i+1 of a (2m, n) matrix per pair, cut into
        # chunks of CHUNK elements: (B, C, m, 2, CHUNK). The products with the stored vectors
        # are then one bmm over B x C small matrices. One (2m, n) matrix per pair is a
        # tall-skinny product that cuBLAS runs at a fraction of the memory bandwidth
        # (tests/benchmarks/RESULTS.md, GPU check).
        self.n = n
        self.chunks = -(-n // CHUNK)  # n padded with zeros to a whole number of chunks
        self.pairs = x.new_zeros(b, self.chunks, history, 2, CHUNK, dtype=dtype or x.dtype)
        self.sy = torch.zeros(b, history, history, dtype=torch.float64, device=x.device)  # s_i.y_j
        self.yy = torch.zeros_like(self.sy)  # y_i.y_j
        self.kept = torch.zeros(b, history, dtype=torch.bool, device=x.device)
        self.gamma = torch.ones(b, dtype=torch.float64, device=x.device)  # H0 = gamma I
        # The slot the next pair goes to, kept on the device: indexing with a host number that
        # changes every step could not be replayed by a graph.
        self.slot = torch.zeros(1, dtype=torch.long, device=x.device)
        self.steps = 0
        # State updated in place, so that its addresses stay fixed across steps.
        self._prev_g = x.new_zeros(b, n)  # (B, n)
        self._d = x.new_zeros(b, n)
        self._t = x.new_zeros(b)
        # Rows restarted by `reset` (a new problem in the row): their next step is a first step.
        self._fresh = torch.zeros(b, dtype=torch.bool, device=x.device)

    @torch.no_grad()
    def reset(self, rows: torch.Tensor) -> None:
        """Start the rows where `rows` (B,) bool is true afresh, for a new problem whose x the
        caller has written: their history, curvature and previous step are cleared, and their
        next step is a first step (-g scaled by min(1, 1/|g|_1)), as if they had started alone
        (continuous batching: a finished pair's row takes the next pair). Other rows go on."""
        b = rows.shape[0]
        self.pairs.masked_fill_(rows.view(b, 1, 1, 1, 1), 0)
        self.sy.masked_fill_(rows.view(b, 1, 1), 0)
        self.yy.masked_fill_(rows.view(b, 1, 1), 0)
        self.kept.masked_fill_(rows[:, None], False)
        self.gamma.masked_fill_(rows, 1.0)
        self._prev_g.masked_fill_(rows[:, None], 0)
        self._d.masked_fill_(rows[:, None], 0)
        self._t.masked_fill_(rows, 0)
        self._fresh.logical_or_(rows)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One iteration from the gradient at the current x: stores the curvature pair of the
        previous step, then moves x along the new direction."""
        b = grad.shape[0]
        g = grad.reshape(b, -1)  # (B, n)
        if self.steps == 0:
            self._d.copy_(-g)
            self._t.copy_((1.0 / g.abs().sum(1)).clamp(max=1.0))  # (B,)
        else:
            wg = self._store(self._d * self._t[:, None], g - self._prev_g, g)
            self._d.copy_(-self._h_times(g, wg))
            self._t.fill_(1.0)
            self.slot.add_(1).remainder_(self.m)
            # Restarted rows: a first step, and no curvature pair from before their restart.
            fresh = self._fresh[:, None]
            self._d.copy_(torch.where(fresh, -g, self._d))
            first = (1.0 / g.abs().sum(1)).clamp(max=1.0)
            self._t.copy_(torch.where(self._fresh, first, self._t))
            self._fresh.zero_()
        self._prev_g.copy_(g)
        self.x.add_((self._d * self._t[:, None]).view_as(self.x))
        self.steps += 1

    def _written(self) -> int:
        """Slots read: those written so far (the first `steps` until the ring is full), or all
        of them in static mode, where the empty ones are zero and drop out."""
        return self.m if self.static else min(self.steps, self.m)

    def _stored(self) -> torch.Tensor:
        """The written slots as (B*C, 2k, CHUNK): a view, no copy."""
        b, c, k = self.pairs.shape[0], self.chunks, self._written()
        return self.pairs[:, :, :k].view(b * c, 2 * k, CHUNK)

    def _chunked(self, v: torch.Tensor) -> torch.Tensor:
        """(B, n) -> (B*C, CHUNK), zero-padded."""
        b = v.shape[0]
        v = torch.nn.functional.pad(v, (0, self.chunks * CHUNK - self.n))
        return v.reshape(b * self.chunks, CHUNK)  # a view unless padded or strided

    def _products(self, vectors: torch.Tensor) -> torch.Tensor:
        """Every stored row times each of `vectors` (B, n, v): (B, 2k, v) in float64."""
        b, _, v = vectors.shape
        cols = self._chunked(vectors.transpose(1, 2).reshape(b * v, -1))  # (B*v*C, CHUNK)
        cols = cols.view(b, v, self.chunks, CHUNK).permute(0, 2, 3, 1)  # (B, C, CHUNK, v)
        partial = _bmm(self._stored(), cols.reshape(b * self.chunks, CHUNK, v), self.pairs.dtype)
        return partial.view(b, self.chunks, -1, v).sum(1).double()  # (B, 2k, v)

    def _store(self, s: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Store the pair (s, y); returns the stored rows times g, (B, 2k), for `_h_times`."""
        b = s.shape[0]
        ys = (y * s).sum(1)  # (B,)
        keep = (ys > 1e-10) & ~self._fresh
        # A skipped pair is stored as zeros: zero rows and columns in the m x m matrices (with
        # a unit diagonal in R below) drop it from the compact formula exactly. `where`, not a
        # product: a row that turned non-finite must not leave NaN in its history.
        s = torch.where(keep[:, None], s, 0.0)
        y = torch.where(keep[:, None], y, 0.0)
        slot = self.slot
        new = torch.stack([self._chunked(s), self._chunked(y)], 1)  # (B*C, 2, CHUNK)
        new = new.to(self.pairs.dtype).view(b, self.chunks, 1, 2, CHUNK)
        self.pairs.index_copy_(2, slot, new)
        k = self._written()  # this slot included
        prods = self._products(torch.stack([s, y, g], 2))  # (B, 2k, 3): one pass for all three
        sy, yy = self.sy[:, :k, :k], self.yy[:, :k, :k]
        sy.index_copy_(2, slot, prods[:, 0::2, 1:2])  # column: s_i . y_new
        sy.index_copy_(1, slot, prods[:, 1::2, 0][:, None])  # row: s_new . y_j
        yy.index_copy_(2, slot, prods[:, 1::2, 1:2])
        yy.index_copy_(1, slot, prods[:, 1::2, 1][:, None])
        self.kept.index_copy_(1, slot, keep[:, None])
        yy_new = (y * y).sum(1).double()
        gamma = torch.where(keep, ys.double() / torch.where(keep, yy_new, 1.0), self.gamma)
        self.gamma.copy_(gamma)
        return prods[..., 2]

    def _h_times(self, g: torch.Tensor, wg: torch.Tensor) -> torch.Tensor:
        """H g for every row, by the compact form with H0 = gamma I:
            H = gamma I + [S  gamma Y] M [S^T; gamma Y^T],
            M = [[R^-T (D + gamma Y^T Y) R^-1, -R^-T], [-R^-1, 0]],
        R the upper triangle of S^T Y in chronological order, D its diagonal. `wg`: the stored
        rows times g, (B, 2k)."""
        b = g.shape[0]
        k = self._written()
        # Oldest first: slots fill 0, 1, ...; once the ring is full the oldest follows the newest.
        order = (self.slot + 1 + torch.arange(k, device=g.device)) % k
        sg, yg = wg[:, 0::2][:, order], wg[:, 1::2][:, order]  # (B, k) each
        sy = self.sy[:, :k, :k][:, order][:, :, order]
        yy = self.yy[:, :k, :k][:, order][:, :, order]
        skipped = ~self.kept[:, :k][:, order]
        r = torch.triu(sy) + torch.diag_embed(skipped.double())  # (B, k, k)
        dg = torch.diagonal(sy, dim1=1, dim2=2)  # (B, k): s_i . y_i, 0 where skipped
        gamma = self.gamma[:, None]  # (B, 1)
        u = torch.linalg.solve_triangular(r, sg[:, :, None], upper=True)[..., 0]  # R^-1 S^T g
        w = dg * u + gamma * (yy @ u[:, :, None])[..., 0] - gamma * yg
        p = torch.linalg.solve_triangular(r.transpose(1, 2), w[:, :, None], upper=False)[..., 0]
        coef = torch.empty(b, k, 2, dtype=torch.float64, device=g.device)
        coef[:, order, 0] = p  # on s_i
        coef[:, order, 1] = -gamma * u  # on y_i
        coef = coef.reshape(b, 1, 1, 2 * k).to(self.pairs.dtype).expand(b, self.chunks, 1, 2 * k)
        coef = coef.reshape(b * self.chunks, 1, 2 * k)
        hg = _bmm(coef, self._stored(), self.pairs.dtype)  # (B*C, 1, CHUNK)
        return gamma.to(g.dtype) * g + hg.view(b, -1)[:, : self.n].to(g.dtype)


def _bmm(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """a @ b batched in the stored history's `dtype` (a bf16 product as float32)."""
    return bmm_float32(a.to(dtype), b.to(dtype))
