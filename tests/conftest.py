"""Tests run in float64 where they compare against exact computations, on one thread for reproducibility."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
