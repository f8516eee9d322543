"""Shared test settings."""

import os

import torch

# Two pytest-xdist workers on a 2-core machine: one torch thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
