"""inferfleet node agent: model registry -> exporters -> verification -> Triton
repository -> server -> load generation -> report."""

import os

__version__ = "0.1.0"

# OpenMP threads (PyTorch eager and TorchScript, AOTInductor's CPU kernels) spin while they wait
# by default. On a CPU shared with other work they then burn the cores the busy threads need, and
# eager throughput collapses (resnet18 batch 1, 2 CPUs at load 6: 1.5 inf/s spinning, 6.4 passive),
# inflating every speedup over it. Passive waiting is set before torch loads libgomp, unless the
# environment chose (OMP_WAIT_POLICY=ACTIVE may gain a few percent on a quiet, dedicated node);
# benchmark results record the policy in their settings.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
