"""What ``client.run`` reads in each worker process about how its nanny started it
(``cluster.batch.worker_spawn_config``), shared by the cluster tests.

Lambdas, which cloudpickle sends by value, so that they run against the worker's own process:
``client.run(os.environ.get, ...)`` would carry the client's environment instead."""

# MALLOC_TRIM_THRESHOLD_ in the worker's environment (None: unset)
WORKER_MALLOC_TRIM = lambda: __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_")  # noqa: E731
# whether the worker runs distributed's statistical profiler (its periodic stack sampling)
WORKER_PROFILING = lambda dask_worker: "profile" in dask_worker.periodic_callbacks  # noqa: E731
