import os

# Tests run on the CPU; several host devices let the sharded paths run too.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Small LAPACK calls (the GP tests' references) slow down badly with
# multi-threaded BLAS when the cores are busy with the other test worker.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from hypothesis import settings  # noqa: E402

# JAX compiles make the first example slow; deadlines would only measure that.
settings.register_profile("jaxhpo", deadline=None, max_examples=60, print_blob=True)
settings.load_profile("jaxhpo")
