"""SQL over the lake: the named tables served over HiveServer2's protocol (Spark's Thrift server),
read-only by default, and quick questions from the command line (docs/sql.md)."""
