"""The data-quality gate: declarative expectation suites over silver and gold (suites.yaml), checked
with pandera's PySpark API and Spark aggregates; results in gold/dq_results and an HTML report
(docs/quality.md)."""
