"""Dataset ingestion stages: each turns a source into the dataset format of pipeline.datasets."""
