"""The workflow file and its task graph: what the CLI checks before it submits and what the
manager reads when it does, in one place below both."""
