"""`node` (also `vcnode`): the daemon command, the client commands and the demo."""
