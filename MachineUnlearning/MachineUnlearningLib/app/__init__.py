"""Front ends over the commands: the CLI, the worker process runner, the MRML scene helpers."""
