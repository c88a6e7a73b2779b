"""The opt-in web dashboard and Prometheus endpoint (`node daemon --http HOST:PORT`)."""
