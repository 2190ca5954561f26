"""Suite-wide set-up: exported models go to a cache folder of this test session, not the user's ~/.cache."""
import atexit
import os
import shutil
import tempfile

# Before any test (or node process the tests start, which inherits the environment) exports a model.
if "SPARSEINST_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="sparseinst_test_cache_")
    os.environ["SPARSEINST_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
