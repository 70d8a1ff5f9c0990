"""Running the repository: the pipeline read from dvc.yaml, profiles, notebooks through Papermill, the stages'
command lines, seeds, benchmarks, the headline numbers and the README's generated blocks, data checks."""
