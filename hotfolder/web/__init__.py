"""The built-in status page, its JSON API and the Prometheus metrics endpoint."""
