"""`python -m sparseinst_core.export`: the ONNX export command, `sparseinst_core.tools.export`."""
from sparseinst_core.tools.export import main

if __name__ == "__main__":
    raise SystemExit(main())
