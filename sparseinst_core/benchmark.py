"""`python -m sparseinst_core.benchmark`: the speed benchmark, `sparseinst_core.tools.benchmark`."""
from sparseinst_core.tools.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
