"""Learn the values of a sparse symmetric matrix from its products, by gradient descent.

    python examples/fit_symmetric_values.py [--steps 200] [--n 200] [--device cpu|cuda]

The structure (which entries are stored) is known; the values are a parameter. Observations are
products Y = A X for random probes X. The loss is minimized through the natural call
`kernel(A=A.with_values(values), X=X)` under `torch.compile(fullgraph=True)`: the kernel reads
each stored entry once and gradients flow to the canonical values only (a symmetric matrix has
half the unknowns). Prints the loss and the error of the recovered values.
"""

from __future__ import annotations

import argparse

import torch

import systec_gpu as sg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    n, device = args.n, torch.device(args.device)

    # the hidden symmetric matrix: ~8 stored entries per row, diagonally dominant
    dense = torch.randn(n, n, dtype=torch.float64) * (torch.rand(n, n) < 4 / n)
    dense = dense + dense.T + 8 * torch.eye(n, dtype=torch.float64)
    truth = sg.SymmetricTensor.from_dense(dense)
    kernel = sg.compile("Y[i,r] += A[i,j]*X[j,r]", symmetric={"A": "full"})
    probes = torch.randn(n, 16, dtype=torch.float64, device=device)
    observed = kernel(A=truth, X=probes)

    values = torch.zeros(truth.nnz, dtype=torch.float64, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([values], lr=0.5)

    @torch.compile(fullgraph=True)
    def loss_fn(values):
        return ((kernel(A=truth.with_values(values), X=probes) - observed) ** 2).mean()

    for step in range(args.steps):
        optimizer.zero_grad()
        loss = loss_fn(values)
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3e}")
    error = (values.detach().cpu() - torch.as_tensor(truth.values)).abs().max().item()
    print(f"{truth.nnz} canonical values ({truth.n_expanded} stored in the full matrix); "
          f"max error of the recovered values {error:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
