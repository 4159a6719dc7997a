"""Estimator tests run on tiny tensors: one intra-op thread.

On the shared 2-core machine, torch's OpenMP-parallel kernels (``log_sigmoid``,
``binary_cross_entropy_with_logits``) take ~10 ms per call on a 64-element tensor under
contention versus ~2 µs single-threaded; the tests measure estimators, not thread scheduling.
"""

import torch

torch.set_num_threads(1)
