"""gRPC plumbing: every server and channel is built here, so credentials plug in in one place."""
