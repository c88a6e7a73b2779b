"""Content-addressed blobs (sha256) on disk, moved between nodes as checksummed gRPC chunks
that resume where a broken transfer ended."""
