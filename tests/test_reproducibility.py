"""sibnet.reproducibility: deterministic algorithms switched on without loading TorchInductor."""

from __future__ import annotations

import subprocess
import sys


def test_configure_torch_switches_determinism_on_without_the_compiler() -> None:
    code = (
        "import sys, torch\n"
        "from sibnet.reproducibility import configure_torch\n"
        "configure_torch(1, warn_only=True)\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "configure_torch(1)\n"
        "assert not torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "assert 'torch._inductor.config' not in sys.modules\n"
        "import torch._inductor.config as inductor\n"
        "configure_torch(1)\n"
        "assert inductor.deterministic, 'once loaded, the compiler is made deterministic too'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
