"""`fleetstream sql serve`: Spark's Thrift server (HiveServer2's protocol) over the lake's named tables.

Why this server: it runs the same Spark and Delta as the pipeline, so every Delta feature the
tables use (deletion vectors, column statistics, time travel with ``VERSION AS OF``) reads as the
pipeline wrote it, and beeline, JDBC (DBeaver, Superset) and ODBC clients connect to it unchanged.
Its cost is one Spark driver JVM (about 0.5 GiB resident idle, no CPU between questions).

The server's sessions are read-only unless ``FLEETSTREAM_SQL__READ_ONLY=false`` (the extension in
``java/ReadOnly.java``); it listens on 127.0.0.1 unless told otherwise, and anywhere else only with a
password (``FLEETSTREAM_SQL__PASSWORD``; user ``FLEETSTREAM_SQL__USER``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
from typing import TYPE_CHECKING

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError
from fleetstream.lake.catalog import SCHEMA, register
from fleetstream.sql.extension import PASSWORD_AUTH, READ_ONLY_EXTENSION, extension_jar

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
    (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings) -> None:
    """Refuse to listen beyond this machine without a password."""
    if not is_loopback(settings.sql.host) and settings.sql.password is None:
        raise FleetstreamError(
            f"the SQL endpoint would listen on {settings.sql.host} with no password: set FLEETSTREAM_SQL__PASSWORD "
            "(and FLEETSTREAM_SQL__USER, default 'fleet'), or keep FLEETSTREAM_SQL__HOST=127.0.0.1"
        )


def sql_conf(settings: Settings, read_only: bool | None = None) -> dict[str, str]:
    """Spark settings of a session that answers SQL: the named tables' extension (read-only unless
    ``read_only`` is False; default: the settings'), and the Thrift server's address and login."""
    jar = extension_jar(settings.cache_dir, settings.java_home)
    from fleetstream.jvm import spark_jars

    jars = [*(str(p) for p in spark_jars(settings.cache_dir)), str(jar)]
    home = settings.state_dir / "sql"
    for folder in ("operation_logs", "scratch", "scratch-local", "warehouse"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    extensions = ["io.delta.sql.DeltaSparkSessionExtension"]
    if settings.sql.read_only if read_only is None else read_only:
        extensions.append(READ_ONLY_EXTENSION)
    conf = {
        "spark.jars": ",".join(jars),
        # on the driver's own class path too: HiveServer2's threads (a client's session, the password
        # check) load classes with the JVM's class loader, which does not see spark.jars
        "spark.driver.extraClassPath": os.pathsep.join(jars),
        "spark.sql.extensions": ",".join(extensions),
        "spark.driver.memory": settings.sql.driver_memory,
        "spark.sql.catalogImplementation": "in-memory",
        "spark.sql.defaultCatalog": "spark_catalog",
        "spark.hadoop.hive.server2.thrift.bind.host": settings.sql.host,
        "spark.hadoop.hive.server2.thrift.port": str(settings.sql.port),
        "spark.hadoop.hive.server2.transport.mode": "binary",
        "spark.hadoop.hive.server2.authentication": "NONE",
        # the server's own operation logs and scratch space under the state directory, not /tmp
        "spark.hadoop.hive.server2.logging.operation.log.location": str(home / "operation_logs"),
        "spark.hadoop.hive.exec.scratchdir": str(home / "scratch"),
        "spark.hadoop.hive.exec.local.scratchdir": str(home / "scratch-local"),
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        # HiveServer2's execution client keeps a throwaway Derby store; its log goes here, not to the cwd
        "spark.driver.extraJavaOptions": f"-Dderby.stream.error.file={home / 'derby.log'}",
    }
    if settings.sql.password is not None:
        conf["spark.hadoop.hive.server2.authentication"] = "CUSTOM"
        conf["spark.hadoop.hive.server2.custom.authentication.class"] = PASSWORD_AUTH
    return conf


def sql_session(settings: Settings, app_name: str, read_only: bool | None = None) -> SparkSession:
    """A Spark session with the lake's tables registered under ``fleet`` (read-only unless told)."""
    from fleetstream.pipeline.session import spark_session

    if settings.sql.password is not None:  # read by the JVM's password check, never by a client
        os.environ["FLEETSTREAM_SQL_AUTH_USER"] = settings.sql.user
        os.environ["FLEETSTREAM_SQL_AUTH_PASSWORD"] = settings.sql.password.get_secret_value()
    spark = spark_session(
        settings,
        app_name,
        with_s3=settings.lake.root.startswith("s3a://"),
        batch_jvm=False,
        extra=sql_conf(settings, read_only),
    )
    register(trusted(spark), settings)
    spark.catalog.setCurrentDatabase(SCHEMA)
    return spark


def trusted(spark: SparkSession) -> SparkSession:
    """A session of the same Spark that the read-only check lets register tables."""
    session = spark.newSession()
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    jvm.io.fleetstream.sql.ReadOnly.trust(session._jsparkSession)
    return session


def serve(settings: Settings, stop: threading.Event) -> None:
    """Run the Thrift server until ``stop`` is set; register tables that appear every ``refresh_s``."""
    check_exposure(settings)
    spark = sql_session(settings, "fleetstream-sql")
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    if settings.sql.password is not None:  # HiveServer2 reads this one from a HiveConf of its own
        jvm.java.lang.System.setProperty("hive.server2.custom.authentication.class", PASSWORD_AUTH)
    try:
        server = jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(
            spark._jsparkSession.sqlContext()
        )
    except Exception as exc:  # py4j's error holds the JVM's reason (a port in use, most often)
        spark.stop()
        raise FleetstreamError(
            f"the SQL endpoint did not start on {settings.sql.host}:{settings.sql.port}: {exc}"
        ) from exc
    login = f"user {settings.sql.user} and its password" if settings.sql.password else "no login"
    log.info(
        "SQL endpoint on jdbc:hive2://%s:%d/%s (%s, %s)",
        settings.sql.host,
        settings.sql.port,
        SCHEMA,
        "read-only" if settings.sql.read_only else "read-write",
        login,
    )
    registrar = trusted(spark)
    known: set[str] = set()
    try:
        while not stop.wait(settings.sql.refresh_s):
            try:
                register(registrar, settings, known)
            except Exception as exc:  # a table being created right now: the next round registers it
                log.warning("registering new tables failed, retrying in %.0f s: %s", settings.sql.refresh_s, exc)
    finally:
        try:
            server.stop()
            spark.stop()
        except Exception as exc:  # the JVM went first (a signal to the whole process group)
            log.debug("stopping the SQL endpoint: %s", exc)
        log.info("SQL endpoint stopped")
