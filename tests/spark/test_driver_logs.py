"""The Spark driver's log settings (pipeline/log4j2.properties): Spark's own at WARN, the lines that
say nothing to an operator lowered to ERROR, a user's own file in SPARK_CONF_DIR left to stand."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from fleetstream.pipeline.session import LOG4J2, log_options

#: a logger the file lowers, and one it leaves at the root's level
QUIETED = "org.apache.spark.sql.execution.python.streaming.TransformWithStateInPySparkStateServer"
KEPT = "org.apache.spark.sql.execution.streaming.runtime.MicroBatchExecution"  # "falling behind" warnings


def test_the_driver_runs_with_fleetstreams_log_settings(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    assert jvm.java.lang.System.getProperty("log4j2.configurationFile") == str(LOG4J2)
    manager = jvm.org.apache.logging.log4j.LogManager
    assert str(manager.getLogger(QUIETED).getLevel()) == "ERROR"
    assert str(manager.getLogger(KEPT).getLevel()) in {"WARN", "INFO"}  # Spark's level, or a test's setLogLevel


def test_the_users_own_log_settings_stand(tmp_path: Path) -> None:
    assert log_options({}) == f"-Dlog4j2.configurationFile={LOG4J2}"
    assert LOG4J2.is_file()
    (tmp_path / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert log_options({"SPARK_CONF_DIR": str(tmp_path)}) == ""
    assert log_options({"SPARK_HOME": str(tmp_path.parent), "SPARK_CONF_DIR": str(tmp_path)}) == ""
    home = tmp_path / "spark"
    (home / "conf").mkdir(parents=True)
    assert log_options({"SPARK_HOME": str(home)}).startswith("-Dlog4j2")  # no file there: fleetstream's
    (home / "conf" / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert log_options({"SPARK_HOME": str(home)}) == ""
