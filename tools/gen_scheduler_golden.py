"""Regenerate every scheduler golden file from diffusers 0.42.1 on torch 2.13.0 (CPU).

    pip install -e ".[ref]" && python tools/gen_scheduler_golden.py [family ...]

Each module in ``tools/golden_cases/`` defines ``FAMILY`` and ``cases()``; the files land
in ``tests/golden/schedulers/<FAMILY>.npz`` and ``.json``.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import diffusers  # noqa: E402
import torch  # noqa: E402
from golden_harness import write_cases  # noqa: E402


def main(argv):
    if diffusers.__version__ != "0.42.1" or not torch.__version__.startswith("2.13.0"):
        raise SystemExit(f"golden values come from diffusers 0.42.1 / torch 2.13.0, found {diffusers.__version__} / "
                         f"{torch.__version__}")
    torch.set_num_threads(1)
    import golden_cases

    for info in pkgutil.iter_modules(golden_cases.__path__):
        module = importlib.import_module(f"golden_cases.{info.name}")
        if argv and module.FAMILY not in argv:
            continue
        cases = module.cases()
        path = write_cases(module.FAMILY, cases)
        print(f"{module.FAMILY}: {len(cases)} cases -> "
              f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")


if __name__ == "__main__":
    main(sys.argv[1:])
