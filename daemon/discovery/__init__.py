"""Finding peers: mDNS announcements parsed into a peer table with expiry."""
