"""Running one task: in a locked-down container (Docker) or, where the owner opts in, as a
plain process. Docker's JSON stays inside this package."""
