"""Pipeline stages: build_graph, context, finetune, score, evaluate, publish (Spark, Ray, DeepSpeed, MLflow)."""
