"""fleetstream: real-time vehicle telemetry on Kafka, Spark Structured Streaming and Delta Lake.

The command line (`fleetstream --help`) is the main interface; the public Python surface is small:

>>> from fleetstream import Settings
>>> Settings().kafka.topics.sensors
'sensors-sample'
"""

from importlib.metadata import version

from fleetstream.config import Settings
from fleetstream.errors import FleetstreamError

__version__ = version("fleetstream")
__all__ = ["FleetstreamError", "Settings", "__version__"]
