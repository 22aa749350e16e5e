"""Registry: the verified artifact (weights + contracts + hash), the pyfunc, the thin MLflow tracking layer and the Model Registry client."""
