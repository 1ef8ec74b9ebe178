"""A local Spark standalone cluster (`fleetstream up --spark-workers N`): a master and N workers,
started from the pyspark installation's own jars (no Spark download), on loopback.

The commands then submit their applications there (``FLEETSTREAM_SPARK__MASTER`` becomes the
master's URL): the same code that runs in local mode runs on a cluster, with executors in JVMs of
their own, which is how it runs on a real one."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from fleetstream.config import LOCAL_HOST, Settings
from fleetstream.errors import FleetstreamError
from fleetstream.local.java import find_java

MASTER = "spark-master"
#: the daemons' own heap (the executors the workers start get spark.executor.memory)
DAEMON_HEAP = "256m"


def worker_name(worker: int) -> str:
    """The service name of worker ``worker`` (1, 2, ...)."""
    return f"spark-worker-{worker}"


def is_part_name(name: str) -> bool:
    """Whether a service is the cluster's master or one of its workers.

    >>> [is_part_name(n) for n in (MASTER, "spark-worker-2", "spark-workers", "stream")]
    [True, True, False, False]
    """
    return name == MASTER or (name.startswith("spark-worker-") and name.rsplit("-", 1)[1].isdigit())


def names(settings: Settings) -> list[str]:
    """The services of the configured cluster: the master, then each worker."""
    return [MASTER, *(worker_name(w) for w in range(1, settings.spark.workers + 1))]


def spark_home() -> Path:
    """The pyspark installation: its ``jars`` folder is a Spark distribution's."""
    import pyspark

    return Path(pyspark.__file__).parent


def scala_version() -> str:
    """The Scala version of the pyspark installation's jars (``2.13``)."""
    for jar in (spark_home() / "jars").glob("scala-library-*.jar"):
        if match := re.match(r"scala-library-(\d+\.\d+)\.", jar.name):
            return match.group(1)
    raise FleetstreamError(f"No scala-library jar in {spark_home() / 'jars'}: is pyspark installed whole?")


def cluster_dir(settings: Settings) -> Path:
    return settings.state_dir / "spark"


def ports(settings: Settings) -> dict[str, int]:
    """Every port the cluster binds, by what binds it (workers' RPC ports are chosen by the system)."""
    spark = settings.spark
    found = {"Spark master": spark.cluster_port, "Spark master web UI": spark.ui_port}
    found |= {f"Spark worker {w} web UI": spark.ui_port + w for w in range(1, spark.workers + 1)}
    return found


def environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """The daemons' environment: the pyspark installation as SPARK_HOME (the workers build their
    executors' command lines from it), loopback, and the Java fleetstream found."""
    java = Path(find_java(settings.java_home))
    return {
        **base,
        "SPARK_HOME": str(spark_home()),
        # the workers' launcher asks for it (bin/load-spark-env.sh sets it for a distribution's scripts)
        "SPARK_SCALA_VERSION": scala_version(),
        "SPARK_LOCAL_IP": LOCAL_HOST,
        "JAVA_HOME": str(java.resolve().parent.parent),
        "SPARK_LOG_DIR": str(cluster_dir(settings) / "logs"),
    }


def _daemon(settings: Settings, main_class: str, *args: str, options: tuple[str, ...] = ()) -> list[str]:
    java = find_java(settings.java_home)
    classpath = f"{spark_home() / 'jars'}/*"
    return [java, f"-Xmx{DAEMON_HEAP}", "-XX:+ExitOnOutOfMemoryError", *options, "-cp", classpath, main_class, *args]


def master_command(settings: Settings) -> list[str]:
    """The master: its RPC port and web UI; no REST submission server (an unauthenticated way to run
    code, and a fixed port, 6066, that a second cluster would find taken)."""
    spark = settings.spark
    return _daemon(settings, "org.apache.spark.deploy.master.Master", "--host", LOCAL_HOST,
                   "--port", str(spark.cluster_port), "--webui-port", str(spark.ui_port),
                   options=("-Dspark.master.rest.enabled=false",))  # fmt: skip


def worker_command(settings: Settings, worker: int) -> list[str]:
    spark = settings.spark
    work = cluster_dir(settings) / f"worker-{worker}"
    work.mkdir(parents=True, exist_ok=True)
    return _daemon(
        settings, "org.apache.spark.deploy.worker.Worker", "--host", LOCAL_HOST,
        "--webui-port", str(spark.ui_port + worker), "--cores", str(spark.worker_cores),
        "--memory", spark.worker_memory, "--work-dir", str(work), spark.cluster_url,
    )  # fmt: skip


def master_state(settings: Settings, timeout: float = 2.0) -> dict[str, object] | None:
    """The master's JSON state (its workers, applications), or None when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://{LOCAL_HOST}:{settings.spark.ui_port}/json/", timeout=timeout) as answer:
            state: dict[str, object] = json.loads(answer.read())
            return state
    except (urllib.error.URLError, OSError, ValueError):
        return None


def alive_workers(settings: Settings) -> int:
    """How many workers the master has registered as alive (0 when it does not answer)."""
    state = master_state(settings)
    return int(state.get("aliveworkers", 0)) if state else 0  # type: ignore[call-overload]


def session_conf(settings: Settings) -> dict[str, str]:
    """What an application on the local cluster sets: half the cluster's cores (at least one) and
    executors of half a worker's memory, so that the stream's two applications (the lake's and the
    alert publisher's, `--separate-alert-app`) both get executors. One application alone may take
    more through ``FLEETSTREAM_SPARK__CONF`` (``spark.cores.max``).

    >>> from fleetstream.config import SparkSettings
    >>> session_conf(Settings(spark=SparkSettings(workers=1, worker_cores=2, worker_memory="2g")))
    {'spark.cores.max': '1', 'spark.executor.memory': '1024m'}
    >>> session_conf(Settings(spark=SparkSettings(workers=2, worker_cores=2, worker_memory="3G")))
    {'spark.cores.max': '2', 'spark.executor.memory': '1536m'}
    """
    spark = settings.spark
    if not spark.on_local_cluster:
        return {}
    worker_mb = int(spark.worker_memory[:-1]) * (1024 if spark.worker_memory[-1] in "gG" else 1)
    return {"spark.cores.max": str(max(1, spark.workers * spark.worker_cores // 2)),
            "spark.executor.memory": f"{worker_mb // 2}m"}  # fmt: skip
