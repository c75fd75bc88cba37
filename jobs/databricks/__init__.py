"""Entry points of the Databricks job (databricks.yml): one per stage of the nightly job."""
