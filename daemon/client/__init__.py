"""What `node status`, `node volunteers` and the other client commands share."""
