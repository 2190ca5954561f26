"""`python -m sparseinst_core.tools.benchmark`."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
