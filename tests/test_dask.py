"""Stage one on a dask.distributed cluster: identical files, also when a worker dies."""

import os
import signal
import threading
import time

import distributed  # the test extra installs dask.distributed
import pytest

import popinfer
from conftest import SAMPLE_DATA

RATS = str(SAMPLE_DATA / "rat_tumors.csv")
OPTIONS = dict(n_draws=400, n_walkers=16, batch_size=4, seed=9, progress=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("dask") / "local.h5"
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        popinfer.fit_individuals(RATS, "binomial", path, **OPTIONS)
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    return path.read_bytes()


def test_local_cluster_gives_the_same_file(tmp_path, reproducible, reference):
    path = tmp_path / "dask.h5"
    popinfer.fit_individuals(RATS, "binomial", path, scheduler="local:2", **OPTIONS)
    assert path.read_bytes() == reference


def test_a_killed_worker_changes_nothing(tmp_path, reproducible, reference):
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    client = distributed.Client(cluster)
    pids = client.run(os.getpid)
    killed = {}

    def kill_one():
        """Kill the first worker as soon as it is computing a batch (an observable event)."""
        address, pid = sorted(pids.items())[0]
        began = time.time()
        while not client.processing(workers=[address]).get(address) and time.time() - began < 120:
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        killed["at"] = time.time()

    try:
        killer = threading.Thread(target=kill_one)
        killer.start()
        path = tmp_path / "dask.h5"
        popinfer.fit_individuals(RATS, "binomial", path, scheduler=cluster.scheduler_address, **OPTIONS)
        finished = time.time()
        killer.join()
    finally:
        client.close()
        cluster.close()
    assert killed["at"] < finished  # the worker died while the run was going on
    assert path.read_bytes() == reference


def test_unreachable_scheduler_and_bad_local_spec(tmp_path):
    with pytest.raises(popinfer.OutputError, match="Cannot reach the Dask scheduler"):
        popinfer.fit_individuals(RATS, "binomial", tmp_path / "x.h5", scheduler="tcp://127.0.0.1:9", **OPTIONS)
    with pytest.raises(popinfer.UsageError, match="local:N"):
        popinfer.fit_individuals(RATS, "binomial", tmp_path / "y.h5", scheduler="local:zero", **OPTIONS)
    assert os.listdir(tmp_path) == []
