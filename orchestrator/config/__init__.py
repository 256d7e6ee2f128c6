"""The experiment file: its strict schema (schema), the experiment sections (experiment) and a
user's own Caffe solver file (solverfile). Imports nothing of the orchestrator but contract."""
