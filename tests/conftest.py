import os

# Tests run on the CPU; several host devices let the sharded paths run too.
# The suite is bound by XLA compile time on small problems: the loop emitters
# and LLVM -O1 compile its programs in about 60% of the default time (the
# same numbers to rounding; the benchmarks and the demo use the defaults).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_cpu_use_fusion_emitters=false "
                                   "--xla_backend_optimization_level=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Small LAPACK calls (the GP tests' references) slow down badly with
# multi-threaded BLAS when the cores are busy with the other test worker.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# The jaxhpo program keeps compiled programs on disk: the suite's runs of it
# write to a folder of their own, not to the user's cache.
if "JAXHPO_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAXHPO_CACHE_DIR"] = tempfile.mkdtemp(prefix="jaxhpo-tests-xla-")
    atexit.register(shutil.rmtree, os.environ["JAXHPO_CACHE_DIR"], ignore_errors=True)

from hypothesis import settings  # noqa: E402

# JAX compiles make the first example slow; deadlines would only measure that.
settings.register_profile("jaxhpo", deadline=None, max_examples=60, print_blob=True)
settings.load_profile("jaxhpo")
