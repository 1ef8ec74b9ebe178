"""Machine learning on the lake: driving features (computed by the stream), the driving-style
classifier trained with scikit-learn and tracked in MLflow, and the MLflow tracking server."""
