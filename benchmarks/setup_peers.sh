#!/usr/bin/env bash
# Install the peer tools (Kronfluence, Bergson) into bench-work/peers-venv, apart from wherefrom's own
# environment. The venv sees the system site-packages (torch 2.13.0+cpu, transformers, datasets, ...),
# and torch is pinned to that release in every install so that no other torch build is pulled in.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PEERS_VENV:-$repo_root/bench-work/peers-venv}"
torch_pin="torch==2.13.0"

python3 -m venv --system-site-packages "$venv"
pip="$venv/bin/python -m pip"

# Kronfluence declares torchvision but never imports it (and torchvision would pin a newer torch):
# install it without dependencies, then the dependencies it does import.
$pip install --no-deps "kronfluence==1.0.1"
$pip install "$torch_pin" "accelerate>=0.31" "einops>=0.8" "einconv>=0.1" "opt-einsum>=3.3" \
    "safetensors>=0.4.2" "tqdm>=4.66.4"

# Bergson declares torchvision and torchaudio but never imports them: install with torch pinned, then
# remove both.
$pip install "bergson==2.5.1" "$torch_pin"
$pip uninstall -y torchvision torchaudio || true

"$venv/bin/python" - <<'PY'
import torch, kronfluence, bergson
assert torch.__version__.startswith("2.13.0"), torch.__version__
print("peers ready: torch", torch.__version__, "| kronfluence", kronfluence.__version__ if hasattr(kronfluence, "__version__") else "1.0.1", "| bergson", bergson.__file__)
PY
