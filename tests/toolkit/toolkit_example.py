"""The toolkit on its own: the Hessian spectrum of a small network with flatbook's core
dependencies only (torch, numpy, scipy, tqdm). Run by tests/book/test_layers.py with the book's
packages made unimportable, and by .ci/run in a clean virtual environment after `pip install .`
(no extras). Prints one line and exits 0 when every check holds."""

import sys

import torch

import flatbook

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
x = torch.randn(64, 5, dtype=torch.float64)
y = torch.randint(0, 3, (64,))
loss_fn = torch.nn.CrossEntropyLoss()

op = flatbook.HessianOperator(model, loss_fn, (x, y), batch_size=16)
spectrum = flatbook.slq(op, steps=op.num_params, probes=2, seed=0)  # full Krylov space: exact moments
H = flatbook.dense_hessian(model, loss_fn, (x, y), batch_size=16)
eigenvalues = torch.linalg.eigvalsh(H)

top = float(eigenvalues[-1])
ritz = torch.as_tensor(spectrum.nodes[0][~torch.isnan(torch.as_tensor(spectrum.nodes[0]))])
checks = {
    # with a full Krylov space the Ritz values are eigenvalues, the largest among them
    "lambda_max": abs(spectrum.lambda_max - top) <= 1e-8 * abs(top),
    "ritz values are eigenvalues": bool(((ritz[:, None] - eigenvalues[None, :]).abs().min(dim=1).values
                                         <= 1e-8 * abs(top)).all()),
    "symmetric operator": flatbook.spectrum.check_operator(op, seed=1) < 1e-12,
}
layers = sorted(m for m in sys.modules if m.startswith(("flatbook.book", "flatbook.chapters", "flatbook.theory")))
print(f"flatbook toolkit: P = {op.num_params}, lambda_max = {spectrum.lambda_max:.6f}, "
      f"checks {checks}, upper layers imported: {layers or 'none'}")
sys.exit(0 if all(checks.values()) and not layers else 1)
