"""Entry points users trigger: the relfm CLI, job configs, Airflow DAGs and Databricks bundles."""
