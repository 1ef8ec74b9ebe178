"""The Spark driver's log settings (pipeline/log4j2.properties): Spark's own at WARN, the lines that
repeat in every run without telling an operator anything dropped by their text, every other line
kept; a user's own file in Spark's configuration folder stands."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from fleetstream.config import Settings
from fleetstream.pipeline.session import LOG4J2, log_options, session_conf

#: lines the file drops, as Spark 4.2 prints them
DROPPED = (
    "Value state trip doesn't contain a value.",
    "No more data to read from the socket",
    "RDD 492 was locally checkpointed, its lineage has been truncated and cannot be recomputed after unpersisting",
    "spark.sql.adaptive.enabled is not supported in streaming DataFrames/Datasets and will be disabled.",
    "Truncated the string representation of a plan since it was too large. This behavior can be adjusted by "
    "setting 'spark.sql.debug.maxToStringFields'.",
    "Unable to load native-hadoop library for your platform... using builtin-java classes where applicable",
    "Failed to register timer for key=[car-00025] and timestamp=1796569200000 ms since it already exists",
)
#: lines it keeps: a batch falling behind, a state store's trouble, a stateful query's own AQE note
KEPT = (
    "Current batch is falling behind. The trigger interval is 5000 milliseconds, but spent 8000 milliseconds",
    "Value state trip was not found in the state store",
    "Disabling AQE since AQE is not supported in stateful workloads.",
    "Failed to register timer for key=[car-00025] and timestamp=1796569200000 ms: the key is gone",
)


def test_the_driver_drops_the_noise_and_keeps_the_rest(spark: SparkSession) -> None:
    if not log_options():
        pytest.skip("Spark's configuration folder has a log4j2.properties of its own: it stands")
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    assert jvm.java.lang.System.getProperty("log4j2.configurationFile") == str(LOG4J2)
    log4j = jvm.org.apache.logging.log4j
    console = log4j.LogManager.getContext(False).getConfiguration().getAppender("console")
    quiet = console.getFilter()
    assert quiet is not None, "the console appender has no filter: another log configuration is in use"

    def verdict(text: str) -> str:
        event = (
            log4j.core.impl.Log4jLogEvent.newBuilder()
            .setLoggerName("org.apache.spark.Test")
            .setLevel(log4j.Level.WARN)
            .setMessage(log4j.message.SimpleMessage(text))
            .build()
        )
        return str(quiet.filter(event))

    assert {text: verdict(text) for text in DROPPED} == dict.fromkeys(DROPPED, "DENY")
    assert {text: verdict(text) for text in KEPT} == dict.fromkeys(KEPT, "NEUTRAL")


def test_the_option_goes_first_and_the_users_own_settings_stand(tmp_path: Path) -> None:
    nowhere = {"SPARK_CONF_DIR": str(tmp_path / "none")}
    assert log_options(nowhere, Path("/etc/x.properties")) == "-Dlog4j2.configurationFile=/etc/x.properties"
    spaced = Path('/a b/it\'s "x".properties')  # one argument to Spark's launcher (bash-like quoting)
    assert shlex.split(log_options(nowhere, spaced)) == [f"-Dlog4j2.configurationFile={spaced}"]
    assert LOG4J2.is_file()
    for own in ("log4j2.properties", "log4j2.xml", "log4j2-test.yaml"):  # files log4j2 finds by itself
        conf_dir = tmp_path / own
        conf_dir.mkdir()
        (conf_dir / own).write_text("")
        assert log_options({"SPARK_CONF_DIR": str(conf_dir)}) == ""
    home = tmp_path / "spark"
    (home / "conf").mkdir(parents=True)
    assert log_options({"SPARK_HOME": str(home)}).startswith("-Dlog4j2")  # no file there: fleetstream's
    # an administrator's options in spark-defaults.conf, which this setting replaces, come first
    (home / "conf" / "spark-defaults.conf").write_text("spark.driver.defaultJavaOptions = -Dsite=1 -Xss4m\n")
    assert log_options({"SPARK_HOME": str(home)}, Path("/etc/x.properties")) == (
        "-Dsite=1 -Xss4m -Dlog4j2.configurationFile=/etc/x.properties"
    )
    (home / "conf" / "log4j2.properties").write_text("rootLogger.level = info\n")
    assert log_options({"SPARK_HOME": str(home)}) == "-Dsite=1 -Xss4m"
    # in the options Spark's launcher puts before a job's own (the SQL endpoint's) and a user's
    conf = session_conf(Settings(), extra={"spark.driver.extraJavaOptions": "-Dderby.stream.error.file=x"})
    if log_options():
        assert conf["spark.driver.defaultJavaOptions"] == log_options()
    assert conf["spark.driver.extraJavaOptions"] == "-Dderby.stream.error.file=x"
