"""MLflow "models from code" entry point of the relfm pyfunc model (see pipelines.registry).

MLflow copies this file into every logged model and runs it on `mlflow.pyfunc.load_model`, so loading
never unpickles code: the model class comes from the installed relfm package.
"""

import mlflow

from pipelines.registry import RelfmPyfunc

mlflow.models.set_model(RelfmPyfunc())
