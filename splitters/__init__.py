"""Workflow splitters: one module per workflow type, found by name in a registry.

`api` is the plugin contract (split, merge, estimate; parameters and their checks),
`registry` finds a type by name (built-ins and the `vcnode.splitters` entry points), and
`blocks` holds what the matrix workflows share. Importing this package, `api` or `registry`
loads no numpy: only a splitter that needs it does, on the manager.
"""
