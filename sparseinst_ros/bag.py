"""`python -m sparseinst_ros.bag`: the recorded-data command `sparseinst_bag`, `sparseinst_ros.tools.bag.cli`."""
from sparseinst_ros.tools.bag.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
